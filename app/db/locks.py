"""PostgreSQL advisory locks keyed by a namespaced string, the only cross-process coordinator."""

from __future__ import annotations

import hashlib

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db.sql import sql


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for `name` (advisory locks take bigint)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_for_transaction(session: AsyncSession, name: str) -> None:
    """Block until this transaction holds the lock; released at commit or rollback."""
    await session.execute(sql("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})


async def try_lock_for_connection(connection: AsyncConnection, name: str) -> bool:
    """Take a session-level lock if free; held until `unlock_for_connection` or the connection
    closes (a process that dies frees it). False when another holder has it."""
    acquired = await connection.scalar(
        sql("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(name)}
    )
    return bool(acquired)


async def unlock_for_connection(connection: AsyncConnection, name: str) -> None:
    await connection.execute(sql("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(name)})
