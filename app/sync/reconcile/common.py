"""What every phase of a reconcile run shares: the reconciler's setup, one execution's state,
and the bookkeeping of counts and findings every phase does the same way."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from app.clients.shopify import ShopifyClient
from app.db.engine import SessionFactory
from app.logging import get_logger, mask_text
from app.settings import Settings
from app.sync.omni.flow import OmniSync
from app.sync.omni.merge import SystemStatus
from app.sync.run_reporter import RunReporter
from app.sync.runs import ReconcileParams

log = get_logger(__name__)

PERIODIC_NAME = "reconcile"
RUN_LOCK = "reconcile-run"
DEACTIVATE_SHADOW_JOB = "reconcile.deactivate_shopify"
BATCH_SIZE = 10_000
"""Cards per batch: one checkpoint per batch, and no more rows than this in memory at once.

Smaller batches cost more than they save: each is a few indexed queries over the snapshot."""
TEMP_BUFFERS = "128MB"
REPAIR_CONCURRENCY = 8
"""Cards repaired at once (one pooled connection each, beside the snapshot's)."""
FINDINGS_IN_PROGRESS = 200
"""A dry run lists at most this many would-be findings in its progress (the counts are exact)."""
SHADOW_GRACE = timedelta(minutes=10)
"""A shadow-marked Shopify card younger than this may belong to a checkout still committing."""

# Findings the reconciler is the judge of, resolved when a later full run no longer sees them.
# An overdraft is not among them: it is money already spent twice, a loss for staff to chase,
# and a card zeroed by it looks perfectly in sync afterwards.
OMNI_FINDINGS = ("missing_link", "status_conflict", "currency_mismatch", "unrepairable")
SHADOW_FINDINGS = ("orphan_shadow_card", "hold_without_card")


class ReconcileDeps:
    """What a reconcile reads and writes with; `Reconciler` adds the entry points."""

    def __init__(
        self,
        sessions: SessionFactory,
        settings: Settings,
        omni: OmniSync | None,
        shopify: ShopifyClient,
        *,
        bulk_poll_interval: float = 2.0,
        batch_size: int = BATCH_SIZE,
        repair_concurrency: int = REPAIR_CONCURRENCY,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.omni = omni
        self.shopify = shopify
        self.bulk_poll_interval = bulk_poll_interval
        self.batch_size = batch_size
        self.repair_concurrency = repair_concurrency


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run is: `phase` is shopify, pos, cards, shadow or unlinked."""

    phase: str
    done: int
    total: int | None


ProgressCallback = Callable[[Progress], None]


@dataclass
class Tally:
    """What one execution saw, beyond the four counts the run row carries."""

    findings_by_type: Counter[str] = field(default_factory=Counter)
    findings_before: Counter[str] = field(default_factory=Counter)
    """What earlier attempts of a resumed run had counted already."""
    drift_minor: int = 0
    would_be: list[dict[str, Any]] = field(default_factory=list)
    unchecked: list[uuid.UUID] = field(default_factory=list)
    """Cards skipped or failed this time: their open findings are kept, not resolved."""


class RunEnded(Exception):
    """The run is no longer running: another execution finished it."""


def system_status(enabled: bool) -> SystemStatus:
    return "enabled" if enabled else "disabled"


def error_text(error: Exception) -> str:
    """An upstream error as evidence: its kind and message, secrets masked, kept short."""
    return mask_text(f"{type(error).__name__}: {error}")[:300]


class Execution:
    """One attempt at one run, on one database connection that holds the snapshot tables."""

    def __init__(
        self,
        deps: ReconcileDeps,
        reporter: RunReporter,
        params: ReconcileParams,
        progress: ProgressCallback | None,
    ) -> None:
        self.r = deps
        self.reporter = reporter
        self.params = params
        self.dry_run = params.dry_run
        self.full = params.card_ids is None
        self.run_id = reporter.run_id
        self.omni = deps.omni
        self.pos_system = deps.omni.pos.system if deps.omni is not None else None
        self.tally = Tally()
        self._progress = progress
        self.t0 = datetime.now(UTC)
        self.today = self.t0.date()
        done = reporter.progress.get("phases_done") or []
        self.phases_done: list[str] = [str(phase) for phase in done]
        self.after: str | None = reporter.progress.get("after")
        by_type = reporter.progress.get("findings_by_type") or {}
        self.tally.findings_before.update({str(k): int(v) for k, v in by_type.items()})
        self.tally.findings_by_type.update(self.tally.findings_before)
        self.tally.would_be = list(reporter.progress.get("findings") or [])
        self._drift_before = int(reporter.progress.get("drift_minor") or 0)
        self.seconds: dict[str, float] = {}
        self.currency = deps.settings.currency.strip().upper()

    # --- phases and checkpoints ---

    async def timed(self, phase: str, work: Awaitable[None]) -> None:
        """Run one phase; its seconds go to the log and `progress.seconds` (operators ask)."""
        started = time.monotonic()
        await work
        self.seconds[phase] = round(time.monotonic() - started, 3)
        log.info(
            "reconcile_phase", run_id=str(self.run_id), phase=phase, **{"s": self.seconds[phase]}
        )

    async def phase_done(self, phase: str) -> None:
        self.phases_done.append(phase)
        await self.checkpoint()

    async def checkpoint(self, **extra: Any) -> None:
        running = await self.reporter.checkpoint(
            phases_done=self.phases_done,
            after=self.after,
            findings_by_type=dict(self.tally.findings_by_type),
            drift_minor=self._drift_before + self.tally.drift_minor,
            findings=self.tally.would_be,
            seconds=self.seconds,
            **extra,
        )
        if not running:
            raise RunEnded(str(self.run_id))

    def report(self, phase: str, done: int, total: int | None) -> None:
        if self._progress is not None:
            self._progress(Progress(phase, done, total))

    # --- counts and findings ---

    def count(self, name: str, by: int = 1) -> None:
        self.reporter.count(name, by)

    def repaired_with(self, finding_type: str) -> None:
        """A repair that is also reported: staff should know it happened."""
        self.tally.findings_by_type[finding_type] += 1
        self.count("findings")
        self.count("repaired")

    def would_be(
        self, finding_type: str, subject: str, card_id: uuid.UUID | None, evidence: dict[str, Any]
    ) -> None:
        if len(self.tally.would_be) < FINDINGS_IN_PROGRESS:
            self.tally.would_be.append(
                {
                    "type": finding_type,
                    "subject": subject,
                    "card_id": None if card_id is None else str(card_id),
                    "evidence": evidence,
                }
            )

    def noted_finding(
        self, finding_type: str, subject: str, card_id: uuid.UUID, evidence: dict[str, Any]
    ) -> None:
        """A finding omni sync already recorded (or, in a dry run, would have)."""
        self.tally.findings_by_type[finding_type] += 1
        self.count("findings")
        if self.dry_run:
            self.would_be(finding_type, subject, card_id, evidence)

    async def finding(
        self,
        finding_type: str,
        subject: str,
        card_id: uuid.UUID | None,
        evidence: dict[str, Any],
    ) -> None:
        self.tally.findings_by_type[finding_type] += 1
        self.count("findings")
        if self.dry_run:
            self.would_be(finding_type, subject, card_id, evidence)
            return
        await self.reporter.finding(
            finding_type=finding_type, subject=subject, card_id=card_id, evidence=evidence
        )
