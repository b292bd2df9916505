"""Reconcile and backfill runs: starting one, watching it, and the bookkeeping its algorithm does.

A run is a row in `runs` plus one job (`reconcile.run` / `backfill.run`) inserted in the same
transaction, so a run the operator was told about always has work behind it and a rolled-back
start leaves neither. The algorithms themselves live in `app/sync/reconcile.py` and
`app/sync/backfill.py`; this module gives them the run's lifecycle (`mark_running`,
`update_progress`, `finish_run`, or `RunReporter` around all three) and its findings.

A run's job can die (attempts spent, or a handler that gave up) without the algorithm getting a
chance to write `failed`; `get_run` therefore reports such a run as failed with the job's last
error, read from the job itself, so no process has to remember to do it. Retrying the dead job
(`POST /internal/jobs/{id}/retry`) brings the run back to life.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import findings
from app.db.engine import SessionFactory, transaction
from app.db.jobs import enqueue
from app.settings import PosKind, Settings

RECONCILE_JOB = "reconcile.run"
BACKFILL_JOB = "backfill.run"

RunKind = Literal["reconcile", "backfill"]
RunStatus = Literal["queued", "running", "succeeded", "failed"]
FinalStatus = Literal["succeeded", "failed"]
BackfillDirection = Literal["to_pos", "to_shopify"]
BackfillRequest = Literal["to_pos", "to_shopify", "both"]

RECONCILE_COUNTS = ("checked", "in_sync", "repaired", "findings")
BACKFILL_COUNTS = ("moved", "already_linked", "skipped")
JOB_KINDS: dict[RunKind, str] = {"reconcile": RECONCILE_JOB, "backfill": BACKFILL_JOB}
_COUNT_NAMES: dict[RunKind, tuple[str, ...]] = {
    "reconcile": RECONCILE_COUNTS,
    "backfill": BACKFILL_COUNTS,
}
FINDINGS_LIMIT = 1000
RECONCILE_CARD_IDS_LIMIT = 1000


class UnknownCards(Exception):
    """A reconcile was asked for cards giftsync does not know."""

    def __init__(self, card_ids: Sequence[uuid.UUID]) -> None:
        super().__init__(", ".join(str(card_id) for card_id in card_ids))
        self.card_ids = list(card_ids)


class NoPos(Exception):
    """Backfill moves cards between Shopify and a POS, and POS_KIND is none."""


class DirectionDisabled(Exception):
    """Every direction the backfill asked for is switched off in the settings."""

    def __init__(self, directions: Sequence[BackfillDirection]) -> None:
        super().__init__(", ".join(directions))
        self.directions = list(directions)


def run_job_key(run_id: uuid.UUID | str) -> str:
    return f"run:{run_id}"


# --- parameters the algorithms read -------------------------------------------------------


@dataclass(frozen=True)
class ReconcileParams:
    dry_run: bool
    card_ids: list[uuid.UUID] | None
    """None: every card; otherwise only these (and only their findings may be resolved)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "card_ids": None if self.card_ids is None else [str(c) for c in self.card_ids],
        }

    @classmethod
    def of(cls, params: dict[str, Any]) -> ReconcileParams:
        card_ids = params.get("card_ids")
        return cls(
            dry_run=bool(params.get("dry_run", False)),
            card_ids=None if card_ids is None else [uuid.UUID(c) for c in card_ids],
        )


@dataclass(frozen=True)
class BackfillParams:
    direction: BackfillRequest
    """What the operator asked for."""
    directions: list[BackfillDirection]
    """What this run does: the asked-for directions that are switched on, in a fixed order."""
    disabled: list[BackfillDirection] = field(default_factory=list)
    """Asked for (through `both`) but switched off, so the report says why they did not run."""

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "directions": list(self.directions),
            "disabled": list(self.disabled),
        }

    @classmethod
    def of(cls, params: dict[str, Any]) -> BackfillParams:
        return cls(
            direction=params["direction"],
            directions=list(params.get("directions", [])),
            disabled=list(params.get("disabled", [])),
        )


