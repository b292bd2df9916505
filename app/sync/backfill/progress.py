"""What a backfill pass keeps at each checkpoint, and how a run reports where it stands."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

from app.sync import runs
from app.sync.omni.common import LinkOutcome
from app.sync.runs import BackfillDirection, BackfillParams, RunStatus

# Staff read these in the report; the full list would grow with the shop.
SKIPPED_CARDS_KEPT = 100

SortKey = tuple[int, str]
"""A card's place in its listing (`listing.sort_key`)."""


@dataclass
class PassState:
    """One direction's progress, stored as `runs.progress[direction]`."""

    direction: BackfillDirection
    processed: int = 0
    """Cards handled, counting from the listing's start, with no gap."""
    total: int | None = None
    """Cards in the listing, when known before the pass (the Shopify export)."""
    moved: int = 0
    already_linked: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    skipped_cards: list[dict[str, str]] = field(default_factory=list)
    """The first skipped cards: external id, last 4 and reason (never a full code)."""
    watermark: SortKey | None = None
    ordered: bool = True
    finished: bool = False

    def add(self, outcome: LinkOutcome, external_id: str, last4: str) -> None:
        self.processed += 1
        if outcome.status == "moved":
            self.moved += 1
        elif outcome.status == "already_linked":
            self.already_linked += 1
        else:
            reason = outcome.reason or "unknown"
            self.skipped += 1
            self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1
            if len(self.skipped_cards) < SKIPPED_CARDS_KEPT:
                self.skipped_cards.append({"id": external_id, "last4": last4, "reason": reason})

    def restarted(self) -> PassState:
        """The same pass counted again from the listing's start."""
        return PassState(self.direction, total=self.total)

    def counts(self) -> dict[str, int]:
        return {
            "moved": self.moved,
            "already_linked": self.already_linked,
            "skipped": self.skipped,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "processed": self.processed,
            "total": self.total,
            **self.counts(),
            "skipped_by_reason": dict(self.skipped_by_reason),
            "skipped_cards": list(self.skipped_cards),
            "watermark": list(self.watermark) if self.watermark is not None else None,
            "ordered": self.ordered,
            "finished": self.finished,
        }

    @classmethod
    def of(cls, direction: BackfillDirection, stored: dict[str, Any] | None) -> PassState:
        if not stored:
            return cls(direction)
        watermark = stored.get("watermark")
        return cls(
            direction=direction,
            processed=int(stored.get("processed", 0)),
            total=stored.get("total"),
            moved=int(stored.get("moved", 0)),
            already_linked=int(stored.get("already_linked", 0)),
            skipped=int(stored.get("skipped", 0)),
            skipped_by_reason={
                k: int(v) for k, v in (stored.get("skipped_by_reason") or {}).items()
            },
            skipped_cards=list(stored.get("skipped_cards") or []),
            watermark=(int(watermark[0]), str(watermark[1])) if watermark else None,
            ordered=bool(stored.get("ordered", True)),
            finished=bool(stored.get("finished", False)),
        )


@dataclass(frozen=True)
class BackfillProgress:
    """Handed to the `progress` callback each time a card is counted."""

    direction: BackfillDirection
    processed: int
    total: int | None
    moved: int
    already_linked: int
    skipped: int
    finished: bool


ProgressCallback = Callable[[BackfillProgress], None]


def progress_of(state: PassState) -> BackfillProgress:
    return BackfillProgress(
        direction=state.direction,
        processed=state.processed,
        total=state.total,
        moved=state.moved,
        already_linked=state.already_linked,
        skipped=state.skipped,
        finished=state.finished,
    )


@dataclass(frozen=True)
class BackfillReport:
    """How a run ended (or stands): counts, and per direction what moved and what could not."""

    run_id: uuid.UUID
    status: RunStatus
    counts: dict[str, int]
    passes: dict[BackfillDirection, PassState]
    disabled: list[BackfillDirection]
    error: str | None = None

    @classmethod
    def of_run(cls, run: runs.RunView) -> BackfillReport:
        """A run as stored: one followed from another process, or finished already."""
        params = BackfillParams.of(run.params) if "direction" in run.params else None
        directions: list[BackfillDirection] = (
            params.directions
            if params and params.directions
            else [d for d in get_args(BackfillDirection) if d in run.progress]
        )
        return cls(
            run_id=run.id,
            status=run.status,
            counts={name: int(run.counts.get(name, 0)) for name in runs.BACKFILL_COUNTS},
            passes={d: PassState.of(d, run.progress.get(d)) for d in directions},
            disabled=params.disabled if params else [],
            error=run.error,
        )


def totals(passes: dict[BackfillDirection, PassState]) -> dict[str, int]:
    totals = dict.fromkeys(runs.BACKFILL_COUNTS, 0)
    for state in passes.values():
        for name, value in state.counts().items():
            totals[name] += value
    return totals
