"""The async engine and the one-transaction-per-unit-of-work session helper."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.engine import make_url
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


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    # pool_pre_ping: a connection cut by a restart, a failover or a proxy is replaced before
    # any statement runs on it (one cheap round trip per checkout from the pool).
    return create_async_engine(
        asyncpg_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=10,
        pool_pre_ping=True,
    )


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
