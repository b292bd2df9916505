"""Queries on `sync_cursors`: how far each poller has read an upstream's changes."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.sql import sql


async def get(session: AsyncSession, name: str) -> datetime | None:
    value = await session.scalar(
        sql("SELECT cursor FROM sync_cursors WHERE name = :n"), {"n": name}
    )
    return datetime.fromisoformat(value) if value else None


async def advance(session: AsyncSession, name: str, at: datetime) -> None:
    """Move the cursor forward only: a slow poller finishing late never moves it back."""
    await session.execute(
        sql(
            """
            INSERT INTO sync_cursors (name, cursor) VALUES (:n, :c)
            ON CONFLICT (name) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()
            WHERE sync_cursors.cursor < EXCLUDED.cursor
            """
        ),
        {"n": name, "c": at.astimezone(UTC).isoformat()},
    )
