"""Queries on `worker_heartbeats`: which workers are alive (readiness and operators read it)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db.sql import sql


async def beat(session: AsyncSession, worker_id: str) -> None:
    await session.execute(
        sql(
            """
            INSERT INTO worker_heartbeats (worker_id, started_at, beat_at)
            VALUES (:w, now(), now())
            ON CONFLICT (worker_id) DO UPDATE SET beat_at = now()
            """
        ),
        {"w": worker_id},
    )


async def retire(session: AsyncSession, worker_id: str) -> None:
    await session.execute(
        sql("DELETE FROM worker_heartbeats WHERE worker_id = :w"), {"w": worker_id}
    )


async def seconds_since_newest(connection: AsyncConnection) -> float | None:
    """How long ago the freshest worker beat; None when no worker ever has."""
    age = await connection.scalar(
        sql("SELECT EXTRACT(EPOCH FROM now() - max(beat_at)) FROM worker_heartbeats")
    )
    return None if age is None else float(age)
