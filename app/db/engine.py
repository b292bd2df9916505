"""The async engine and the one-transaction-per-unit-of-work session helper."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.db.embedded import start_embedded
from app.settings import Settings


def asyncpg_url(url: str) -> str:
    """Accept the usual `postgresql://` spellings and point them at asyncpg."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when set (never starting a server), else the embedded server's URL."""
    if settings.database_url:
        return asyncpg_url(settings.database_url)
    return start_embedded(Path(settings.data_dir))


# A pooled connection unused for this long is pinged before it is handed out again.
PING_AFTER_IDLE_SECONDS = 10.0
_RETURNED_AT = "giftsync_returned_at"


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    engine = create_async_engine(
        asyncpg_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=10,
        # Most recently used first: under light load a few warm connections serve everything
        # and the rest stay idle, where the idle ping below looks at them.
        pool_use_lifo=True,
    )
    _ping_when_idle(engine.sync_engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Pre-ping only connections that sat idle, instead of a round trip on every checkout.

    A connection just returned was alive a moment ago; one idle for a while may have been cut
    by a restart, a failover or a proxy, and is replaced before any statement runs. A server
    lost in between fails the statements in flight (before any upstream call, each flow's
    transaction then rolls back) and SQLAlchemy drops the pool on that disconnect.
    """

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned = record.info.get(_RETURNED_AT)
        if returned is None or time.monotonic() - returned < PING_AFTER_IDLE_SECONDS:
            return  # a new connection (fresh) or one in steady use
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            if engine.dialect.is_disconnect(error, dbapi_connection, None):
                # The pool retries the checkout on a new connection, dropping the old ones.
                raise exc.InvalidatePoolError() from error
            raise


SessionFactory = async_sessionmaker[AsyncSession]


def session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: SessionFactory) -> AsyncIterator[AsyncSession]:
    """Commit on success, roll back on any error; callers flush, never commit."""
    async with sessions() as session, session.begin():
        yield session


@asynccontextmanager
async def autocommit_connection(sessions: SessionFactory) -> AsyncIterator[AsyncConnection]:
    """A pooled connection of its own on which each statement commits by itself.

    For one statement that is atomic alone (no BEGIN and COMMIT round trips), and for work that
    must outlive transactions: session-level advisory locks, temporary tables.
    """
    engine: AsyncEngine = sessions.kw["bind"]
    async with engine.connect() as connection:
        yield await connection.execution_options(isolation_level="AUTOCOMMIT")
