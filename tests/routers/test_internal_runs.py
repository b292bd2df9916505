"""`POST /internal/reconcile`, `POST /internal/backfill`, `GET /internal/runs/{id}` (DESIGN 3)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import SessionFactory
from app.main import create_app
from app.runtime import Runtime
from app.sync import run_reporter, runs
from app.worker import Worker
from tests.conftest import make_settings

ADMIN_TOKEN = "test-admin-oua6Df4cIZNy6hMFDLFrsQyJmY2nJnF3"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/internal/reconcile", {"dryRun": True}),
    ("POST", "/internal/backfill", {"direction": "both"}),
    ("GET", "/internal/runs/00000000-0000-4000-8000-000000000001", None),
    ("GET", "/internal/cards?last4=1234", None),
]


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as client:
        yield client


def _omni(runtime: Runtime, **settings: Any) -> None:
    """Switch the running app to a POS with the given directions (read per request)."""
    runtime.settings = make_settings(pos_kind="retail", **settings)


async def _counts(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as connection:
        run_count = await connection.scalar(text("SELECT count(*) FROM runs"))
        job_count = await connection.scalar(text("SELECT count(*) FROM jobs"))
    return int(run_count or 0), int(job_count or 0)


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert set(body) >= {"type", "title", "status", "detail", "code"}
    return body


# --- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "url", "body"), ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}X"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
    ],
    ids=["missing", "wrong", "last-char", "basic"],
)
async def test_new_routes_refuse_without_the_admin_token(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    method: str,
    url: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> None:
    response = await api.request(method, url, json=body, headers=headers)
    problem = _problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert ADMIN_TOKEN not in str(problem)
    assert await _counts(engine) == (0, 0)


async def test_token_is_checked_before_validation(api: httpx.AsyncClient) -> None:
    _problem(await api.post("/internal/reconcile", content=b"{not json"), 401, "unauthorized")
    _problem(await api.post("/internal/backfill", json={"direction": "up"}), 401, "unauthorized")
    _problem(await api.get("/internal/runs/not-a-uuid"), 401, "unauthorized")
    _problem(await api.get("/internal/cards"), 401, "unauthorized")


# --- reconcile --------------------------------------------------------------------------------


async def test_reconcile_starts_a_run_with_its_job(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    response = await api.post("/internal/reconcile", json={"dryRun": True}, headers=AUTH)

    assert response.status_code == 202
    run_id = uuid.UUID(response.json()["runId"])
    assert set(response.json()) == {"runId"}
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT r.kind, r.status, r.params, j.kind AS job_kind, j.payload "
                    "FROM runs r JOIN jobs j ON j.idempotency_key = 'run:' || r.id::text"
                )
            )
        ).one()
    assert (row.kind, row.status, row.job_kind) == ("reconcile", "queued", runs.RECONCILE_JOB)
    assert row.payload == {"run_id": str(run_id)}
    assert row.params == {"dry_run": True, "card_ids": None}


async def test_reconcile_of_some_cards(api: httpx.AsyncClient, engine: AsyncEngine) -> None:
    card_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO gift_cards (id, kind, currency) VALUES (:id, 'omni', 'AUD')"),
            {"id": card_id},
        )
    response = await api.post(
        "/internal/reconcile",
        json={"dryRun": False, "cardIds": [str(card_id)], "extra": "ignored"},
        headers=AUTH,
    )
    assert response.status_code == 202
    run = (await api.get(f"/internal/runs/{response.json()['runId']}", headers=AUTH)).json()
    assert run["params"] == {"dryRun": False, "cardIds": [str(card_id)]}


async def test_reconcile_of_unknown_cards_is_422_and_writes_nothing(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    missing = uuid.uuid4()
    response = await api.post(
        "/internal/reconcile", json={"dryRun": True, "cardIds": [str(missing)]}, headers=AUTH
    )
    body = _problem(response, 422, "unknown_cards")
    assert str(missing) in body["detail"]
    assert await _counts(engine) == (0, 0)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"dryRun": "yes"},
        {"dryRun": 1},
        {"dryRun": None},
        {"dryRun": True, "cardIds": []},
        {"dryRun": True, "cardIds": ["not-a-uuid"]},
        {"dryRun": True, "cardIds": "00000000-0000-4000-8000-000000000001"},
        {"dryRun": True, "cardIds": [str(uuid.uuid4()) for _ in range(1001)]},
        [True],
    ],
    ids=[
        "empty",
        "string",
        "number",
        "null",
        "no-cards",
        "bad-uuid",
        "not-a-list",
        "too-many",
        "array",
    ],
)
async def test_reconcile_bad_body_is_422_and_writes_nothing(
    api: httpx.AsyncClient, engine: AsyncEngine, body: Any
) -> None:
    response = await api.post("/internal/reconcile", json=body, headers=AUTH)
    _problem(response, 422, "invalid_request")
    assert await _counts(engine) == (0, 0)


async def test_reconcile_malformed_json_is_422(api: httpx.AsyncClient, engine: AsyncEngine) -> None:
    response = await api.post(
        "/internal/reconcile",
        content=b'{"dryRun": tru',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    _problem(response, 422, "invalid_request")
    assert await _counts(engine) == (0, 0)


async def test_concurrent_starts_make_two_runs_and_two_jobs(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    first, second = await asyncio.gather(
        api.post("/internal/reconcile", json={"dryRun": False}, headers=AUTH),
        api.post("/internal/reconcile", json={"dryRun": False}, headers=AUTH),
    )
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["runId"] != second.json()["runId"]
    assert await _counts(engine) == (2, 2)


# --- backfill ---------------------------------------------------------------------------------


async def test_backfill_without_a_pos_is_409_no_pos(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    response = await api.post("/internal/backfill", json={"direction": "both"}, headers=AUTH)
    _problem(response, 409, "no_pos")
    assert await _counts(engine) == (0, 0)


@pytest.mark.parametrize(
    ("enabled", "direction", "names"),
    [
        ({"create_update_shopify_gift_cards": True}, "to_pos", ["DOWNLOAD_SHOPIFY_GIFT_CARDS"]),
        ({"download_shopify_gift_cards": True}, "to_shopify", ["CREATE_UPDATE_SHOPIFY"]),
        ({}, "both", ["DOWNLOAD_SHOPIFY_GIFT_CARDS", "CREATE_UPDATE_SHOPIFY_GIFT_CARDS"]),
    ],
)
async def test_backfill_of_a_direction_that_is_off_is_409(
    api: httpx.AsyncClient,
    runtime: Runtime,
    engine: AsyncEngine,
    enabled: dict[str, bool],
    direction: str,
    names: list[str],
) -> None:
    _omni(runtime, **enabled)
    response = await api.post("/internal/backfill", json={"direction": direction}, headers=AUTH)
    body = _problem(response, 409, "direction_disabled")
    for name in names:
        assert name in body["detail"]
    assert await _counts(engine) == (0, 0)


async def test_backfill_both_runs_the_enabled_directions(
    api: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    _omni(runtime, download_shopify_gift_cards=True)
    response = await api.post("/internal/backfill", json={"direction": "both"}, headers=AUTH)

    assert response.status_code == 202
    run = (await api.get(f"/internal/runs/{response.json()['runId']}", headers=AUTH)).json()
    assert run["kind"] == "backfill"
    assert run["status"] == "queued"
    assert run["counts"] == {"moved": 0, "already_linked": 0, "skipped": 0}
    assert run["params"] == {
        "direction": "both",
        "directions": ["to_pos"],
        "disabled": ["to_shopify"],
    }
    async with engine.connect() as connection:
        kind = await connection.scalar(text("SELECT kind FROM jobs"))
    assert kind == runs.BACKFILL_JOB


@pytest.mark.parametrize(
    "body", [{}, {"direction": "sideways"}, {"direction": None}, {"direction": ["to_pos"]}]
)
async def test_backfill_bad_body_is_422_and_writes_nothing(
    api: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine, body: dict[str, Any]
) -> None:
    _omni(runtime, download_shopify_gift_cards=True, create_update_shopify_gift_cards=True)
    response = await api.post("/internal/backfill", json=body, headers=AUTH)
    _problem(response, 422, "invalid_request")
    assert await _counts(engine) == (0, 0)


# --- run view ---------------------------------------------------------------------------------


async def test_run_view_of_a_fresh_reconcile(api: httpx.AsyncClient) -> None:
    started = await api.post("/internal/reconcile", json={"dryRun": True}, headers=AUTH)
    run_id = started.json()["runId"]

    response = await api.get(f"/internal/runs/{run_id}", headers=AUTH)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "runId",
        "status",
        "kind",
        "counts",
        "progress",
        "params",
        "error",
        "jobId",
        "createdAt",
        "startedAt",
        "finishedAt",
        "findings",
    }
    assert body["runId"] == run_id
    assert (body["status"], body["kind"]) == ("queued", "reconcile")
    assert body["counts"] == {"checked": 0, "in_sync": 0, "repaired": 0, "findings": 0}
    assert body["params"] == {"dryRun": True, "cardIds": None}
    assert body["progress"] == {}
    assert body["error"] is None
    assert isinstance(body["jobId"], int)
    assert body["createdAt"].endswith("Z")
    assert body["startedAt"] is None and body["finishedAt"] is None
    assert body["findings"] == []


async def test_run_view_with_progress_and_findings(
    api: httpx.AsyncClient, sessions: SessionFactory, engine: AsyncEngine
) -> None:
    card_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO gift_cards (id, kind, currency) VALUES (:id, 'omni', 'AUD')"),
            {"id": card_id},
        )
    run_id = await runs.start_run(sessions, "reconcile", {"dry_run": False, "card_ids": None})
    reporter = await run_reporter.RunReporter.begin(sessions, run_id)
    assert reporter is not None
    reporter.count("checked", 2)
    reporter.count("findings")
    await reporter.finding(
        finding_type="balance_mismatch",
        subject=f"card:{card_id}",
        card_id=card_id,
        evidence={"shopify": "10.00", "lightspeed": "12.50"},
    )
    await reporter.checkpoint(done=2, total=2)
    await reporter.succeed()

    body = (await api.get(f"/internal/runs/{run_id}", headers=AUTH)).json()

    assert body["status"] == "succeeded"
    assert body["counts"] == {"checked": 2, "in_sync": 0, "repaired": 0, "findings": 1}
    assert body["progress"] == {"done": 2, "total": 2}
    assert body["startedAt"].endswith("Z") and body["finishedAt"].endswith("Z")
    [finding] = body["findings"]
    assert isinstance(finding.pop("id"), int)
    assert finding.pop("createdAt").endswith("Z")
    assert finding == {
        "type": "balance_mismatch",
        "subject": f"card:{card_id}",
        "cardId": str(card_id),
        "evidence": {"shopify": "10.00", "lightspeed": "12.50"},
        "resolvedAt": None,
    }


async def test_run_whose_job_died_is_failed_with_the_job_error(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    # No algorithm is registered for the job kind yet: the worker parks the job as dead.
    started = await api.post("/internal/reconcile", json={"dryRun": False}, headers=AUTH)
    run_id = started.json()["runId"]
    worker = Worker(runtime.sessions, {})
    assert await worker.run_once() == 1

    body = (await api.get(f"/internal/runs/{run_id}", headers=AUTH)).json()
    assert body["status"] == "failed"
    assert "no handler" in body["error"]
    dead = (await api.get("/internal/jobs?state=dead", headers=AUTH)).json()["jobs"]
    assert [job["id"] for job in dead] == [body["jobId"]]


async def test_a_started_run_is_picked_up_by_its_handler(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The job carries exactly what an algorithm needs to find its run."""
    seen: list[str] = []

    async def handler(payload: dict[str, Any]) -> None:
        reporter = await run_reporter.RunReporter.begin(runtime.sessions, payload["run_id"])
        assert reporter is not None
        seen.append(str(reporter.run_id))
        reporter.count("checked")
        await reporter.succeed()

    started = await api.post("/internal/reconcile", json={"dryRun": False}, headers=AUTH)
    worker = Worker(runtime.sessions, {runs.RECONCILE_JOB: handler})
    assert await worker.run_once() == 1

    run_id = started.json()["runId"]
    assert seen == [run_id]
    body = (await api.get(f"/internal/runs/{run_id}", headers=AUTH)).json()
    assert (body["status"], body["counts"]["checked"]) == ("succeeded", 1)


