"""Queries on `runs`: reconcile and backfill runs, each with one job behind it.

A run changes state only by conditional updates (queued -> running -> succeeded | failed), so a
job delivered again after its run ended, or two executions of one run, cannot both finish it.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.sql import rowcount, sql


async def insert(
    session: AsyncSession,
    run_id: uuid.UUID,
    kind: str,
    params: dict[str, Any],
    counts: dict[str, int],
) -> None:
    await session.execute(
        sql(
            "INSERT INTO runs (id, kind, status, params, counts) "
            "VALUES (:id, :kind, 'queued', CAST(:params AS jsonb), CAST(:counts AS jsonb))"
        ),
        {"id": run_id, "kind": kind, "params": json.dumps(params), "counts": json.dumps(counts)},
    )


async def with_job(session: AsyncSession, run_id: uuid.UUID) -> Any:
    """The run and the state of its job (`job_id`, `job_state`, `job_error`), or None."""
    return (
        await session.execute(
            sql(
                """
                SELECT r.id, r.kind, r.status, r.params, r.counts, r.progress, r.error,
                       r.created_at, r.started_at, r.finished_at,
                       j.id AS job_id, j.state AS job_state, j.last_error AS job_error
                FROM runs r
                LEFT JOIN jobs j ON j.idempotency_key = 'run:' || r.id::text
                WHERE r.id = :id
                """
            ),
            {"id": run_id},
        )
    ).first()


async def counts_of(session: AsyncSession, run_id: uuid.UUID | str) -> dict[str, Any] | None:
    counts: dict[str, Any] | None = await session.scalar(
        sql("SELECT counts FROM runs WHERE id = :id"), {"id": run_id}
    )
    return counts


async def mark_running(session: AsyncSession, run_id: uuid.UUID | str) -> Any:
    """Queued -> running (or a running run taken over); (id, kind, params, counts, progress),
    or None when the run is unknown or has ended."""
    return (
        await session.execute(
            sql(
                """
                UPDATE runs SET status = 'running', started_at = COALESCE(started_at, now())
                WHERE id = :id AND status IN ('queued', 'running')
                RETURNING id, kind, params, counts, progress
                """
            ),
            {"id": run_id},
        )
    ).first()


async def checkpoint(
    session: AsyncSession,
    run_id: uuid.UUID | str,
    progress: dict[str, Any],
    counts: dict[str, int],
) -> bool:
    """Merge `progress` and `counts` into a running run; False when it is not running."""
    result = await session.execute(
        sql(
            """
            UPDATE runs SET progress = progress || CAST(:progress AS jsonb),
                            counts = counts || CAST(:counts AS jsonb)
            WHERE id = :id AND status = 'running'
            """
        ),
        {"id": run_id, "progress": json.dumps(progress), "counts": json.dumps(counts)},
    )
    return rowcount(result) == 1


async def finish(
    session: AsyncSession,
    run_id: uuid.UUID | str,
    status: str,
    counts: dict[str, int],
    error: str | None,
) -> bool:
    """Running -> `status`; False when it was not running (someone else finished it)."""
    result = await session.execute(
        sql(
            """
            UPDATE runs SET status = :status, counts = counts || CAST(:counts AS jsonb),
                            error = :error, finished_at = now()
            WHERE id = :id AND status = 'running'
            """
        ),
        {"id": run_id, "status": status, "counts": json.dumps(counts), "error": error},
    )
    return rowcount(result) == 1


async def full_reconcile_under_way(session: AsyncSession, interval: timedelta) -> bool:
    """A full repairing reconcile started within `interval`, or one whose job still lives."""
    found = await session.scalar(
        sql(
            """
            SELECT 1 FROM runs r
            LEFT JOIN jobs j ON j.idempotency_key = 'run:' || r.id::text
            WHERE r.kind = 'reconcile'
              AND coalesce(r.params->>'dry_run', 'false') = 'false'
              AND (r.params->'card_ids' IS NULL OR r.params->'card_ids' = 'null'::jsonb)
              AND (r.created_at > now() - CAST(:interval AS interval)
                   OR (r.status IN ('queued', 'running') AND j.state IN ('queued', 'running')))
            LIMIT 1
            """
        ),
        {"interval": interval},
    )
    return found is not None
