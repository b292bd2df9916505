"""A run's lifecycle as its algorithm lives it: start (or resume), checkpoint, finish.

`RunReporter` keeps the counts in memory and writes them, with the algorithm's progress, at
each checkpoint; every state change is conditional, so an execution that lost its job's lease
learns at its next checkpoint that another one has finished the run.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, get_args

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import runs as runs_db
from app.db.engine import SessionFactory, transaction
from app.sync.findings import record_finding
from app.sync.runs import COUNT_NAMES, FinalStatus, RunKind


@dataclass(frozen=True)
class RunState:
    """What an algorithm needs to start or resume a run."""

    id: uuid.UUID
    kind: RunKind
    params: dict[str, Any]
    counts: dict[str, int]
    progress: dict[str, Any]


async def mark_running(session: AsyncSession, run_id: uuid.UUID | str) -> RunState | None:
    """Move a queued run to running, or take over a running one whose job was re-claimed.

    None when the run is unknown or already finished: a job delivered again after its run
    ended must not run it twice. On a resumed run the counts and progress are the last
    checkpoint's, so the algorithm continues from there.
    """
    row = await runs_db.mark_running(session, run_id)
    if row is None:
        return None
    return RunState(row.id, row.kind, row.params, row.counts, row.progress)


async def update_progress(
    session: AsyncSession,
    run_id: uuid.UUID | str,
    progress: dict[str, Any],
    counts: dict[str, int],
) -> bool:
    """Checkpoint a running run: keys given replace the stored ones, others are kept.

    False when the run is no longer running (finished meanwhile): the caller should stop.
    """
    return await runs_db.checkpoint(session, run_id, progress, counts)


async def finish_run(
    session: AsyncSession,
    run_id: uuid.UUID | str,
    status: FinalStatus,
    counts: dict[str, int],
    error: str | None = None,
) -> bool:
    """End a running run once; False if it was not running (someone else finished it)."""
    if status not in get_args(FinalStatus):
        raise ValueError(f"a run finishes as succeeded or failed, not {status!r}")
    return await runs_db.finish(
        session, run_id, status, counts, None if error is None else error[:4000]
    )


class RunReporter:
    """An algorithm's handle on its run: counts in memory, written at each checkpoint.

    Typical use in a job handler::

        reporter = await RunReporter.begin(sessions, payload["run_id"])
        if reporter is None:
            return  # finished already: a repeated delivery does nothing
        try:
            ...  # work, reporter.count("checked"), await reporter.checkpoint(cursor=...)
        except Exception as exc:
            await reporter.fail(str(exc))  # only when retrying cannot help
            raise
        await reporter.succeed()

    A crash between checkpoints loses the counts since the last one while the work itself is
    redone idempotently, so a resumed run may count some cards under `already_linked` or
    `in_sync` that it had counted as `moved` or `repaired` before the crash.
    """

    def __init__(self, sessions: SessionFactory, state: RunState) -> None:
        self.sessions = sessions
        self.run_id = state.id
        self.kind = state.kind
        self.params = state.params
        self.counts: dict[str, int] = {
            **dict.fromkeys(COUNT_NAMES[state.kind], 0),
            **{name: int(value) for name, value in state.counts.items()},
        }
        self.progress: dict[str, Any] = dict(state.progress)

    @classmethod
    async def begin(cls, sessions: SessionFactory, run_id: uuid.UUID | str) -> RunReporter | None:
        async with transaction(sessions) as session:
            state = await mark_running(session, uuid.UUID(str(run_id)))
        return None if state is None else cls(sessions, state)

    @property
    def resumed(self) -> bool:
        """True when an earlier attempt checkpointed progress: continue, do not restart."""
        return bool(self.progress)

    def count(self, name: str, by: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + by

    async def checkpoint(self, **progress: Any) -> bool:
        """Write counts and `progress` (e.g. cursor, done, total); False: the run has ended."""
        self.progress.update(progress)
        async with transaction(self.sessions) as session:
            return await update_progress(session, self.run_id, progress, self.counts)

    async def finding(
        self,
        *,
        finding_type: str,
        subject: str,
        card_id: uuid.UUID | str | None,
        evidence: dict[str, Any],
        session: AsyncSession | None = None,
    ) -> bool:
        """Record a finding in `session` (with the repair it belongs to) or on its own."""
        if session is not None:
            return await record_finding(
                session,
                self.run_id,
                finding_type=finding_type,
                subject=subject,
                card_id=card_id,
                evidence=evidence,
            )
        async with transaction(self.sessions) as own:
            return await record_finding(
                own,
                self.run_id,
                finding_type=finding_type,
                subject=subject,
                card_id=card_id,
                evidence=evidence,
            )

    async def succeed(self) -> bool:
        async with transaction(self.sessions) as session:
            return await finish_run(session, self.run_id, "succeeded", self.counts)

    async def fail(self, error: str) -> bool:
        async with transaction(self.sessions) as session:
            return await finish_run(session, self.run_id, "failed", self.counts, error)
