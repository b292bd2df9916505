"""`GET /internal/runs`, `/internal/findings`, `/internal/jobs` (one state or all) and the finding
actions `resolve` and `retry` (issue 17)."""

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
from app.sync import runs

ADMIN_TOKEN = "test-admin-oua6Df4cIZNy6hMFDLFrsQyJmY2nJnF3"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as client:
        yield client


async def _card(engine: AsyncEngine) -> uuid.UUID:
    card_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO gift_cards (id, kind, currency) VALUES (:id, 'omni', 'AUD')"),
            {"id": card_id},
        )
    return card_id


async def _finding(
    engine: AsyncEngine, finding_type: str, subject: str, card_id: uuid.UUID | None = None
) -> int:
    async with engine.begin() as connection:
        found = await connection.scalar(
            text(
                "INSERT INTO findings (type, subject, card_id, evidence) "
                'VALUES (:t, :s, :c, \'{"shopify": "10.00"}\') RETURNING id'
            ),
            {"t": finding_type, "s": subject, "c": card_id},
        )
    return int(found)


def _problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/internal/runs"),
        ("GET", "/internal/findings"),
        ("GET", "/internal/jobs?state=dead"),
        ("POST", "/internal/findings/1/resolve"),
        ("POST", "/internal/findings/1/retry"),
    ],
)
async def test_lists_need_an_operator(api: httpx.AsyncClient, method: str, url: str) -> None:
    _problem(await api.request(method, url, json={"note": "x"}), 401, "unauthorized")
    wrong = {"Authorization": "Bearer wrong"}
    _problem(await api.request(method, url, json={"note": "x"}, headers=wrong), 401, "unauthorized")


async def test_runs_newest_first_by_kind_and_status_in_pages(
    api: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    started = [await runs.start_reconcile(runtime.sessions, dry_run=True) for _ in range(3)]
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE runs SET status = 'succeeded', counts = counts || '{\"checked\": 7}', "
                'progress = \'{"cards_done": 7, "cards_total": 7}\' WHERE id = :id'
            ),
            {"id": started[0]},
        )
    first = (await api.get("/internal/runs?limit=2", headers=AUTH)).json()
    assert [run["runId"] for run in first["runs"]] == [str(started[2]), str(started[1])]
    assert first["nextBefore"] == str(started[1])
    second = (
        await api.get(f"/internal/runs?limit=2&before={first['nextBefore']}", headers=AUTH)
    ).json()
    assert [run["runId"] for run in second["runs"]] == [str(started[0])]
    assert second["nextBefore"] is None
    done = second["runs"][0]
    assert done["status"] == "succeeded"
    assert done["kind"] == "reconcile"
    assert done["counts"] == {"checked": 7, "in_sync": 0, "repaired": 0, "findings": 0}
    assert done["params"] == {"dryRun": True, "cardIds": None}
    assert (done["done"], done["total"]) == (7, 7)
    assert done["createdAt"].endswith("Z")

    succeeded = (await api.get("/internal/runs?status=succeeded", headers=AUTH)).json()
    assert [run["runId"] for run in succeeded["runs"]] == [str(started[0])]
    assert (await api.get("/internal/runs?kind=backfill", headers=AUTH)).json() == {
        "runs": [],
        "nextBefore": None,
    }
    _problem(await api.get("/internal/runs?kind=sweep", headers=AUTH), 422, "invalid_request")
    _problem(await api.get("/internal/runs?limit=0", headers=AUTH), 422, "invalid_request")


async def test_findings_by_type_state_and_card_in_pages(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    card = await _card(engine)
    ids = [
        await _finding(engine, "missing_link", "shopify:1", card),
        await _finding(engine, "status_conflict", "card:2"),
        await _finding(engine, "missing_link", "shopify:3"),
    ]
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE findings SET resolved_at = now() WHERE id = :id"), {"id": ids[1]}
        )

    every = (await api.get("/internal/findings", headers=AUTH)).json()
    assert [f["id"] for f in every["findings"]] == [ids[2], ids[1], ids[0]]
    assert [f["state"] for f in every["findings"]] == ["open", "resolved", "open"]
    assert every["findings"][2]["cardId"] == str(card)
    assert every["findings"][2]["evidence"] == {"shopify": "10.00"}
    assert every["nextBefore"] is None

    def listed(query: str) -> Any:
        return api.get(f"/internal/findings?{query}", headers=AUTH)

    assert [f["id"] for f in (await listed("state=open")).json()["findings"]] == [ids[2], ids[0]]
    assert [f["id"] for f in (await listed("state=resolved")).json()["findings"]] == [ids[1]]
    assert [f["id"] for f in (await listed("type=missing_link&state=open")).json()["findings"]] == [
        ids[2],
        ids[0],
    ]
    assert [f["id"] for f in (await listed(f"cardId={card}")).json()["findings"]] == [ids[0]]
    page = (await listed("limit=1")).json()
    assert page["nextBefore"] == ids[2]
    assert [f["id"] for f in (await listed(f"limit=1&before={ids[2]}")).json()["findings"]] == [
        ids[1]
    ]
    _problem(await listed("state=closed"), 422, "invalid_request")
    _problem(await listed("type=DROP%20TABLE"), 422, "invalid_request")


