"""Everything a running giftsync holds: settings, database, worker. Built once per process."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import SessionFactory, create_engine, resolve_database_url, session_factory
from app.db.migrate import upgrade_to_head
from app.logging import get_logger
from app.settings import Settings
from app.sync.inbox import TopicHandler
from app.worker import JobHandler, Periodic, Worker

log = get_logger(__name__)

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
    topic_handlers: dict[str, TopicHandler] = field(default_factory=dict)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def start_worker(self) -> Worker:
        self.worker = Worker(self.sessions, self.handlers, self.periodic)
        await self.worker.beat()
        self._tasks.append(asyncio.create_task(self.worker.run(self._stop), name="worker"))
        return self.worker

    async def close(self) -> None:
        self._stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.engine.dispose()


def install_features(runtime: Runtime) -> None:
    """Register every job kind, webhook topic and periodic task on the runtime."""
    from app.sync import inbox

    async def process_webhook(payload: dict[str, Any]) -> None:
        await inbox.process_delivery(
            runtime.sessions, runtime.topic_handlers, int(payload["delivery_id"])
        )

    runtime.handlers[inbox.PROCESS_JOB] = process_webhook


async def build_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    settings = with_sandbox_secrets(settings)
    database_url = await asyncio.to_thread(resolve_database_url, settings)
    engine = create_engine(database_url)
    if migrate:
        await upgrade_to_head(engine, database_url)
    runtime = Runtime(
        settings=settings,
        database_url=database_url,
        engine=engine,
        sessions=session_factory(engine),
    )
    install_features(runtime)
    log.info(
        "runtime_ready",
        database="embedded" if settings.database_url is None else "external",
        sandbox=settings.sandbox_enabled,
    )
    return runtime
