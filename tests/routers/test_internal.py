"""The `/internal/*` operator API: admin auth, dead-job retry, card detail without secrets."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import SessionFactory, transaction
from app.db.jobs import enqueue
from app.main import create_app
from app.runtime import Runtime

ADMIN_TOKEN = "test-admin-oua6Df4cIZNy6hMFDLFrsQyJmY2nJnF3"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FULL_VII_NUMBER = "6280001234567890"
FULL_SHOPIFY_CODE = "ABCD1234EFGH5678"

ROUTES = [
    ("GET", "/internal/jobs?state=dead"),
    ("GET", "/internal/jobs?state=queued"),
    ("POST", "/internal/jobs/1/retry"),
    ("GET", "/internal/cards/00000000-0000-4000-8000-000000000001"),
]


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as client:
        yield client


async def _job(sessions: SessionFactory, key: str, state: str = "queued", **extra: Any) -> int:
    async with transaction(sessions) as session:
        job_id = await enqueue(session, "test.kind", {"sealed": "c2VjcmV0"}, key)
        assert job_id is not None
        await session.execute(
            text(
                "UPDATE jobs SET state = :state, attempts = :attempts, last_error = :error "
                "WHERE id = :id"
            ),
            {
                "state": state,
                "attempts": extra.get("attempts", 0),
                "error": extra.get("error"),
                "id": job_id,
            },
        )
        return job_id


def _assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthorized"
    assert ADMIN_TOKEN not in response.text


@pytest.mark.parametrize(("method", "url"), ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        # Differs only in the last character: a prefix check or truncation would let it in.
        {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}X"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}0"},
        {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": ADMIN_TOKEN},
    ],
    ids=["missing", "wrong", "last-char", "longer", "shorter", "basic", "no-scheme"],
)
async def test_every_route_refuses_without_the_admin_token(
    api: httpx.AsyncClient, method: str, url: str, headers: dict[str, str]
) -> None:
    _assert_unauthorized(await api.request(method, url, headers=headers))


async def test_token_is_checked_before_validation(api: httpx.AsyncClient) -> None:
    _assert_unauthorized(await api.post("/internal/jobs/not-a-number/retry"))
    _assert_unauthorized(await api.get("/internal/cards/not-a-uuid"))


async def test_unset_admin_token_refuses_everything(runtime: Runtime) -> None:
    runtime.settings = runtime.settings.model_copy(update={"admin_token": None})
    app = create_app(runtime, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        _assert_unauthorized(await client.get("/internal/jobs", headers=AUTH))
        _assert_unauthorized(await client.get("/internal/jobs", headers={"Authorization": ""}))


async def test_comparison_uses_compare_digest(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hmac

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(left: bytes, right: bytes) -> bool:
        calls.append((left, right))
        return real(left, right)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert (await api.get("/internal/jobs?state=dead", headers=AUTH)).status_code == 200
    assert calls == [(ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode())]


async def test_list_dead_jobs_newest_first_without_payloads(
    api: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    older = await _job(sessions, "k-old", "dead", attempts=8, error="boom: upstream 500")
    await _job(sessions, "k-queued", "queued")
    await _job(sessions, "k-done", "done", attempts=1)
    newer = await _job(sessions, "k-new", "dead", attempts=3, error="rejected")

    response = await api.get("/internal/jobs?state=dead", headers=AUTH)

    assert response.status_code == 200
    jobs = response.json()["jobs"]
    assert [job["id"] for job in jobs] == [newer, older]
    first = jobs[0]
    assert set(first) == {
        "id",
        "kind",
        "state",
        "attempts",
        "maxAttempts",
        "lastError",
        "runAt",
        "idempotencyKey",
        "createdAt",
    }
    assert first["kind"] == "test.kind"
    assert first["state"] == "dead"
    assert first["attempts"] == 3
    assert first["maxAttempts"] == 8
    assert first["lastError"] == "rejected"
    assert first["idempotencyKey"] == "k-new"
    assert first["createdAt"].endswith("Z")
    assert "payload" not in response.text
    assert "c2VjcmV0" not in response.text


async def test_list_jobs_by_state_and_limit(
    api: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    for index in range(105):
        await _job(sessions, f"q-{index}", "queued")
    await _job(sessions, "d-1", "dead")

    queued = (await api.get("/internal/jobs?state=queued", headers=AUTH)).json()["jobs"]
    assert len(queued) == 100
    assert {job["state"] for job in queued} == {"queued"}
    assert queued[0]["idempotencyKey"] == "q-104"
    assert (await api.get("/internal/jobs?state=running", headers=AUTH)).json() == {
        "jobs": [],
        "nextBefore": None,
    }


async def test_list_jobs_rejects_unknown_state(api: httpx.AsyncClient) -> None:
    response = await api.get("/internal/jobs?state=exploded", headers=AUTH)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"


async def test_retry_moves_dead_to_queued_with_fresh_attempts(
    api: httpx.AsyncClient, sessions: SessionFactory, engine: AsyncEngine
) -> None:
    job_id = await _job(sessions, "k-dead", "dead", attempts=8, error="gave up")

    response = await api.post(f"/internal/jobs/{job_id}/retry", headers=AUTH)

    assert response.status_code == 202
    assert response.json() == {"id": job_id, "state": "queued"}
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT state, attempts, finished_at FROM jobs WHERE id = :id"),
                {"id": job_id},
            )
        ).one()
    assert row.state == "queued"
    assert row.attempts == 0
    assert row.finished_at is None
    dead = (await api.get("/internal/jobs?state=dead", headers=AUTH)).json()["jobs"]
    assert dead == []


@pytest.mark.parametrize("state", ["queued", "running", "done"])
async def test_retry_of_a_live_job_is_409(
    api: httpx.AsyncClient, sessions: SessionFactory, state: str
) -> None:
    job_id = await _job(sessions, f"k-{state}", state, attempts=2)
    response = await api.post(f"/internal/jobs/{job_id}/retry", headers=AUTH)
    assert response.status_code == 409
    assert response.json()["code"] == "not_dead"
    assert state in response.json()["detail"]


async def test_retry_twice_is_409_the_second_time(
    api: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    job_id = await _job(sessions, "k-twice", "dead", attempts=8)
    assert (await api.post(f"/internal/jobs/{job_id}/retry", headers=AUTH)).status_code == 202
    assert (await api.post(f"/internal/jobs/{job_id}/retry", headers=AUTH)).status_code == 409


async def test_retry_unknown_job_is_404(api: httpx.AsyncClient) -> None:
    response = await api.post("/internal/jobs/424242/retry", headers=AUTH)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("bad_id", ["abc", "0", "-1", "1.5", str(2**63)])
async def test_retry_bad_id_is_422(api: httpx.AsyncClient, bad_id: str) -> None:
    response = await api.post(f"/internal/jobs/{bad_id}/retry", headers=AUTH)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"


async def _shadow_card(engine: AsyncEngine) -> uuid.UUID:
    """A vii_shadow card with every secret column filled, as it is while a hold is open."""
    card_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO gift_cards (id, kind, currency, state) "
                "VALUES (:id, 'vii_shadow', 'AUD', 'active')"
            ),
            {"id": card_id},
        )
        await connection.execute(
            text(
                "INSERT INTO card_links (card_id, system, external_id, code_last4, "
                "last_seen_balance_minor, last_seen_status, last_seen_at) VALUES "
                "(:id, 'shopify', 'gid://shopify/GiftCard/77', '5678', 5000, 'enabled', "
                "'2026-11-23T10:00:00Z'), "
                "(:id, 'vii', 'vii-ref-7890', '7890', NULL, NULL, NULL)"
            ),
            {"id": card_id},
        )
        await connection.execute(
            text("INSERT INTO sync_base (card_id, balance_minor, version) VALUES (:id, 5000, 3)"),
            {"id": card_id},
        )
        await connection.execute(
            text(
                "INSERT INTO ledger (card_id, system, amount_minor, idempotency_key, cause, "
                "created_at) VALUES "
                "(:id, 'vii', -5000, 'hold:c-1', 'shadow_hold', '2026-11-23T10:00:00Z'), "
                "(:id, 'shopify', 5000, 'issue:c-1', 'shadow_issue', '2026-11-23T10:00:01Z'), "
                "(:id, 'shopify', -1250, 'spend:o-1', 'order_paid', '2026-11-23T10:05:00Z')"
            ),
            {"id": card_id},
        )
        await connection.execute(
            text(
                "INSERT INTO shadow_cards (id, card_id, checkout_token, vii_card_hash, vii_last4, "
                "hold_code, hold_amount_minor, pin_ciphertext, shopify_gift_card_id, "
                "shopify_code_ciphertext, shopify_code_last4, applied_amount_minor, "
                "vii_balance_minor, card_number_ciphertext, captured_amount_minor, state, "
                "expires_at) VALUES (:shadow_id, :id, 'c-1', :hash, '7890', 'HOLD-SECRET-REF', "
                "5000, :pin, 'gid://shopify/GiftCard/77', :code, '5678', 5000, 8000, :number, "
                "0, 'applied', '2026-11-23T10:30:00Z')"
            ),
            {
                "shadow_id": uuid.uuid4(),
                "id": card_id,
                "hash": "f" * 64,
                "pin": b"sealed-pin-bytes",
                "code": FULL_SHOPIFY_CODE.encode(),
                "number": FULL_VII_NUMBER.encode(),
            },
        )
    return card_id


async def test_card_detail_of_a_shadow_card(api: httpx.AsyncClient, engine: AsyncEngine) -> None:
    card_id = await _shadow_card(engine)

    response = await api.get(f"/internal/cards/{card_id}", headers=AUTH)

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(card_id)
    assert (body["kind"], body["currency"], body["state"]) == ("vii_shadow", "AUD", "active")
    assert body["links"] == [
        {
            "system": "shopify",
            "externalId": "gid://shopify/GiftCard/77",
            "codeLast4": "5678",
            "lastSeenBalance": "50.00",
            "lastSeenAt": "2026-11-23T10:00:00Z",
        },
        {
            "system": "vii",
            "externalId": "vii-ref-7890",
            "codeLast4": "7890",
            "lastSeenBalance": None,
            "lastSeenAt": None,
        },
    ]
    assert body["syncBase"] == {"balance": "50.00", "version": 3}
    assert [entry["idempotencyKey"] for entry in body["ledger"]] == [
        "spend:o-1",
        "issue:c-1",
        "hold:c-1",
    ]
    assert body["ledger"][0] == {
        "system": "shopify",
        "amount": "-12.50",
        "cause": "order_paid",
        "idempotencyKey": "spend:o-1",
        "createdAt": "2026-11-23T10:05:00Z",
    }
    assert body["shadow"] == {
        "state": "applied",
        "viiLast4": "7890",
        "appliedAmount": "50.00",
        "holdAmount": "50.00",
        "capturedAmount": "0.00",
        "expiresAt": "2026-11-23T10:30:00Z",
    }


async def test_card_detail_never_shows_secrets(api: httpx.AsyncClient, engine: AsyncEngine) -> None:
    card_id = await _shadow_card(engine)

    response = await api.get(f"/internal/cards/{card_id}", headers=AUTH)

    assert response.status_code == 200
    raw = response.text.lower()
    for forbidden in ("pin", "ciphertext", "hold_code", "holdcode", "hold-secret-ref", "hash"):
        assert forbidden not in raw
    assert FULL_VII_NUMBER not in response.text
    assert FULL_SHOPIFY_CODE.lower() not in raw
    assert "sealed" not in raw


async def test_card_detail_of_an_omni_card_without_shadow_or_base(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    card_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO gift_cards (id, kind, currency) VALUES (:id, 'omni', 'AUD')"),
            {"id": card_id},
        )
    body = (await api.get(f"/internal/cards/{card_id}", headers=AUTH)).json()
    assert body["kind"] == "omni"
    assert body["links"] == []
    assert body["ledger"] == []
    assert body["syncBase"] is None
    assert body["shadow"] is None


async def test_card_detail_ledger_is_capped_at_200(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    card_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO gift_cards (id, kind, currency) VALUES (:id, 'omni', 'AUD')"),
            {"id": card_id},
        )
        await connection.execute(
            text(
                "INSERT INTO ledger (card_id, system, amount_minor, idempotency_key, cause, "
                "created_at) SELECT :id, 'shopify', -n, 'k-' || n, 'spend', "
                "timestamptz '2026-01-01' + n * interval '1 second' "
                "FROM generate_series(1, 250) AS n"
            ),
            {"id": card_id},
        )
    ledger = (await api.get(f"/internal/cards/{card_id}", headers=AUTH)).json()["ledger"]
    assert len(ledger) == 200
    assert ledger[0]["idempotencyKey"] == "k-250"
    assert ledger[0]["amount"] == "-2.50"
    assert ledger[-1]["idempotencyKey"] == "k-51"


async def test_card_detail_unknown_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get(f"/internal/cards/{uuid.uuid4()}", headers=AUTH)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_card_detail_bad_id_is_422(api: httpx.AsyncClient) -> None:
    response = await api.get("/internal/cards/not-a-uuid", headers=AUTH)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"


async def test_openapi_declares_problem_responses(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    expected = {
        ("/internal/jobs", "get"): {"401", "422"},
        ("/internal/jobs/{job_id}/retry", "post"): {"401", "404", "409", "422"},
        ("/internal/cards/{card_id}", "get"): {"401", "404", "422"},
    }
    for (path, method), codes in expected.items():
        assert codes <= set(paths[path][method]["responses"])
