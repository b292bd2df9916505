"""Durable OAuth tokens, and the cross-process lock that keeps a rotating refresh token single-use.

Lightspeed rotates both tokens on every refresh and kills the old refresh token, so two replicas
refreshing at once would lock one of them (and, if the loser saved last, every process) out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.locks import lock_for_transaction
from app.db.models import OAuthToken


@dataclass
class TokenSet:
    access_token: str | None = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime | None


class TokenStore(Protocol):
    async def load(self) -> TokenSet | None: ...

    async def save(self, tokens: TokenSet) -> None: ...


@runtime_checkable
class SupportsRefreshLock(Protocol):
    """A store that can make one process at a time spend the refresh token."""

    def refresh_lock(self) -> AbstractAsyncContextManager[None]: ...


class DbTokenStore(TokenStore):
    """One `oauth_tokens` row per provider; every save is committed before it returns."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], provider: str = "lightspeed"
    ) -> None:
        self._sessions = sessions
        self._provider = provider

    async def load(self) -> TokenSet | None:
        async with self._sessions() as session:
            row = await session.scalar(
                select(OAuthToken).where(OAuthToken.provider == self._provider)
            )
            if row is None:
                return None
            return TokenSet(
                access_token=row.access_token,
                refresh_token=row.refresh_token,
                expires_at=row.expires_at,
            )

    async def save(self, tokens: TokenSet) -> None:
        statement = insert(OAuthToken).values(
            provider=self._provider,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            expires_at=tokens.expires_at,
        )
        statement = statement.on_conflict_do_update(
            index_elements=[OAuthToken.provider],
            set_={
                "access_token": statement.excluded.access_token,
                "refresh_token": statement.excluded.refresh_token,
                "expires_at": statement.excluded.expires_at,
                "updated_at": func.now(),
            },
        )
        async with self._sessions() as session, session.begin():
            await session.execute(statement)

    @asynccontextmanager
    async def refresh_lock(self) -> AsyncIterator[None]:
        """Hold a transaction-scoped advisory lock for the whole refresh.

        Transaction-scoped rather than session-scoped so a crash or cancellation can never
        return a pooled connection that still holds the lock. Loads and saves inside run in
        their own transactions, so the save is durable before the lock is let go.
        """
        async with self._sessions() as session, session.begin():
            await lock_for_transaction(session, f"oauth-refresh:{self._provider}")
            yield


def refresh_lock(store: TokenStore) -> AbstractAsyncContextManager[None]:
    """The store's cross-process refresh lock, or no lock for a store without one."""
    if isinstance(store, SupportsRefreshLock):
        return store.refresh_lock()
    return _no_lock()


@asynccontextmanager
async def _no_lock() -> AsyncIterator[None]:
    yield
