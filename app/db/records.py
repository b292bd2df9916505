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
    run_id: uuid.UUID | str | None = None,
) -> bool:
    """Record something to repair by hand; True when a new finding was opened.

    Without `run_id` an open finding on the same subject is kept as it was. With `run_id` (a
    reconcile or backfill saw it) the open finding is refreshed instead: this run becomes its
    `last_run_id` (and its `first_run_id` if it had none) and its evidence is replaced, so a
    later run can tell what it still sees from what it no longer sees.
    """
    if run_id is None:
        on_conflict = "DO NOTHING"
    else:
        on_conflict = """DO UPDATE SET
                last_run_id = EXCLUDED.last_run_id,
                first_run_id = COALESCE(findings.first_run_id, EXCLUDED.first_run_id),
                card_id = COALESCE(EXCLUDED.card_id, findings.card_id),
                evidence = EXCLUDED.evidence"""
    inserted = await session.scalar(
        text(
            f"""
            INSERT INTO findings (type, subject, card_id, evidence, first_run_id, last_run_id)
            VALUES (:type, :subject, :card, CAST(:evidence AS jsonb), :run, :run)
            ON CONFLICT (type, subject) WHERE resolved_at IS NULL {on_conflict}
            RETURNING xmax = 0
            """  # noqa: S608 -- the only interpolation is one of two fixed clauses above
        ),
        {
            "type": finding_type,
            "subject": subject,
            "card": card_id,
            "evidence": json.dumps(evidence),
            "run": run_id,
        },
    )
    return bool(inserted)