async def test_run_unknown_is_404(api: httpx.AsyncClient) -> None:
    _problem(await api.get(f"/internal/runs/{uuid.uuid4()}", headers=AUTH), 404, "not_found")


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "1", "00000000-0000-4000-8000-00000000000"])
async def test_run_malformed_id_is_an_unknown_run(api: httpx.AsyncClient, bad_id: str) -> None:
    _problem(await api.get(f"/internal/runs/{bad_id}", headers=AUTH), 404, "not_found")


async def test_openapi_declares_problem_responses(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    expected = {
        ("/internal/reconcile", "post"): {"202", "401", "422"},
        ("/internal/backfill", "post"): {"202", "401", "409", "422"},
        ("/internal/runs/{run_id}", "get"): {"200", "401", "404"},
        ("/internal/cards", "get"): {"200", "401", "422", "503"},
    }
    for (path, method), codes in expected.items():
        responses = paths[path][method]["responses"]
        assert codes <= set(responses), (path, set(responses))
        for code in codes - {"200", "202"}:
            assert "application/problem+json" in responses[code]["content"]


async def test_starting_a_run_wakes_a_running_worker(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.worker = Worker(runtime.sessions, {})
    runtime.worker._wake.clear()
    await api.post("/internal/reconcile", json={"dryRun": True}, headers=AUTH)
    assert runtime.worker._wake.is_set()
    runtime.worker = None
