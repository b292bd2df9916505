"""Durable OAuth tokens, and the cross-process lock that keeps a rotating refresh token single-use.

Lightspeed rotates both tokens on every refresh and kills the old refresh token, so two replicas
refreshing at once would lock one of them (and, if the loser saved last, every process) out.
Shopify's client credentials tokens live here too (provider `shopify`, no refresh token), so
replicas share one token and renew it once.

At rest every token is sealed with `TokenSealer` (AES-GCM under a key derived from
PIN_ENCRYPTION_KEY), bound to its provider and column. A row written before sealing is read once
as plain text and sealed again at once, so no plain token outlives its first read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.crypto import TokenSealer, is_sealed
from app.db.locks import lock_for_transaction
from app.db.models import OAuthToken


@dataclass
class TokenSet:
    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    """None for a grant without refresh tokens (Shopify's client credentials)."""
    expires_at: datetime | None


class TokenStore(Protocol):
    async def load(self) -> TokenSet | None: ...

    async def save(self, tokens: TokenSet) -> None: ...


@runtime_checkable
class SupportsRefreshLock(Protocol):
    """A store that can make one process at a time spend the refresh token."""

    def refresh_lock(self) -> AbstractAsyncContextManager[None]: ...


class DbTokenStore(TokenStore):
    """One `oauth_tokens` row per provider; every save is committed before it returns.

    With a `sealer` (always, in a running giftsync) tokens are stored sealed; without one they
    are stored as given, which only tests of the plain-row upgrade do.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        provider: str = "lightspeed",
        *,
        sealer: TokenSealer | None = None,
    ) -> None:
        self._sessions = sessions
        self._provider = provider
        self._sealer = sealer

    def _context(self, column: str) -> str:
        return f"{self._provider}:{column}"

    def _seal(self, value: str | None, column: str) -> str | None:
        if value is None or self._sealer is None:
            return value
        return self._sealer.seal(value, self._context(column))

    def _open(self, stored: str | None, column: str) -> str | None:
        if stored is None or not is_sealed(stored):
            return stored
        if self._sealer is None:
            raise ValueError(f"{self._provider} tokens are sealed: PIN_ENCRYPTION_KEY is needed")
        return self._sealer.open(stored, self._context(column))

    async def load(self) -> TokenSet | None:
        async with self._sessions() as session:
            row = await session.scalar(
                select(OAuthToken).where(OAuthToken.provider == self._provider)
            )
            if row is None:
                return None
            stored_access, stored_refresh = row.access_token, row.refresh_token
            tokens = TokenSet(
                access_token=self._open(stored_access, "access_token"),
                refresh_token=self._open(stored_refresh, "refresh_token"),
                expires_at=row.expires_at,
            )
        if self._sealer is not None and any(
            value is not None and not is_sealed(value) for value in (stored_access, stored_refresh)
        ):
            await self._reseal(stored_access, stored_refresh, tokens)
        return tokens

    async def _reseal(
        self, stored_access: str | None, stored_refresh: str | None, tokens: TokenSet
    ) -> None:
        """Seal a row written before sealing, unless someone saved a new one meanwhile."""
        statement = (
            update(OAuthToken)
            .where(
                OAuthToken.provider == self._provider,
                OAuthToken.access_token.is_not_distinct_from(stored_access),
                OAuthToken.refresh_token.is_not_distinct_from(stored_refresh),
            )
            .values(
                access_token=self._seal(tokens.access_token, "access_token"),
                refresh_token=self._seal(tokens.refresh_token, "refresh_token"),
            )
        )
        async with self._sessions() as session, session.begin():
            await session.execute(statement)

    async def save(self, tokens: TokenSet) -> None:
        statement = insert(OAuthToken).values(
            provider=self._provider,
            access_token=self._seal(tokens.access_token, "access_token"),
            refresh_token=self._seal(tokens.refresh_token, "refresh_token"),
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
