"""The backfill run: its passes in order, checkpoints into the run row, one run at a time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast, get_args

from app.clients.shopify import ShopifyClient, ShopifyGiftCard
from app.db.engine import SessionFactory
from app.logging import get_logger
from app.settings import Settings
from app.sync import runs
from app.sync.backfill.cards import Offered, export_from_snapshot
from app.sync.backfill.listing import Item, ShopifySnapshot, from_iterator, keyed
from app.sync.backfill.progress import (
    BackfillProgress,
    BackfillReport,
    PassState,
    ProgressCallback,
    SortKey,
    progress_of,
    totals,
)
from app.sync.backfill.streaming import CardStream, OutOfOrder
from app.sync.omni.flow import OmniSync
from app.sync.omni.links import import_pos_card
from app.sync.pos import PosCard
from app.sync.run_reporter import RunReporter
from app.sync.runs import (
    BackfillDirection,
    BackfillParams,
    BackfillRequest,
    DirectionDisabled,
    NoPos,
    backfill_plan,
)
from app.worker import RetryLater, run_as_singleton

log = get_logger(__name__)

LOCK_NAME = "backfill"
DEFAULT_CONCURRENCY = 8
CHECKPOINT_EVERY = 100
CHECKPOINT_SECONDS = 5.0
# A card read from the export longer ago than this is read again before it is copied, so the
# POS gets today's balance (an export can be hours old by the time the last card is written).
STALE_AFTER = timedelta(minutes=5)
BUSY_RETRY = timedelta(seconds=30)
FOLLOW_SECONDS = 1.0


class BackfillBusy(Exception):
    """Another backfill holds the lock; this one waits its turn."""


class BackfillFailed(Exception):
    """The run ended as failed (its error says why)."""


class _RunEnded(Exception):
    """The run stopped being `running` under us (finished by another holder)."""


@dataclass
class _Run:
    """One attempt at a run: where it checkpoints, what it does, who watches."""

    reporter: RunReporter
    plan: BackfillParams
    passes: dict[BackfillDirection, PassState]
    progress: ProgressCallback | None


class Backfill:
    def __init__(
        self,
        sessions: SessionFactory,
        settings: Settings,
        omni: OmniSync,
        shopify: ShopifyClient,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        bulk_poll_interval: float = 1.0,
        stale_after: timedelta = STALE_AFTER,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.sessions = sessions
        self.settings = settings
        self.omni = omni
        self.shopify = shopify
        self.concurrency = concurrency
        self.checkpoint_every = max(checkpoint_every, 1)
        self.checkpoint_seconds = checkpoint_seconds
        self.bulk_poll_interval = bulk_poll_interval
        self.stale_after = stale_after

    # --- entry points ---

    async def run(
        self,
        run_id: uuid.UUID,
        direction: BackfillRequest | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> BackfillReport:
        """Run (or resume) the backfill run `run_id`; its params name the direction by default.

        Raises BackfillBusy when another backfill is running, NoPos or DirectionDisabled (after
        marking the run failed) when the settings forbid it. Any other error leaves the run
        `running` with its last checkpoint, for the job's next attempt to resume.
        """
        report: BackfillReport | None = None

        async def work() -> None:
            nonlocal report
            report = await self._run(run_id, direction, progress)

        if not await run_as_singleton(self.sessions, LOCK_NAME, work):
            raise BackfillBusy("another backfill is running; this one starts when it ends")
        assert report is not None
        return report

    async def run_job(self, payload: dict[str, Any]) -> None:
        """The `backfill.run` job: a re-claimed job (lease expired) resumes its running run."""
        try:
            await self.run(uuid.UUID(str(payload["run_id"])))
        except BackfillBusy as exc:
            raise RetryLater(str(exc), BUSY_RETRY) from exc
        except (NoPos, DirectionDisabled):
            return  # the run says failed, and why; another attempt cannot help

    # --- one run ---

    async def _run(
        self,
        run_id: uuid.UUID,
        direction: BackfillRequest | None,
        progress: ProgressCallback | None,
    ) -> BackfillReport:
        stored = await _stored_report(self.sessions, run_id, kind_check=True)
        if stored.status in ("succeeded", "failed"):
            return stored  # a job delivered again after its run ended does nothing
        reporter = await RunReporter.begin(self.sessions, run_id)
        if reporter is None:
            return await _stored_report(self.sessions, run_id)
        asked = direction or reporter.params.get("direction")
        if asked not in get_args(BackfillRequest):
            await reporter.fail(f"unknown backfill direction {asked!r}")
            raise ValueError(f"unknown backfill direction {asked!r}")
        try:
            plan = backfill_plan(self.settings, cast(BackfillRequest, asked))
        except NoPos:
            await reporter.fail("backfill needs a POS: POS_KIND is none")
            raise
        except DirectionDisabled as exc:
            await reporter.fail(f"backfill direction switched off: {disabled_message(exc)}")
            raise
        passes = {d: PassState.of(d, reporter.progress.get(d)) for d in plan.directions}
        current = _Run(reporter, plan, passes, progress)
        log.info(
            "backfill_started",
            run_id=str(run_id),
            directions=plan.directions,
            resumed=reporter.resumed,
        )
        try:
            for name in plan.directions:
                if passes[name].finished:
                    continue
                if name == "to_pos":
                    state = await self._to_pos(current)
                else:
                    state = await self._to_shopify(current)
                log.info("backfill_pass_done", run_id=str(run_id), direction=name, **state.counts())
        except _RunEnded:
            return await _stored_report(self.sessions, run_id)
        except Exception:
            # Keep what is done for the next attempt; the error goes to the job, which retries.
            try:
                await self._checkpoint(current)
            except Exception as save_error:
                log.warning("backfill_checkpoint_failed", error=type(save_error).__name__)
            raise
        await self._checkpoint(current)
        await reporter.succeed()
        counts = totals(passes)
        log.info("backfill_finished", run_id=str(run_id), **counts)
        return BackfillReport(run_id, "succeeded", counts, passes, plan.disabled)

    async def _checkpoint(self, current: _Run) -> None:
        current.reporter.counts = totals(current.passes)
        progress: dict[str, Any] = {name: state.to_json() for name, state in current.passes.items()}
        progress["disabled"] = list(current.plan.disabled)
        if not await current.reporter.checkpoint(**progress):
            raise _RunEnded()

    # --- the two passes ---

    async def _to_pos(self, current: _Run) -> PassState:
        snapshot = await ShopifySnapshot.take(self.shopify, poll_interval=self.bulk_poll_interval)
        try:
            current.passes["to_pos"].total = snapshot.count

            def listing() -> AsyncIterator[tuple[SortKey, ShopifyGiftCard]]:
                return keyed(from_iterator(snapshot.cards()), lambda card: card.id)

            async def offer(card: ShopifyGiftCard) -> Offered:
                outcome = await export_from_snapshot(
                    self.omni, card, snapshot.taken_at, self.stale_after
                )
                return Offered(outcome, card.id, card.last_characters)

            return await self._pass(current, "to_pos", listing, offer)
        finally:
            snapshot.close()

    async def _to_shopify(self, current: _Run) -> PassState:
        run_id = current.reporter.run_id

        def listing() -> AsyncIterator[tuple[SortKey, PosCard]]:
            return keyed(self.omni.pos.iter_cards(), lambda card: card.external_id)

        async def offer(card: PosCard) -> Offered:
            outcome = await import_pos_card(self.omni, card, run_id=run_id)
            return Offered(outcome, card.external_id, card.serial[-4:])

        return await self._pass(current, "to_shopify", listing, offer)

    async def _pass(
        self,
        current: _Run,
        direction: BackfillDirection,
        listing: Callable[[], AsyncIterator[tuple[SortKey, Item]]],
        offer: Callable[[Item], Awaitable[Offered]],
    ) -> PassState:
        state = current.passes[direction]
        if state.processed and not state.ordered:
            # An earlier attempt found the listing unsorted: its watermark proves nothing.
            state = state.restarted()
        while True:
            current.passes[direction] = state
            try:
                stream: CardStream[Item] = CardStream(
                    state,
                    concurrency=self.concurrency,
                    checkpoint_every=self.checkpoint_every,
                    checkpoint_seconds=self.checkpoint_seconds,
                    checkpoint=lambda: self._checkpoint(current),
                    progress=current.progress,
                )
                await stream.run(listing, offer)
            except OutOfOrder:
                log.warning("backfill_listing_unsorted", direction=direction)
                state = state.restarted()
                state.ordered = False
                continue
            state.finished = True
            await self._checkpoint(current)
            if current.progress is not None:
                current.progress(progress_of(state))
            return state


def disabled_message(error: DirectionDisabled) -> str:
    settings = {
        "to_pos": "DOWNLOAD_SHOPIFY_GIFT_CARDS",
        "to_shopify": "CREATE_UPDATE_SHOPIFY_GIFT_CARDS",
    }
    return ", ".join(f"{d} ({settings[d]} is off)" for d in error.directions)


async def _stored_report(
    sessions: SessionFactory, run_id: uuid.UUID, *, kind_check: bool = False
) -> BackfillReport:
    view = await runs.get_run(sessions, run_id, findings_limit=0)
    if view is None:
        raise LookupError(f"no run {run_id}")
    if kind_check and view.kind != "backfill":
        raise ValueError(f"run {run_id} is a {view.kind}, not a backfill")
    return BackfillReport.of_run(view)


async def run_or_follow(
    backfill: Backfill,
    sessions: SessionFactory,
    run_id: uuid.UUID,
    progress: Callable[[BackfillProgress], None],
    *,
    on_waiting: Callable[[], None] | None = None,
) -> BackfillReport:
    """Run this run here; if another backfill holds the lock, follow this run until it ends."""
    while True:
        try:
            return await backfill.run(run_id, progress=progress)
        except BackfillBusy:
            stored = await _stored_report(sessions, run_id)
            if stored.status in ("succeeded", "failed"):
                return stored
            if on_waiting is not None:
                on_waiting()
                on_waiting = None
            for state in stored.passes.values():
                progress(progress_of(state))
            await asyncio.sleep(FOLLOW_SECONDS)
