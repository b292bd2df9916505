"""The `jobs` table as a queue: transactional enqueue, SKIP LOCKED claiming, leases, dead letters.

A claim is a lease: a worker that dies mid-job stops renewing it, and once `locked_until`
passes another worker may claim the job again. Handlers are idempotent, so a re-run after a
crash is safe; the lease only decides who runs it next.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.sql import rowcount, sql

DEFAULT_MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    payload: dict[str, Any]
    idempotency_key: str
    attempts: int
    max_attempts: int


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    idempotency_key: str,
    *,
    run_at: datetime | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> int | None:
    """Add a job inside the caller's transaction; None when the key was already enqueued.

    No NOTIFY: workers poll (the in-process one is also woken directly), and with nobody
    listening a NOTIFY would only queue every enqueuing commit behind PostgreSQL's one
    cluster-wide notification lock.
    """
    job_id: int | None = await session.scalar(
        sql(
            """
            INSERT INTO jobs (kind, payload, idempotency_key, run_at, max_attempts)
            VALUES (:kind, CAST(:payload AS jsonb), :key, COALESCE(:run_at, now()), :max_attempts)
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id
            """
        ),
        {
            "kind": kind,
            "payload": _json(payload),
            "key": idempotency_key,
            "run_at": run_at,
            "max_attempts": max_attempts,
        },
    )
    return job_id


async def claim(
    session: AsyncSession, worker_id: str, *, limit: int, lease: timedelta
) -> list[ClaimedJob]:
    """Claim due jobs (and jobs whose lease ran out) without ever blocking on another worker."""
    rows = await session.execute(
        sql(
            """
            UPDATE jobs SET state = 'running', attempts = attempts + 1, locked_by = :worker,
                   locked_until = now() + :lease, updated_at = now()
            WHERE id IN (
                SELECT id FROM jobs
                WHERE (state = 'queued' AND run_at <= now())
                   OR (state = 'running' AND locked_until < now())
                ORDER BY run_at, id
                LIMIT :limit
                FOR UPDATE SKIP LOCKED
            )
            RETURNING id, kind, payload, idempotency_key, attempts, max_attempts
            """
        ),
        {"worker": worker_id, "lease": lease, "limit": limit},
    )
    return [ClaimedJob(*row) for row in rows.all()]


async def complete(session: AsyncSession, job_id: int, worker_id: str) -> bool:
    """Mark done only if this worker still holds the lease; False means another took it over."""
    result = await session.execute(
        sql(
            """
            UPDATE jobs SET state = 'done', finished_at = now(), locked_by = NULL,
                   locked_until = NULL, last_error = NULL, updated_at = now()
            WHERE id = :id AND state = 'running' AND locked_by = :worker
            """
        ),
        {"id": job_id, "worker": worker_id},
    )
    return rowcount(result) == 1


def backoff(attempts: int, *, base: float = 1.0, cap: float = 600.0) -> timedelta:
    """Exponential backoff with full jitter, so a burst of failures does not retry in step."""
    ceiling = min(cap, base * (2 ** max(attempts - 1, 0)))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


async def fail(
    session: AsyncSession,
    job: ClaimedJob,
    worker_id: str,
    error: str,
    *,
    retry_in: timedelta | None = None,
    permanent: bool = False,
    count_attempt: bool = True,
) -> str:
    """Requeue with backoff, or park as dead after the last attempt; returns the new state.

    A handler that asked to wait (`count_attempt=False`, e.g. for an Undo to land first) did
    not fail, so its claim is given back rather than spent.
    """
    dead = permanent or (count_attempt and job.attempts >= job.max_attempts)
    delay = retry_in if retry_in is not None else backoff(job.attempts)
    state: str | None = await session.scalar(
        sql(
            """
            UPDATE jobs SET state = :state, last_error = :error, locked_by = NULL,
                   attempts = attempts - CASE WHEN :count_attempt THEN 0 ELSE 1 END,
                   locked_until = NULL, updated_at = now(),
                   run_at = CASE WHEN :dead THEN run_at ELSE now() + :delay END,
                   finished_at = CASE WHEN :dead THEN now() ELSE NULL END
            WHERE id = :id AND state = 'running' AND locked_by = :worker
            RETURNING state
            """
        ),
        {
            "state": "dead" if dead else "queued",
            "error": error[:4000],
            "dead": dead,
            "count_attempt": count_attempt,
            "delay": delay,
            "id": job.id,
            "worker": worker_id,
        },
    )
    return state or "lost"


async def extend_leases(
    session: AsyncSession, worker_id: str, job_ids: list[int], lease: timedelta
) -> None:
    if job_ids:
        await session.execute(
            sql(
                """
                UPDATE jobs SET locked_until = now() + :lease
                WHERE id = ANY(:ids) AND locked_by = :worker AND state = 'running'
                """
            ),
            {"lease": lease, "ids": job_ids, "worker": worker_id},
        )


async def retry_dead(session: AsyncSession, job_id: int) -> bool:
    """Give a dead job a fresh set of attempts; False if it is not dead."""
    result = await session.execute(
        sql(
            """
            UPDATE jobs SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL,
                   updated_at = now()
            WHERE id = :id AND state = 'dead'
            """
        ),
        {"id": job_id},
    )
    return rowcount(result) == 1


def _json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str)


async def claim_by_key(
    session: AsyncSession, idempotency_key: str, worker_id: str, lease: timedelta
) -> ClaimedJob | None:
    """Take the job with this key for `worker_id` unless a worker holds an unexpired lease."""
    row = (
        await session.execute(
            sql(
                """
                UPDATE jobs SET state = 'running', attempts = attempts + 1,
                       locked_by = :worker, locked_until = now() + :lease, updated_at = now()
                WHERE idempotency_key = :key
                  AND (state = 'queued' OR (state = 'running' AND locked_until < now()))
                RETURNING id, kind, payload, idempotency_key, attempts, max_attempts
                """
            ),
            {"worker": worker_id, "lease": lease, "key": idempotency_key},
        )
    ).first()
    return None if row is None else ClaimedJob(*row)


async def unfinished_for_card(session: AsyncSession, card_id: uuid.UUID, kinds: list[str]) -> bool:
    """True while a job of one of `kinds` for this card is queued, running or dead."""
    found = await session.scalar(
        sql(
            """
            SELECT 1 FROM jobs
            WHERE payload->>'card_id' = :c AND state <> 'done' AND kind = ANY(:kinds)
            LIMIT 1
            """
        ),
        {"c": str(card_id), "kinds": kinds},
    )
    return found is not None


async def state_of(session: AsyncSession, job_id: int) -> str | None:
    state: str | None = await session.scalar(
        sql("SELECT state FROM jobs WHERE id = :id"), {"id": job_id}
    )
    return state


async def summaries(session: AsyncSession, state: str, *, limit: int) -> list[Any]:
    """Jobs in `state`, newest first, without their payloads (they can carry sealed secrets)."""
    rows = await session.execute(
        sql(
            """
            SELECT id, kind, state, attempts, max_attempts, last_error, run_at, idempotency_key,
                   created_at
            FROM jobs WHERE state = :state
            ORDER BY created_at DESC, id DESC
            LIMIT :limit
            """
        ),
        {"state": state, "limit": limit},
    )
    return list(rows.all())