def backfill_plan(settings: Settings, direction: BackfillRequest) -> BackfillParams:
    """Which directions a backfill request runs under the current settings.

    `to_pos` is DOWNLOAD_SHOPIFY_GIFT_CARDS, `to_shopify` is CREATE_UPDATE_SHOPIFY_GIFT_CARDS.
    `both` runs whichever are on and is refused only when neither is; a single direction that
    is off is refused, because an operator who names it expects it to happen.
    """
    if settings.pos_kind is PosKind.NONE:
        raise NoPos("POS_KIND is none")
    enabled: dict[BackfillDirection, bool] = {
        "to_pos": settings.download_shopify_gift_cards,
        "to_shopify": settings.create_update_shopify_gift_cards,
    }
    asked: list[BackfillDirection] = (
        list(get_args(BackfillDirection)) if direction == "both" else [direction]
    )
    on = [d for d in asked if enabled[d]]
    if not on:
        raise DirectionDisabled(asked)
    return BackfillParams(direction, on, [d for d in asked if not enabled[d]])


# --- starting -------------------------------------------------------------------------------


async def start_run_in(session: AsyncSession, kind: RunKind, params: dict[str, Any]) -> uuid.UUID:
    """Insert the run and its job in the caller's transaction; both or neither survive."""
    run_id = uuid.uuid4()
    counts = dict.fromkeys(_COUNT_NAMES[kind], 0)
    await session.execute(
        text(
            "INSERT INTO runs (id, kind, status, params, counts) "
            "VALUES (:id, :kind, 'queued', CAST(:params AS jsonb), CAST(:counts AS jsonb))"
        ),
        {"id": run_id, "kind": kind, "params": json.dumps(params), "counts": json.dumps(counts)},
    )
    job_id = await enqueue(session, JOB_KINDS[kind], {"run_id": str(run_id)}, run_job_key(run_id))
    if job_id is None:
        # The key holds a fresh uuid4, so only a corrupted jobs table gets here.
        raise RuntimeError(f"job key {run_job_key(run_id)} already taken")
    return run_id


async def start_run(sessions: SessionFactory, kind: RunKind, params: dict[str, Any]) -> uuid.UUID:
    async with transaction(sessions) as session:
        return await start_run_in(session, kind, params)


async def start_reconcile(
    sessions: SessionFactory, *, dry_run: bool, card_ids: Sequence[uuid.UUID] | None = None
) -> uuid.UUID:
    """Queue a reconcile of every card, or of `card_ids` (all must exist: UnknownCards)."""
    wanted = None if card_ids is None else list(dict.fromkeys(card_ids))
    async with transaction(sessions) as session:
        if wanted is not None:
            rows = await session.execute(
                text("SELECT id FROM gift_cards WHERE id = ANY(:ids)"), {"ids": wanted}
            )
            known = {row[0] for row in rows}
            missing = [card_id for card_id in wanted if card_id not in known]
            if missing:
                raise UnknownCards(missing)
        params = ReconcileParams(dry_run=dry_run, card_ids=wanted)
        return await start_run_in(session, "reconcile", params.to_json())


async def start_backfill(
    sessions: SessionFactory, settings: Settings, direction: BackfillRequest
) -> uuid.UUID:
    """Queue a backfill; raises NoPos or DirectionDisabled before writing anything."""
    plan = backfill_plan(settings, direction)
    return await start_run(sessions, "backfill", plan.to_json())


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FindingView:
    id: int
    type: str
    subject: str
    card_id: uuid.UUID | None
    evidence: dict[str, Any]
    created_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True)
class RunView:
    id: uuid.UUID
    kind: RunKind
    status: RunStatus
    params: dict[str, Any]
    counts: dict[str, Any]
    progress: dict[str, Any]
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    job_id: int | None
    findings: list[FindingView]


