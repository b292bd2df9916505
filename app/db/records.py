"""The append-only ledger and the findings list: one way to write each, for every flow."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


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
        text(
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
    found = await session.scalar(
        text("SELECT 1 FROM ledger WHERE idempotency_key = :k"), {"k": key}
    )
    return found is not None


async def open_finding(
    session: AsyncSession,
    *,
    finding_type: str,
    subject: str,
    card_id: uuid.UUID | str | None,
    evidence: dict[str, Any],
) -> None:
    """Record something to repair by hand; an open finding on the same subject is kept."""
    await session.execute(
        text(
            """
            INSERT INTO findings (type, subject, card_id, evidence)
            VALUES (:type, :subject, :card, CAST(:evidence AS jsonb))
            ON CONFLICT (type, subject) WHERE resolved_at IS NULL DO NOTHING
            """
        ),
        {
            "type": finding_type,
            "subject": subject,
            "card": card_id,
            "evidence": json.dumps(evidence),
        },
    )
