"""The ASGI application, `app.main:app`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.console import install_console
from app.logging import configure_logging, get_logger
from app.middleware import RequestContextMiddleware
from app.problems import install_problem_handlers
from app.response_headers import ResponseHeadersMiddleware
from app.routers import checkout, demo, health, internal, internal_lists, webhooks
from app.routers.docs import install_docs
from app.routers.operator_auth import AuditMiddleware
from app.runtime import Runtime, build_runtime
from app.settings import load_settings

log = get_logger(__name__)


def create_app(runtime: Runtime | None = None, *, run_worker: bool | None = None) -> FastAPI:
    """Build the app. Given a runtime (tests), the caller owns it; otherwise the lifespan does.

    The worker runs in-process unless `run_worker` is False or GIFTSYNC_NO_WORKER is set, so
    `uvicorn app.main:app` alone is a complete service, as `giftsync serve` is.
    """
    if run_worker is None:
        run_worker = os.environ.get("GIFTSYNC_NO_WORKER", "") == ""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            app.state.runtime = runtime
            yield
            return
        settings = load_settings()
        configure_logging(settings.log_level, json=settings.log_json)
        owned = await build_runtime(settings)
        app.state.runtime = owned
        if run_worker:
            await owned.start_worker()
        log.info(
            "service_started",
            pid=os.getpid(),
            worker=run_worker,
            sandbox=settings.sandbox_enabled,
            console="/console",
            ready="/readyz",
        )
        try:
            yield
        finally:
            await owned.close()

    app = FastAPI(
        title="giftsync",
        version="0.1.0",
        summary="One gift card, spendable in Shopify, Lightspeed and Vii.",
        lifespan=lifespan,
        # Served by app/routers/docs.py from local files: no CDN (issue 17).
        docs_url=None,
        redoc_url=None,
    )
    if runtime is not None:
        app.state.runtime = runtime
    app.add_middleware(AuditMiddleware)
    app.add_middleware(ResponseHeadersMiddleware)
    app.add_middleware(RequestContextMiddleware)
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(webhooks.router)
    app.include_router(checkout.router)
    app.include_router(demo.router)
    # Its GET /internal/jobs (explicit state) replaces internal.py's until that one is deleted.
    app.include_router(internal.router)
    app.include_router(internal_lists.router)
    install_docs(app)
    install_console(app)
    demo.mount_static(app)
    return app


app = create_app()