async def get_run(
    sessions: SessionFactory, run_id: uuid.UUID, *, findings_limit: int = FINDINGS_LIMIT
) -> RunView | None:
    """The run with the findings it opened or last saw (resolved ones too), oldest first."""
    async with transaction(sessions) as session:
        row = (
            await session.execute(
                text(
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
        if row is None:
            return None
        findings = await session.execute(
            text(
                """
                SELECT id, type, subject, card_id, evidence, created_at, resolved_at
                FROM findings
                WHERE first_run_id = :id OR last_run_id = :id
                ORDER BY id
                LIMIT :limit
                """
            ),
            {"id": run_id, "limit": findings_limit},
        )
        finding_views = [FindingView(*finding) for finding in findings.all()]
    status, error = row.status, row.error
    if status in ("queued", "running") and row.job_state == "dead":
        status, error = "failed", f"job {row.job_id} is dead: {row.job_error or 'no error'}"
    return RunView(
        id=row.id,
        kind=row.kind,
        status=status,
        params=row.params,
        counts=row.counts,
        progress=row.progress,
        error=error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        job_id=row.job_id,
        findings=finding_views,
    )


# --- lifecycle, for the algorithms ------------------------------------------------------------


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
    row = (
        await session.execute(
            text(
                """
                UPDATE runs SET status = 'running', started_at = COALESCE(started_at, now())
                WHERE id = :id AND status IN ('queued', 'running')
                RETURNING id, kind, params, counts, progress
                """
            ),
            {"id": run_id},
        )
    ).first()
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
    result = await session.execute(
        text(
            """
            UPDATE runs SET progress = progress || CAST(:progress AS jsonb),
                            counts = counts || CAST(:counts AS jsonb)
            WHERE id = :id AND status = 'running'
            """
        ),
        {"id": run_id, "progress": json.dumps(progress), "counts": json.dumps(counts)},
    )
    return _rowcount(result) == 1


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
    result = await session.execute(
        text(
            """
            UPDATE runs SET status = :status, counts = counts || CAST(:counts AS jsonb),
                            error = :error, finished_at = now()
            WHERE id = :id AND status = 'running'
            """
        ),
        {
            "id": run_id,
            "status": status,
            "counts": json.dumps(counts),
            "error": None if error is None else error[:4000],
        },
    )
    return _rowcount(result) == 1


async def record_finding(
    session: AsyncSession,
    run_id: uuid.UUID | str,
    *,
    finding_type: str,
    subject: str,
    card_id: uuid.UUID | str | None,
    evidence: dict[str, Any],
) -> bool:
    """Open a finding seen by this run, or mark an open one as still seen; True when new.

    Evidence is shown as-is by `GET /internal/runs/{id}`: never put a serial, code or PIN in it
    (last 4 only).
    """
    return await findings.open_finding(
        session,
        finding_type=finding_type,
        subject=subject,
        card_id=card_id,
        evidence=evidence,
        run_id=run_id,
    )


async def resolve_findings_not_seen(
    session: AsyncSession,
    run_id: uuid.UUID | str,
    *,
    finding_types: Collection[str],
    card_ids: Collection[uuid.UUID] | None = None,
    subject_prefix: str | None = None,
) -> int:
    """Resolve the open findings in this run's scope that this run did not see again.

    The scope is what the run checked: the finding types it is the judge of, and optionally
    the cards (a reconcile of some cards) or a subject prefix. A finding last seen by a run
    that started after this one, or opened by another flow after this run started, is left
    open: this run's look at it may predate it. Returns how many were resolved.
    """
    if not finding_types:
        raise ValueError("name the finding types this run is the judge of")
    prefix_like = None
    if subject_prefix is not None:
        escaped = subject_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        prefix_like = escaped + "%"
    result = await session.execute(
        text(
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
            "prefix": prefix_like,
        },
    )
    return _rowcount(result)


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
            **dict.fromkeys(_COUNT_NAMES[state.kind], 0),
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


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
