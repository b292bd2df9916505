"""Reconcile and backfill runs: what a run asks for, starting one, and reading one back.

A run is a row in `runs` plus one job (`reconcile.run` / `backfill.run`) inserted in the same
transaction, so a run the operator was told about always has work behind it and a rolled-back
start leaves neither. The algorithms live in `app/sync/reconcile/` and `app/sync/backfill/`;
`run_reporter.py` gives them the run's lifecycle and `findings.py` what they find.

A run's job can die (attempts spent, or a handler that gave up) without the algorithm getting a
chance to write `failed`; `get_run` therefore reports such a run as failed with the job's last
error, read from the job itself, so no process has to remember to do it. Retrying the dead job
(`POST /internal/jobs/{id}/retry`) brings the run back to life.

A run's job can die (attempts spent, or a handler that gave up) without the algorithm getting a
chance to write `failed`; `get_run` therefore reports such a run as failed with the job's last
error, read from the job itself, so no process has to remember to do it. Retrying the dead job
(`POST /internal/jobs/{id}/retry`) brings the run back to life.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import findings, gift_cards
from app.db import runs as runs_db
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
COUNT_NAMES: dict[RunKind, tuple[str, ...]] = {
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
    await runs_db.insert(session, run_id, kind, params, dict.fromkeys(COUNT_NAMES[kind], 0))
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
            known = await gift_cards.known(session, wanted)
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
        row = await runs_db.with_job(session, run_id)
        if row is None:
            return None
        finding_views = [
            FindingView(*finding)
            for finding in await findings.of_run(session, run_id, limit=findings_limit)
        ]
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
