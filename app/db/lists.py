"""Pages of runs, findings and jobs for operators, newest first, and resolving a finding by hand.

Pages are keyset pages: `before` is the last item of the previous page, so a page stays right
while new rows arrive. Job payloads never leave here (they can carry sealed secrets).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.sql import sql

FindingState = Literal["open", "resolved"]
JobState = Literal["queued", "running", "done", "dead"]
RunKind = Literal["reconcile", "backfill"]
RunStatus = Literal["queued", "running", "succeeded", "failed"]


@dataclass(frozen=True)
class RunRow:
    id: uuid.UUID
    kind: str
    status: str
    params: dict[str, Any]
    counts: dict[str, Any]
    progress: dict[str, Any]
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    job_id: int | None


@dataclass(frozen=True)
class FindingRow:
    id: int
    type: str
    subject: str
    card_id: uuid.UUID | None
    evidence: dict[str, Any]
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note: str | None
    first_run_id: uuid.UUID | None
    last_run_id: uuid.UUID | None


@dataclass(frozen=True)
class JobRow:
    id: int
    kind: str
    state: str
    attempts: int
    max_attempts: int
    last_error: str | None
    run_at: datetime
    idempotency_key: str
    created_at: datetime
    updated_at: datetime


# A run whose job died before the algorithm could say so is shown failed (as `runs.get_run`).
_RUNS = """
    SELECT r.id, r.kind,
           CASE WHEN r.status IN ('queued', 'running') AND j.state = 'dead' THEN 'failed'
                ELSE r.status END AS status,
           r.params, r.counts, r.progress,
           CASE WHEN r.status IN ('queued', 'running') AND j.state = 'dead'
                THEN 'job ' || j.id || ' is dead: ' || COALESCE(j.last_error, 'no error')
                ELSE r.error END AS error,
           r.created_at, r.started_at, r.finished_at, j.id AS job_id
    FROM runs r
    LEFT JOIN jobs j ON j.idempotency_key = 'run:' || r.id::text
"""


async def runs_page(
    session: AsyncSession,
    *,
    kind: RunKind | None = None,
    status: RunStatus | None = None,
    before: uuid.UUID | None = None,
    limit: int = 50,
) -> list[RunRow]:
    rows = await session.execute(
        sql(
            f"""
            SELECT * FROM ({_RUNS}) r
            WHERE (CAST(:kind AS text) IS NULL OR r.kind = :kind)
              AND (CAST(:status AS text) IS NULL OR r.status = :status)
              AND (CAST(:before AS uuid) IS NULL OR (r.created_at, r.id) < (
                    SELECT created_at, id FROM runs WHERE id = CAST(:before AS uuid)))
            ORDER BY r.created_at DESC, r.id DESC
            LIMIT :limit
            """  # noqa: S608 -- a constant, no input
        ),
        {"kind": kind, "status": status, "before": before, "limit": limit},
    )
    return [RunRow(*row) for row in rows.all()]


async def run(session: AsyncSession, run_id: uuid.UUID) -> RunRow | None:
    row = (
        await session.execute(
            sql(f"{_RUNS} WHERE r.id = :id"),
            {"id": run_id},
        )
    ).first()
    return None if row is None else RunRow(*row)


_FINDING_COLUMNS = """
    id, type, subject, card_id, evidence, created_at, resolved_at, resolved_by,
    resolution_note, first_run_id, last_run_id
"""


async def findings_page(
    session: AsyncSession,
    *,
    finding_type: str | None = None,
    state: FindingState | None = None,
    card_id: uuid.UUID | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[FindingRow]:
    rows = await session.execute(
        sql(
            f"""
            SELECT {_FINDING_COLUMNS} FROM findings
            WHERE (CAST(:type AS text) IS NULL OR type = :type)
              AND (CAST(:state AS text) IS NULL
                   OR (:state = 'open' AND resolved_at IS NULL)
                   OR (:state = 'resolved' AND resolved_at IS NOT NULL))
              AND (CAST(:card AS uuid) IS NULL OR card_id = CAST(:card AS uuid))
              AND (CAST(:before AS bigint) IS NULL OR id < :before)
            ORDER BY id DESC
            LIMIT :limit
            """  # noqa: S608 -- a constant, no input
        ),
        {"type": finding_type, "state": state, "card": card_id, "before": before, "limit": limit},
    )
    return [FindingRow(*row) for row in rows.all()]


async def finding(session: AsyncSession, finding_id: int) -> FindingRow | None:
    row = (
        await session.execute(
            sql(f"SELECT {_FINDING_COLUMNS} FROM findings WHERE id = :id"),  # noqa: S608
            {"id": finding_id},
        )
    ).first()
    return None if row is None else FindingRow(*row)


async def finding_types(session: AsyncSession) -> list[str]:
    rows = await session.execute(sql("SELECT DISTINCT type FROM findings ORDER BY type"))
    return [row[0] for row in rows.all()]


async def resolve_finding(
    session: AsyncSession, finding_id: int, *, operator: str, note: str
) -> FindingRow | None:
    """Resolve an open finding by hand; None when it is unknown or already resolved."""
    row = (
        await session.execute(
            sql(
                f"""
                UPDATE findings SET resolved_at = now(), resolved_by = :operator,
                                    resolution_note = :note
                WHERE id = :id AND resolved_at IS NULL
                RETURNING {_FINDING_COLUMNS}
                """  # noqa: S608 -- a constant, no input
            ),
            {"id": finding_id, "operator": operator, "note": note},
        )
    ).first()
    return None if row is None else FindingRow(*row)


async def jobs_page(
    session: AsyncSession, *, state: JobState | None, before: int | None = None, limit: int = 50
) -> list[JobRow]:
    """Newest first; `state=None` lists every state."""
    rows = await session.execute(
        sql(
            """
            SELECT id, kind, state, attempts, max_attempts, last_error, run_at, idempotency_key,
                   created_at, updated_at
            FROM jobs
            WHERE (CAST(:state AS text) IS NULL OR state = :state)
              AND (CAST(:before AS bigint) IS NULL OR id < :before)
            ORDER BY id DESC
            LIMIT :limit
            """
        ),
        {"state": state, "before": before, "limit": limit},
    )
    return [JobRow(*row) for row in rows.all()]
