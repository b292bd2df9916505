"""OAuth tokens kept in memory, for tests and benchmarks where nothing outlives the process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.db.tokens import TokenSet, TokenStore


class MemoryTokenStore(TokenStore):
    """Tokens in this process only, with an in-process refresh lock."""

    def __init__(self, tokens: TokenSet | None = None) -> None:
        self.tokens = tokens
        self.saves = 0
        self._lock = asyncio.Lock()

    async def load(self) -> TokenSet | None:
        return self.tokens

    async def save(self, tokens: TokenSet) -> None:
        self.tokens = tokens
        self.saves += 1

    @asynccontextmanager
    async def refresh_lock(self) -> AsyncIterator[None]:
        async with self._lock:
            yield
