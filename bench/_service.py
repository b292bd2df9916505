"""giftsync as the check-balance bench runs it: `uvicorn bench._service:create --factory`.

The production wiring (settings from the environment, the real upstream clients over HTTP, the
same ASGI app), with two bench-only additions: each upstream client's transport is wrapped in
`TimedTransport` and the app in `UpstreamTimingMiddleware`, so every answer carries the time
that request spent waiting on Vii and Shopify. The worker does not run here (a resize enqueues
no job); in production it may run beside the API or apart, as DESIGN 2 allows.

Run in each uvicorn worker process; the environment (set by bench/check_balance.py) names the
database and the simulators, as DATABASE_URL, VII_BASE_URL and the rest would in production.
"""

from __future__ import annotations

import os

import httpx
from starlette.types import ASGIApp

from app.clients.factory import Clients
from app.clients.shopify import ShopifyClient
from app.clients.vii import ViiClient
from app.db.engine import create_engine, session_factory
from app.logging import configure_logging
from app.main import create_app
from app.runtime import Runtime, install_features
from app.settings import load_settings
from app.sync.shadow import ShadowDeps
from app.sync.shadow.gate import CardGate
from bench._timing import TimedTransport, UpstreamTimingMiddleware

POOL_SIZE_ENV = "GIFTSYNC_BENCH_POOL_SIZE"
# The transport the clients build for themselves, with more connections than the bench has
# shoppers: a call never queues for one, so the whole of it is the upstream's (bench/_timing.py).
_CLIENT_LIMITS = httpx.Limits(max_connections=200, keepalive_expiry=5.0)


def _timed() -> TimedTransport:
    return TimedTransport(httpx.AsyncHTTPTransport(limits=_CLIENT_LIMITS))


def create() -> ASGIApp:
    """The uvicorn factory: one runtime per worker process, as `giftsync serve` builds it."""
    settings = load_settings(_env_file=None)
    configure_logging(settings.log_level, json=settings.log_json)
    assert settings.database_url is not None, "the bench always passes DATABASE_URL"
    engine = create_engine(settings.database_url, pool_size=int(os.environ[POOL_SIZE_ENV]))
    sessions = session_factory(engine)
    vii = ViiClient.from_settings(settings, transport=_timed())
    shopify = ShopifyClient.from_settings(settings, transport=_timed())
    runtime = Runtime(
        settings=settings,
        database_url=settings.database_url,
        engine=engine,
        sessions=sessions,
        clients=Clients(shopify=shopify, vii=vii, _all=[shopify, vii]),
    )
    runtime.shadow = ShadowDeps.build(sessions, CardGate(runtime.engine), settings, vii, shopify)
    install_features(runtime)
    return UpstreamTimingMiddleware(create_app(runtime, run_worker=False))
