"""PostgreSQL advisory locks keyed by a namespaced string, the only cross-process coordinator."""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for `name` (advisory locks take bigint)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_for_transaction(session: AsyncSession, name: str) -> None:
    """Block until this transaction holds the lock; released at commit or rollback."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})


async def try_lock_for_transaction(session: AsyncSession, name: str) -> bool:
    """Take the lock if free, for singletons such as pollers; False when another holder has it."""
    acquired = await session.scalar(
        text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key(name)}
    )
    return bool(acquired)
