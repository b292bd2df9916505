from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.migrate import head_revision
from app.main import create_app
from app.runtime import Runtime
from app.worker import Worker

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


def _assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    assert set(body) >= PROBLEM_KEYS
    assert body["status"] == status and body["code"] == code
    return body


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert len(response.headers["x-request-id"]) >= 8


async def test_readyz_is_503_without_a_worker_heartbeat_and_names_the_check(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["worker_heartbeat"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["migrations"]["ok"] is True
    assert body["checks"]["upstreams"]["shopify"]["mode"] == "simulated"
    assert body["checks"]["sync_directions"]["pos_to_shopify"]["state"] == "off"


async def test_readyz_is_200_with_a_fresh_heartbeat_and_503_when_it_goes_stale(
    client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    worker = Worker(runtime.sessions, {})
    await worker.beat()
    response = await client.get("/readyz")
    assert response.status_code == 200, response.json()
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE worker_heartbeats SET beat_at = now() - interval '10 minutes' WHERE worker_id = :w"
            ),
            {"w": worker.worker_id},
        )
    assert (await client.get("/readyz")).status_code == 503


async def test_readyz_reports_a_migration_behind_head(
    client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    await runtime.start_worker()
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    try:
        body = (await client.get("/readyz")).json()
        assert body["status"] == "not_ready"
        assert body["checks"]["migrations"] == {
            "ok": False,
            "severity": "error",
            "current": "0000",
            "head": head_revision(runtime.database_url),
        }
    finally:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE alembic_version SET version_num = :v"),
                {"v": head_revision(runtime.database_url)},
            )


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert (
        'giftsync_http_requests_total{method="GET",route="/healthz",status="200"}' in response.text
    )


async def test_unknown_route_and_wrong_method_are_problems(client: httpx.AsyncClient) -> None:
    _assert_problem(await client.get("/no/such/thing"), 404, "not_found")
    _assert_problem(await client.delete("/healthz"), 405, "method_not_allowed")


class _Body(BaseModel):
    amount: int


@pytest.fixture
async def probe_client(runtime: Runtime) -> httpx.AsyncClient:
    app: FastAPI = create_app(runtime, run_worker=False)

    @app.post("/probe")
    async def probe(body: _Body) -> dict[str, int]:
        return {"amount": body.amount}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("database password is hunter2")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://giftsync.test")


async def test_validation_errors_are_problems_that_name_the_field(
    probe_client: httpx.AsyncClient,
) -> None:
    body = _assert_problem(
        await probe_client.post("/probe", json={"amount": "6280001234567890x"}),
        422,
        "invalid_request",
    )
    assert "amount" in str(body["detail"])
    assert "6280001234567890" not in str(body)
    _assert_problem(await probe_client.post("/probe", content=b"{not json"), 422, "invalid_request")


async def test_unexpected_errors_are_500_problems_without_internals(
    probe_client: httpx.AsyncClient,
) -> None:
    body = _assert_problem(await probe_client.get("/boom"), 500, "internal_error")
    assert "hunter2" not in str(body) and "RuntimeError" not in str(body)


async def test_readyz_shows_configuration_warnings_without_failing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await runtime.start_worker()
    runtime.settings = runtime.settings.model_copy(
        update={"onsite_verify_tls": False, "sandbox": False}
    )
    answer = await client.get("/readyz")
    body = answer.json()
    warnings = body["checks"]["configuration"]
    assert warnings["severity"] == "warning" and warnings["ok"] is False
    assert any("ONSITE_VERIFY_TLS" in line for line in warnings["warnings"])
    # Only errors decide: here the upstreams (no Shopify outside the sandbox), never the warning.
    failing = {k for k, c in body["checks"].items() if not c["ok"] and c["severity"] == "error"}
    assert failing == {"upstreams"} and answer.status_code == 503
