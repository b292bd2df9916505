"""Queries on `ledger`: the append-only record of every balance change, one way to write it.

Findings, the other record staff read, are in `app/db/findings.py`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.sql import sql


async def add_ledger_entry(
    session: AsyncSession,
    *,
    card_id: uuid.UUID | str,
    system: str,
    amount_minor: int,
    key: str,
    cause: str,
    detail: dict[str, Any] | None = None,
) -> bool:
    """True when the entry is new; the same idempotency key never writes twice."""
    inserted = await session.scalar(
        sql(
            """
            INSERT INTO ledger (card_id, system, amount_minor, idempotency_key, cause, detail)
            VALUES (:card, :system, :amount, :key, :cause, CAST(:detail AS jsonb))
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id
            """
        ),
        {
            "card": card_id,
            "system": system,
            "amount": amount_minor,
            "key": key,
            "cause": cause,
            "detail": json.dumps(detail or {}),
        },
    )
    return inserted is not None


async def ledger_entry_exists(session: AsyncSession, key: str) -> bool:
    found = await session.scalar(sql("SELECT 1 FROM ledger WHERE idempotency_key = :k"), {"k": key})
    return found is not None


async def recent_for_card(session: AsyncSession, card_id: uuid.UUID, *, limit: int) -> list[Any]:
    """The card's newest entries first: (system, amount_minor, cause, idempotency_key, created_at)."""
    rows = await session.execute(
        sql(
            """
            SELECT system, amount_minor, cause, idempotency_key, created_at FROM ledger
            WHERE card_id = :c ORDER BY created_at DESC, id DESC LIMIT :limit
            """
        ),
        {"c": card_id, "limit": limit},
    )
    return list(rows.all())