async def test_jobs_list_every_state_or_one_and_page(
    api: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    ids = []
    async with transaction(sessions) as session:
        for index in range(3):
            job_id = await enqueue(session, "test.kind", {"sealed": "c2VjcmV0"}, f"k-{index}")
            assert job_id is not None
            ids.append(job_id)
        await session.execute(text("UPDATE jobs SET state = 'done' WHERE id = :id"), {"id": ids[0]})

    every = (await api.get("/internal/jobs", headers=AUTH)).json()
    assert [(job["id"], job["state"]) for job in every["jobs"]] == [
        (ids[2], "queued"),
        (ids[1], "queued"),
        (ids[0], "done"),
    ]
    _problem(await api.get("/internal/jobs?state=lost", headers=AUTH), 422, "invalid_request")
    queued = (await api.get("/internal/jobs?state=queued&limit=1", headers=AUTH)).json()
    assert [job["id"] for job in queued["jobs"]] == [ids[2]]
    assert queued["nextBefore"] == ids[2]
    rest = (await api.get(f"/internal/jobs?state=queued&before={ids[2]}", headers=AUTH)).json()
    assert [job["id"] for job in rest["jobs"]] == [ids[1]]
    done = (await api.get("/internal/jobs?state=done", headers=AUTH)).json()
    assert [job["id"] for job in done["jobs"]] == [ids[0]]
    assert (await api.get("/internal/jobs?state=running", headers=AUTH)).json() == {
        "jobs": [],
        "nextBefore": None,
    }
    assert "c2VjcmV0" not in str(queued) + str(done)


async def test_resolve_a_finding_with_a_note_is_audited(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    finding = await _finding(engine, "refund_needs_staff", "refund:1")
    response = await api.post(
        f"/internal/findings/{finding}/resolve",
        json={"note": "refunded by hand in Vii"},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "resolved"
    assert body["resolvedBy"] == "admin"
    assert body["resolutionNote"] == "refunded by hand in Vii"
    again = await api.post(
        f"/internal/findings/{finding}/resolve", json={"note": "twice"}, headers=AUTH
    )
    _problem(again, 409, "already_resolved")
    _problem(
        await api.post("/internal/findings/999/resolve", json={"note": "x"}, headers=AUTH),
        404,
        "not_found",
    )
    _problem(
        await api.post(f"/internal/findings/{finding}/resolve", json={"note": ""}, headers=AUTH),
        422,
        "invalid_request",
    )
    async with engine.connect() as connection:
        audited = (
            await connection.execute(text("SELECT operator, action, status FROM audit_log"))
        ).all()
    assert [tuple(row) for row in audited] == [
        ("admin", f"POST /internal/findings/{finding}/resolve", 200),
        ("admin", f"POST /internal/findings/{finding}/resolve", 409),
        ("admin", "POST /internal/findings/999/resolve", 404),
        ("admin", f"POST /internal/findings/{finding}/resolve", 422),
    ]


async def test_retry_reconciles_the_findings_card(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    card = await _card(engine)
    finding = await _finding(engine, "missing_link", "shopify:9", card)
    response = await api.post(f"/internal/findings/{finding}/retry", headers=AUTH)
    assert response.status_code == 202, response.text
    run = (await api.get(f"/internal/runs/{response.json()['runId']}", headers=AUTH)).json()
    assert run["kind"] == "reconcile"
    assert run["params"] == {"dryRun": False, "cardIds": [str(card)]}
    dry = await api.post(f"/internal/findings/{finding}/retry", json={"dryRun": True}, headers=AUTH)
    assert dry.status_code == 202
    run = (await api.get(f"/internal/runs/{dry.json()['runId']}", headers=AUTH)).json()
    assert run["params"]["dryRun"] is True

    cardless = await _finding(engine, "unusable_serial", "pos:1")
    _problem(await api.post(f"/internal/findings/{cardless}/retry", headers=AUTH), 409, "no_card")
    _problem(await api.post("/internal/findings/404/retry", headers=AUTH), 404, "not_found")


async def test_every_list_is_in_openapi_with_problem_answers(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    for path, method in [
        ("/internal/runs", "get"),
        ("/internal/findings", "get"),
        ("/internal/jobs", "get"),
        ("/internal/findings/{finding_id}/resolve", "post"),
        ("/internal/findings/{finding_id}/retry", "post"),
    ]:
        answers = paths[path][method]["responses"]
        assert {"401", "422", "429"} <= set(answers), path
        assert "application/problem+json" in answers["401"]["content"]
    state = next(p for p in paths["/internal/jobs"]["get"]["parameters"] if p["name"] == "state")
    assert state.get("required", False) is False
    assert set(state["schema"]["anyOf"][0]["enum"]) == {"queued", "running", "done", "dead"}
    assert not any(path.startswith("/console") for path in paths)
