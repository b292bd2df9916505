"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.readiness import readiness
from app.sync.pos.setup import pos_setup_checks

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "At least one check failed; the body names it."}},
)
async def readyz(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    pos_client = runtime.clients.pos if runtime.clients is not None else None

    async def upstream_checks() -> dict[str, Any]:
        """Read back from the upstreams themselves (each provider caches about a minute)."""
        checks = dict(await pos_setup_checks(runtime.settings, pos_client))
        if runtime.shopify_health is not None:
            checks.update(await runtime.shopify_health.checks())
        return checks

    report: dict[str, Any] = await readiness(runtime, extra=upstream_checks)
    return JSONResponse(report, status_code=200 if report["status"] == "ready" else 503)


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
