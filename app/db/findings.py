"""Queries on `findings`: what staff must look at, opened by any flow, judged by runs.

At most one open finding per (type, subject): a flow that sees the same problem again refreshes
it instead of opening another, and a run that no longer sees it resolves it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.sql import rowcount, sql

_OPEN = """
    INSERT INTO findings (type, subject, card_id, evidence, first_run_id, last_run_id)
    VALUES (:type, :subject, :card, CAST(:evidence AS jsonb), :run, :run)
    ON CONFLICT (type, subject) WHERE resolved_at IS NULL
"""
_KEEP = _OPEN + " DO NOTHING RETURNING xmax = 0"
_REFRESH = (
    _OPEN
    + """ DO UPDATE SET
        last_run_id = EXCLUDED.last_run_id,
        first_run_id = COALESCE(findings.first_run_id, EXCLUDED.first_run_id),
        card_id = COALESCE(EXCLUDED.card_id, findings.card_id),
        evidence = EXCLUDED.evidence
    RETURNING xmax = 0"""
)


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
    inserted = await session.scalar(
        sql(_KEEP if run_id is None else _REFRESH),
        {
            "type": finding_type,
            "subject": subject,
            "card": card_id,
            "evidence": json.dumps(evidence),
            "run": run_id,
        },
    )
    return bool(inserted)


async def of_run(session: AsyncSession, run_id: uuid.UUID, *, limit: int) -> list[Any]:
    """The findings a run opened or last saw (resolved ones too), oldest first."""
    rows = await session.execute(
        sql(
            """
            SELECT id, type, subject, card_id, evidence, created_at, resolved_at
            FROM findings
            WHERE first_run_id = :id OR last_run_id = :id
            ORDER BY id
            LIMIT :limit
            """
        ),
        {"id": run_id, "limit": limit},
    )
    return list(rows.all())


async def still_seen_by(
    session: AsyncSession, run_id: uuid.UUID | str, card_ids: Collection[uuid.UUID]
) -> None:
    """Mark the open card findings of cards a run could not look at as seen by it, so that
    resolving what the run no longer saw leaves them open."""
    await session.execute(
        sql(
            """
            UPDATE findings SET last_run_id = :run
            WHERE resolved_at IS NULL AND card_id = ANY(CAST(:cards AS uuid[]))
              AND subject LIKE 'card:%'
            """
        ),
        {"run": run_id, "cards": list(card_ids)},
    )


async def resolve_not_seen(
    session: AsyncSession,
    run_id: uuid.UUID | str,
    *,
    finding_types: Collection[str],
    card_ids: Collection[uuid.UUID] | None,
    subject_like: str | None,
) -> int:
    """Resolve the open findings of `finding_types` (on `card_ids`, with subjects LIKE
    `subject_like`, when given) that run `run_id` did not see and could have seen: last seen
    by an older run, or opened before it started. Returns how many."""
    result = await session.execute(
        sql(
            r"""
            UPDATE findings f SET resolved_at = now()
            FROM runs r
            WHERE r.id = :run
              AND f.resolved_at IS NULL
              AND f.type = ANY(:types)
              AND f.last_run_id IS DISTINCT FROM r.id
              AND (
                    (f.last_run_id IS NULL
                     AND f.created_at < COALESCE(r.started_at, r.created_at))
                 OR EXISTS (SELECT 1 FROM runs seen
                            WHERE seen.id = f.last_run_id AND seen.created_at < r.created_at)
              )
              AND (CAST(:cards AS uuid[]) IS NULL OR f.card_id = ANY(CAST(:cards AS uuid[])))
              AND (CAST(:prefix AS text) IS NULL OR f.subject LIKE CAST(:prefix AS text) ESCAPE '\')
            """
        ),
        {
            "run": run_id,
            "types": list(finding_types),
            "cards": None if card_ids is None else list(card_ids),
            "prefix": subject_like,
        },
    )
    return rowcount(result)
