"""The reconciler: its entry points (run, jobs, schedule) and the order of a run's phases."""

from __future__ import annotations

import contextlib
import time
import uuid
from datetime import timedelta
from typing import Any

from app.clients.errors import UpstreamRejected
from app.clients.shopify import ShopifyNotFound
from app.db import findings
from app.db import reconcile_snapshot as snapshot
from app.db import runs as runs_db
from app.db.engine import SessionFactory, autocommit_connection, transaction
from app.db.locks import lock_for_transaction
from app.logging import get_logger
from app.metrics import (
    RECONCILE_CARDS_CHECKED,
    RECONCILE_CARDS_IN_SYNC,
    RECONCILE_CARDS_REPAIRED,
    RECONCILE_DRIFT_MINOR,
    RECONCILE_FINDINGS,
    RECONCILE_RUN_SECONDS,
)
from app.sync import runs
from app.sync.findings import record_finding, resolve_findings_not_seen
from app.sync.reconcile.common import (
    OMNI_FINDINGS,
    RUN_LOCK,
    SHADOW_FINDINGS,
    Execution,
    ProgressCallback,
    ReconcileDeps,
    RunEnded,
    Tally,
    error_text,
)
from app.sync.reconcile.omni_cards import check_omni_cards
from app.sync.reconcile.shadow_cards import check_shadow_cards
from app.sync.reconcile.snapshot import capture, read_cards, read_everything
from app.sync.reconcile.unlinked import check_unlinked
from app.sync.run_reporter import RunReporter
from app.sync.runs import ReconcileParams
from app.worker import RetryLater, run_as_singleton

log = get_logger(__name__)


class Reconciler(ReconcileDeps):
    async def run(
        self, run_id: uuid.UUID | str, *, progress: ProgressCallback | None = None
    ) -> dict[str, int]:
        """Execute (or resume) the run; its params (`dry_run`, `card_ids`) are the run row's.

        Returns the run's counts. A run that has already finished is not run again.
        """
        reporter = await RunReporter.begin(self.sessions, run_id)
        if reporter is None:
            return await _stored_counts(self.sessions, run_id)
        params = ReconcileParams.of(reporter.params)
        mode = "dry_run" if params.dry_run else "repair"
        started = time.monotonic()
        before = dict(reporter.counts)
        execution = Execution(self, reporter, params, progress)
        try:
            await _execute(execution)
        except RunEnded:
            # Finished by another execution meanwhile (this one had lost its job's lease).
            return await _stored_counts(self.sessions, reporter.run_id)
        await reporter.succeed()
        RECONCILE_RUN_SECONDS.labels(mode=mode).observe(time.monotonic() - started)
        _count_metrics(mode, before, reporter.counts, execution.tally)
        log.info(
            "reconcile_finished",
            run_id=str(reporter.run_id),
            dry_run=params.dry_run,
            **reporter.counts,
            drift_minor=execution.tally.drift_minor,
        )
        return dict(reporter.counts)

    async def run_job(self, payload: dict[str, Any]) -> None:
        """Job `reconcile.run`: one run at a time; a second waits for the first to finish."""

        async def work() -> None:
            await self.run(payload["run_id"])

        if not await run_as_singleton(self.sessions, RUN_LOCK, work):
            raise RetryLater("another reconcile run is executing", timedelta(seconds=30))

    async def run_deactivate(self, payload: dict[str, Any]) -> None:
        """Job: deactivate an orphaned shadow card in Shopify (irreversible, so only this)."""
        shopify_id = payload["shopify_id"]
        try:
            await self.shopify.deactivate_gift_card(shopify_id)
        except ShopifyNotFound:
            return
        except UpstreamRejected as exc:
            async with transaction(self.sessions) as session:
                await record_finding(
                    session,
                    payload["run_id"],
                    finding_type="unrepairable",
                    subject=payload["subject"],
                    card_id=payload.get("card_id"),
                    evidence={
                        "repair": "deactivate the Shopify card",
                        "shopify_id": shopify_id,
                        "error": error_text(exc),
                    },
                )
            return
        log.info("reconcile_shadow_deactivated", shopify_id=shopify_id)

    async def schedule(self) -> None:
        """Periodic: queue a full run when none ran within RECONCILE_INTERVAL."""
        await schedule_run(self.sessions, self.settings.reconcile_interval)


