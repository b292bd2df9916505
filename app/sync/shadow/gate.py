"""One request at a time per Vii card, a short queue, and nobody waiting on a pooled connection.

Across processes the card is held with a session-level advisory lock on one pooled connection,
kept for the whole apply so that its several short transactions (intent, hold, record) are all
made by the holder. Inside a process, requests for one card queue on an asyncio lock that holds
no connection; at most `max_in_flight` requests per card are admitted at all, the rest are told
the card is busy at once. A request that cannot get the card within `wait_seconds` is told so
too: a burst of bad requests on one card never makes another shopper wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db.locks import lock_key
from app.sync.shadow.errors import CardBusy

MAX_IN_FLIGHT = 2
WAIT_SECONDS = 2.0
RETRY_POLL_SECONDS = 0.05
BUSY_RETRY_AFTER = 2


@dataclass
class _Card:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    admitted: int = 0


@dataclass
class CardGate:
    engine: AsyncEngine
    max_in_flight: int = MAX_IN_FLIGHT
    wait_seconds: float = WAIT_SECONDS
    _cards: dict[str, _Card] = field(default_factory=dict)

    def in_flight(self, vii_hash: str) -> int:
        card = self._cards.get(vii_hash)
        return card.admitted if card is not None else 0

    @asynccontextmanager
    async def hold(
        self, vii_hash: str, *, wait_seconds: float | None = None
    ) -> AsyncIterator[AsyncConnection]:
        """The card, exclusively, with the pooled connection that holds it; else `CardBusy`."""
        card = self._cards.setdefault(vii_hash, _Card())
        if card.admitted >= self.max_in_flight:
            raise _busy()
        card.admitted += 1
        try:
            budget = self.wait_seconds if wait_seconds is None else wait_seconds
            deadline = asyncio.get_running_loop().time() + budget
            try:
                await asyncio.wait_for(card.lock.acquire(), budget)
            except TimeoutError:
                raise _busy() from None
            try:
                async with self._advisory_lock(f"vii:{vii_hash}", deadline) as connection:
                    yield connection
            finally:
                card.lock.release()
        finally:
            card.admitted -= 1
            if card.admitted == 0:
                self._cards.pop(vii_hash, None)

    @asynccontextmanager
    async def _advisory_lock(self, name: str, deadline: float) -> AsyncIterator[AsyncConnection]:
        """Poll for the cross-process lock, giving the connection back between tries."""
        key = lock_key(name)
        loop = asyncio.get_running_loop()
        while True:
            async with self.engine.connect() as connection:
                got = await (await _driver(connection)).fetchval(
                    "SELECT pg_try_advisory_lock($1)", key
                )
                if got:
                    try:
                        yield connection
                    finally:
                        await _unlock(connection, key)
                    return
            if loop.time() >= deadline:
                raise _busy()
            await asyncio.sleep(RETRY_POLL_SECONDS)


async def _driver(connection: AsyncConnection) -> Any:
    """The asyncpg connection underneath: a session lock needs no transaction, so taking and
    giving it back is one round trip each instead of BEGIN, the statement and COMMIT."""
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def _unlock(connection: AsyncConnection, key: int) -> None:
    """Release the session lock; a connection that cannot is dropped (closing frees the lock)."""
    try:
        await connection.rollback()
        await (await _driver(connection)).fetchval("SELECT pg_advisory_unlock($1)", key)
    except BaseException:
        await connection.invalidate()
        raise


def _busy() -> CardBusy:
    return CardBusy(
        "Another request is using this card; try again in a moment.",
        retry_after=BUSY_RETRY_AFTER,
    )
