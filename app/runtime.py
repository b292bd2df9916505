"""Everything a running giftsync holds: settings, database, worker. Built once per process."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from app import wiring
from app.alerts import Alerts
from app.clients.factory import Clients, build_clients, token_store
from app.clients.shopify import ShopifyClient
from app.clients.shopify.health import ShopifyHealth
from app.db.engine import SessionFactory, create_engine, resolve_database_url, session_factory
from app.db.migrate import upgrade_to_head
from app.db.tokens import TokenSet
from app.logging import get_logger
from app.merchant_settings import apply_stored, keep_fresh
from app.sandbox.runner import (
    Sandbox,
    point_settings_at,
    sandbox_defaults,
    seed_all,
    start_sandbox,
)
from app.settings import Settings
from app.sync import shadow
from app.sync.backfill import Backfill
from app.sync.inbox import Inbox, TopicHandler
from app.sync.omni import OmniSync
from app.sync.omni.triggers import OmniPollers
from app.sync.reconcile import Reconciler
from app.sync.shadow.gate import CardGate
from app.worker import JobHandler, Periodic, Worker

log = get_logger(__name__)

SANDBOX_STATE = "sandbox-simulators.pickle"
SANDBOX_TOUR = (
    "what to try (http://127.0.0.1:8000 unless --port):",
    "  /console  sign in with admin_token from .data/sandbox-secrets.json: overview, findings,",
    "            runs (start a backfill to move the demo cards both ways), cards, settings",
    "  /demo/checkout  a Vii card at checkout (6280002345678901 / 2345)",
    "  /readyz  every check, with the simulated POS set-up read back",
)
_SANDBOX_SECRETS = ("admin_token", "card_hash_key", "pin_encryption_key", "shopify_api_secret")


def with_sandbox_secrets(settings: Settings) -> Settings:
    """In sandbox mode, fill missing secrets from `.data/sandbox-secrets.json`, made once.

    Kept on disk (mode 0600) so encrypted PINs and card hashes stay readable across restarts;
    never printed: the operator reads the admin token from the file.
    """
    missing = [name for name in _SANDBOX_SECRETS if getattr(settings, name) is None]
    if not settings.sandbox_enabled or not missing:
        return settings
    path = Path(settings.data_dir) / "sandbox-secrets.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    for name in _SANDBOX_SECRETS:
        stored.setdefault(name, secrets.token_hex(32))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=2))
    os.chmod(path, 0o600)
    return settings.model_copy(update={name: SecretStr(stored[name]) for name in missing})


@dataclass
class Runtime:
    settings: Settings
    database_url: str
    engine: AsyncEngine
    sessions: SessionFactory
    handlers: dict[str, JobHandler] = field(default_factory=dict)
    periodic: list[Periodic] = field(default_factory=list)
    worker: Worker | None = None
    topic_handlers: dict[str, tuple[TopicHandler, ...]] = field(default_factory=dict)
    # The flows the tables of app/wiring.py name; None when not configured here.
    shadow: shadow.ShadowDeps | None = None
    omni: OmniSync | None = None
    pollers: OmniPollers | None = None
    reconciler: Reconciler | None = None
    backfill: Backfill | None = None
    inbox: Inbox | None = None
    alerts: Alerts | None = None
    clients: Clients | None = None
    shopify_health: ShopifyHealth | None = None
    sandbox: Sandbox | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _background: list[asyncio.Task[Any]] = field(default_factory=list)
    """Loops that end only when cancelled (the settings refresher)."""

    def rebind(self) -> None:
        """Point every topic, job kind and schedule at the flows now held (app/wiring.py)."""
        self.topic_handlers = wiring.topic_handlers(self)
        self.inbox = Inbox(self.sessions, self.topic_handlers)
        self.handlers = wiring.job_handlers(self)
        self.periodic = wiring.schedules(self, self.settings)

    async def start_worker(self) -> Worker:
        self.worker = Worker(self.sessions, self.handlers, self.periodic)
        await self.worker.beat()
        self._tasks.append(asyncio.create_task(self.worker.run(self._stop), name="worker"))
        return self.worker

    async def close(self) -> None:
        self._stop.set()
        for task in self._background:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.clients is not None:
            await self.clients.aclose()
        if self.sandbox is not None:
            await self.sandbox.stop()
        await self.engine.dispose()


def install_features(runtime: Runtime) -> None:
    """Build the flows the configured upstreams allow, then bind the wiring tables to them."""
    shopify = _shopify_of(runtime)
    omni = runtime.omni
    runtime.pollers = OmniPollers(runtime.sessions, omni, omni.shopify) if omni else None
    runtime.reconciler = (
        Reconciler(runtime.sessions, runtime.settings, omni, shopify) if shopify else None
    )
    runtime.backfill = (
        Backfill(runtime.sessions, runtime.settings, omni, shopify) if omni and shopify else None
    )
    runtime.alerts = (
        Alerts(runtime.sessions, runtime.settings) if runtime.settings.alert_webhook_url else None
    )
    runtime.rebind()


def _shopify_of(runtime: Runtime) -> ShopifyClient | None:
    """The one Shopify client of this process (tests wire flows without `clients`)."""
    if runtime.clients is not None and runtime.clients.shopify is not None:
        return runtime.clients.shopify
    if runtime.omni is not None:
        return runtime.omni.shopify
    return runtime.shadow.shopify if runtime.shadow is not None else None


def assemble(
    settings: Settings,
    database_url: str,
    engine: AsyncEngine,
    sessions: SessionFactory,
    clients: Clients,
    sandbox: Sandbox | None = None,
) -> Runtime:
    """The runtime every process and every test uses, around the given upstream clients."""
    runtime = Runtime(
        settings=settings,
        database_url=database_url,
        engine=engine,
        sessions=sessions,
        clients=clients,
        sandbox=sandbox,
    )
    if clients.shopify is not None:
        runtime.shopify_health = ShopifyHealth.for_settings(clients.shopify, settings)
    if clients.vii is not None and clients.shopify is not None:
        runtime.shadow = shadow.ShadowDeps.build(
            sessions, CardGate(engine), settings, clients.vii, clients.shopify
        )
    if clients.shopify is not None:
        from app.sync.pos.factory import build_pos

        pos = build_pos(settings, clients, sessions)
        if pos is not None:
            runtime.omni = OmniSync(sessions, settings, clients.shopify, pos)
    install_features(runtime)
    return runtime


async def build_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    settings = with_sandbox_secrets(settings)
    database_url = await asyncio.to_thread(resolve_database_url, settings)
    engine = create_engine(database_url)
    if migrate:
        await upgrade_to_head(engine, database_url)
    sandbox = None
    if settings.sandbox_enabled:
        settings = sandbox_defaults(settings)
        # Beside the embedded database only: its links to simulator cards must survive a
        # restart together with the cards (an external database is not ours to pair with).
        state = None if settings.database_url else Path(settings.data_dir) / SANDBOX_STATE
        sandbox = await start_sandbox(settings, state_path=state)
        # Demo data (simulator cards and PINs) for the person at the terminal, not the log.
        demo = seed_all(sandbox) if not sandbox.restored else ["(simulators restored)"]
        print("\n".join(["sandbox demo data:", *demo, *SANDBOX_TOUR]), file=sys.stderr)
        settings = point_settings_at(settings, sandbox)
    sessions = session_factory(engine)
    if sandbox is not None and settings.lightspeed_refresh_token is not None:
        # A fresh simulator knows only the refresh token it just issued.
        await token_store(settings, sessions, "lightspeed").save(
            TokenSet(None, settings.lightspeed_refresh_token.get_secret_value(), None)
        )
    runtime = assemble(
        settings, database_url, engine, sessions, build_clients(settings, sessions), sandbox
    )
    # Settings saved in the console outrank the environment, here and in every process.
    await apply_stored(runtime, sessions)
    runtime._background.append(
        asyncio.create_task(
            keep_fresh(runtime, sessions, runtime.settings.poll_interval), name="settings"
        )
    )
    if sandbox is not None and sandbox.state_path is not None:
        runtime._tasks.append(
            asyncio.create_task(sandbox.keep_saving(runtime._stop), name="sandbox-state")
        )
    log.info(
        "runtime_ready",
        database="embedded" if settings.database_url is None else "external",
        sandbox=settings.sandbox_enabled,
    )
    return runtime
