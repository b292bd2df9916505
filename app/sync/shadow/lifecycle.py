"""A shadow card's jobs and the one way a live card starts closing.

pending --apply done--> applied --release / expiry / order paid or cancelled--> closed
pending --request gone, worker reverses it--> abandoned
A closed card is then settled by the close job: Shopify card deactivated and read, what it
spent captured from the hold, the rest freed, the PIN erased (`settled_at`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import jobs
from app.db import shadow_cards as rows
from app.db.sql import sql

CLOSE_JOB = "shadow.close"
RECOVER_JOB = "shadow.recover"
RECOVER_AFTER = timedelta(minutes=2)
"""An intent still unresolved this long after it was written is completed or reversed."""


async def request_close(session: AsyncSession, shadow_id: Any, reason: str) -> bool:
    """applied -> `reason` and its close job, in the caller's transaction; False if not live."""
    if not await rows.transition(session, shadow_id, ("applied",), reason):
        return False
    await jobs.enqueue(
        session, CLOSE_JOB, {"shadow_id": str(shadow_id)}, f"shadow:{shadow_id}:close"
    )
    return True


async def arm_recovery(session: AsyncSession, shadow_id: Any, key: str, **extra: str) -> None:
    """Before a hold is asked for: if this request never finishes, the worker takes over."""
    await jobs.enqueue(
        session,
        RECOVER_JOB,
        {"shadow_id": str(shadow_id), **extra},
        key,
        run_at=datetime.now(UTC) + RECOVER_AFTER,
    )


async def disarm_recovery(session: AsyncSession, key: str) -> None:
    await session.execute(
        sql(
            "UPDATE jobs SET state = 'done', finished_at = now() "
            "WHERE idempotency_key = :key AND state = 'queued'"
        ),
        {"key": key},
    )


async def recover_soon(session: AsyncSession, key: str) -> None:
    await session.execute(
        sql(
            "UPDATE jobs SET run_at = now() WHERE idempotency_key = :key "
            "AND state = 'queued' AND run_at > now()"
        ),
        {"key": key},
    )