async def schedule_run(sessions: SessionFactory, interval: timedelta) -> uuid.UUID | None:
    """Start a full reconcile unless one was started within `interval` or is still under way.

    The database decides, so any number of workers, each with its own timer, start one run per
    interval between them. A run whose job died does not count as under way.
    """
    async with transaction(sessions) as session:
        await lock_for_transaction(session, "reconcile-schedule")
        if await runs_db.full_reconcile_under_way(session, interval):
            return None
        params = ReconcileParams(dry_run=False, card_ids=None).to_json()
        run_id = await runs.start_run_in(session, "reconcile", {**params, "scheduled": True})
    log.info("reconcile_scheduled", run_id=str(run_id))
    return run_id


async def _stored_counts(sessions: SessionFactory, run_id: uuid.UUID | str) -> dict[str, int]:
    async with sessions() as session:
        counts = await runs_db.counts_of(session, run_id)
    return {name: int(value) for name, value in (counts or {}).items()}


def _count_metrics(mode: str, before: dict[str, int], after: dict[str, int], tally: Tally) -> None:
    """Metrics count what this execution added (a resumed run already counted the rest)."""

    def added(name: str) -> int:
        return max(after.get(name, 0) - before.get(name, 0), 0)

    RECONCILE_CARDS_CHECKED.labels(mode=mode).inc(added("checked"))
    RECONCILE_CARDS_IN_SYNC.labels(mode=mode).inc(added("in_sync"))
    RECONCILE_CARDS_REPAIRED.labels(mode=mode).inc(added("repaired"))
    RECONCILE_DRIFT_MINOR.labels(mode=mode).inc(tally.drift_minor)
    for finding_type, count in (tally.findings_by_type - tally.findings_before).items():
        RECONCILE_FINDINGS.labels(type=finding_type, mode=mode).inc(count)


async def _execute(ex: Execution) -> None:
    """The phases in order; a resumed run skips the ones its checkpoints say are done."""
    # Temporary tables live as long as the connection; each statement commits alone.
    async with autocommit_connection(ex.r.sessions) as conn:
        try:
            await ex.timed("capture", capture(ex, conn))
            if ex.full:
                await ex.timed("read", read_everything(ex, conn))
            else:
                await ex.timed("read", read_cards(ex, conn))
            if ex.omni is not None and "cards" not in ex.phases_done:
                await ex.timed("cards", check_omni_cards(ex, conn))
                await ex.phase_done("cards")
            if "shadow" not in ex.phases_done:
                await ex.timed("shadow", check_shadow_cards(ex, conn))
                await ex.phase_done("shadow")
            if ex.full and "unlinked" not in ex.phases_done:
                await ex.timed("unlinked", check_unlinked(ex, conn))
                await ex.phase_done("unlinked")
            if not ex.dry_run:
                await ex.timed("resolve", _resolve(ex))
        finally:
            with contextlib.suppress(Exception):
                await snapshot.discard(conn)


async def _resolve(ex: Execution) -> None:
    """Phase 6: resolve the open findings this run judges and no longer saw."""
    unchecked = sorted(set(ex.tally.unchecked))
    async with transaction(ex.r.sessions) as session:
        if unchecked:
            # Not looked at this time (moves in flight, upstream error): still open.
            await findings.still_seen_by(session, ex.run_id, unchecked)
        card_types = SHADOW_FINDINGS + (OMNI_FINDINGS if ex.omni is not None else ())
        resolved = await resolve_findings_not_seen(
            session,
            ex.run_id,
            finding_types=card_types,
            card_ids=ex.params.card_ids,
            subject_prefix="card:",
        )
        if ex.full:
            unlinked_types = ("orphan_shadow_card",) + (
                ("missing_link",) if ex.omni is not None else ()
            )
            resolved += await resolve_findings_not_seen(
                session,
                ex.run_id,
                finding_types=unlinked_types,
                subject_prefix="unlinked:",
            )
    if resolved:
        log.info("reconcile_findings_resolved", run_id=str(ex.run_id), count=resolved)
    await ex.checkpoint(resolved=resolved)
