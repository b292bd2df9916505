"""Historical backfill (DESIGN 1.A): every card that exists before omni sync starts crosses once.

Two passes, each offering every card of one system to `OmniSync`, which links it or says why not:
- `to_pos` (DOWNLOAD_SHOPIFY_GIFT_CARDS): every Shopify card, read with one bulk export, goes to
  `OmniSync.export_shopify_card`;
- `to_shopify` (CREATE_UPDATE_SHOPIFY_GIFT_CARDS): every POS card, read page by page, goes to
  `OmniSync.import_pos_card`.

The writes are what takes time (Lightspeed allows about one unit a second, and a card costs ten),
so a bounded number of workers pull cards from a bounded queue: the clients pace themselves to
the upstream limits, the workers keep their buckets busy, and memory stays flat however many
cards there are.

Resuming: a run is a `runs` row and a `backfill.run` job. A pass checkpoints into the row every
`checkpoint_every` cards or `checkpoint_seconds`: its counts, the reasons cards were skipped, and
a watermark, the listing position (card id) up to which every card has been handled. The
listings come sorted by id (Shopify's export by id, Lightspeed by creditAccountID, the OnSite
projection by code hash), so a run that crashed, was killed or lost its worker starts again at
the watermark; the few cards between the watermark and the crash are offered again, which is
safe because links are unique and card identities deterministic (the POS serial is the Shopify
code; the POS serial of a Shopify card is derived from its id), so a retried create finds the
card it made. Such a card may be counted as `already_linked` although this run moved it. If a
listing turns out not to be sorted, the watermark cannot be trusted and the pass counts again
from the start (offering a linked card again costs one database read).

One backfill runs at a time (advisory lock): Shopify allows one bulk export per shop, and two
runs would offer the same cards twice over.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import IO, Any, Protocol, TypeVar, cast, get_args

from app.clients.errors import UpstreamRejected
from app.clients.lightspeed import LightspeedAuthError
from app.clients.onsite import OnSiteAuthError
from app.clients.shopify import ShopifyGiftCard
from app.db.engine import SessionFactory
from app.logging import get_logger
from app.settings import Settings
from app.sync import runs
from app.sync.omni.common import NOTE_MARKER, SHOPIFY, LinkOutcome
from app.sync.omni.flow import OmniSync
from app.sync.omni.links import export_shopify_card, import_pos_card
from app.sync.pos import PosCard
from app.sync.run_reporter import RunReporter
from app.sync.runs import (
    BackfillDirection,
    BackfillParams,
    BackfillRequest,
    DirectionDisabled,
    NoPos,
    RunStatus,
    backfill_plan,
)
from app.worker import RetryLater, run_as_singleton

log = get_logger(__name__)

LOCK_NAME = "backfill"
DEFAULT_CONCURRENCY = 8
CHECKPOINT_EVERY = 100
CHECKPOINT_SECONDS = 5.0
# Staff read these in the report; the full list would grow with the shop.
SKIPPED_CARDS_KEPT = 100
# The upstream refuses everything (a revoked scope, a wrong account): not the cards' fault.
REJECTED_IN_A_ROW_LIMIT = 25
# A card read from the export longer ago than this is read again before it is copied, so the
# POS gets today's balance (an export can be hours old by the time the last card is written).
STALE_AFTER = timedelta(minutes=5)
BUSY_RETRY = timedelta(seconds=30)
FOLLOW_SECONDS = 1.0
_AUTH_CODES = frozenset({"UNAUTHORIZED", "ACCESS_DENIED", "HTTP_401", "HTTP_403"})

SortKey = tuple[int, str]
Item = TypeVar("Item")


class BackfillShopify(Protocol):
    """What the backfill reads from Shopify itself (`app.clients.shopify.ShopifyClient`)."""

    def bulk_export_gift_cards(
        self, *, poll_interval: float = 1.0
    ) -> AsyncIterator[ShopifyGiftCard]: ...

    async def get_gift_card(self, card_id: str) -> ShopifyGiftCard | None: ...


class BackfillBusy(Exception):
    """Another backfill holds the lock; this one waits its turn."""


class BackfillFailed(Exception):
    """The run ended as failed (its error says why)."""


class _OutOfOrder(Exception):
    """A resumed listing is not sorted: skipping to the watermark could skip unhandled cards."""


class _RunEnded(Exception):
    """The run stopped being `running` under us (finished by another holder)."""


def sort_key(external_id: str) -> SortKey:
    """A card's place in its listing: numeric ids by value, hashes by text."""
    tail = external_id.rsplit("/", 1)[-1]
    return (len(tail), tail)


# --- per-pass state: what a checkpoint keeps ---------------------------------------------


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


def _progress_of(state: PassState) -> BackfillProgress:
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


def _totals(passes: dict[BackfillDirection, PassState]) -> dict[str, int]:
    totals = dict.fromkeys(runs.BACKFILL_COUNTS, 0)
    for state in passes.values():
        for name, value in state.counts().items():
            totals[name] += value
    return totals


# --- the Shopify export, spooled ------------------------------------------------------------


class ShopifySnapshot:
    """Every Shopify card from one bulk export, spooled to a temporary file, read back in order.

    Copying a card to Lightspeed takes about ten seconds at its default limits, so reading the
    export as the writes go would hold the download open for days; the file (no codes in it,
    Shopify never exports them) is written at network speed and read one line at a time.
    """

    def __init__(self, spool: IO[str], count: int, taken_at: datetime) -> None:
        self._spool = spool
        self.count = count
        self.taken_at = taken_at

    @classmethod
    async def take(cls, shopify: BackfillShopify, *, poll_interval: float) -> ShopifySnapshot:
        spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (closed by close())
        taken_at = datetime.now(UTC)
        count = 0
        try:
            async for card in shopify.bulk_export_gift_cards(poll_interval=poll_interval):
                spool.write(_card_line(card))
                spool.write("\n")
                count += 1
        except BaseException:
            spool.close()
            raise
        return cls(spool, count, taken_at)

    def cards(self) -> Iterator[ShopifyGiftCard]:
        self._spool.seek(0)
        for line in self._spool:
            if line.strip():
                yield _card_of(line)

    def close(self) -> None:
        self._spool.close()


def _card_line(card: ShopifyGiftCard) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, date | datetime):
            return value.isoformat()
        return value

    return json.dumps({name: plain(getattr(card, name)) for name in _CARD_FIELDS})


_CARD_FIELDS = tuple(ShopifyGiftCard.__dataclass_fields__)


def _card_of(line: str) -> ShopifyGiftCard:
    raw = json.loads(line)

    def moment(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    created_at = moment(raw["created_at"])
    updated_at = moment(raw["updated_at"])
    assert created_at is not None and updated_at is not None
    return ShopifyGiftCard(
        id=raw["id"],
        last_characters=raw["last_characters"],
        balance=Decimal(raw["balance"]),
        currency=raw["currency"],
        initial_value=Decimal(raw["initial_value"]),
        enabled=bool(raw["enabled"]),
        expires_on=date.fromisoformat(raw["expires_on"]) if raw["expires_on"] else None,
        deactivated_at=moment(raw["deactivated_at"]),
        created_at=created_at,
        updated_at=updated_at,
        note=raw["note"],
        customer_id=raw["customer_id"],
        order_id=raw["order_id"],
    )


async def _from_iterator(cards: Iterator[ShopifyGiftCard]) -> AsyncIterator[ShopifyGiftCard]:
    for card in cards:
        yield card


# --- the backfill ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Offered:
    outcome: LinkOutcome
    external_id: str
    last4: str


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
        shopify: BackfillShopify,
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
        totals = _totals(passes)
        log.info("backfill_finished", run_id=str(run_id), **totals)
        return BackfillReport(run_id, "succeeded", totals, passes, plan.disabled)

    async def _checkpoint(self, current: _Run) -> None:
        current.reporter.counts = _totals(current.passes)
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
                return _keyed(_from_iterator(snapshot.cards()), lambda card: card.id)

            async def offer(card: ShopifyGiftCard) -> _Offered:
                outcome = await self._export(card, snapshot.taken_at)
                return _Offered(outcome, card.id, card.last_characters)

            return await self._pass(current, "to_pos", listing, offer)
        finally:
            snapshot.close()

    async def _export(self, card: ShopifyGiftCard, taken_at: datetime) -> LinkOutcome:
        if NOTE_MARKER not in (card.note or "") and datetime.now(UTC) - taken_at > self.stale_after:
            linked = await self.omni.linked_card(SHOPIFY, card.id)
            if linked is not None:
                return LinkOutcome("already_linked", card_id=linked)
            fresh = await self.shopify.get_gift_card(card.id)
            if fresh is None:
                return LinkOutcome("skipped", reason="not_found")
            card = fresh
        return await export_shopify_card(self.omni, card)

    async def _to_shopify(self, current: _Run) -> PassState:
        run_id = current.reporter.run_id

        def listing() -> AsyncIterator[tuple[SortKey, PosCard]]:
            return _keyed(self.omni.pos.iter_cards(), lambda card: card.external_id)

        async def offer(card: PosCard) -> _Offered:
            outcome = await import_pos_card(self.omni, card, run_id=run_id)
            return _Offered(outcome, card.external_id, card.serial[-4:])

        return await self._pass(current, "to_shopify", listing, offer)

    # --- the engine: a bounded queue, N workers, cards counted in listing order ---

    async def _pass(
        self,
        current: _Run,
        direction: BackfillDirection,
        listing: Callable[[], AsyncIterator[tuple[SortKey, Item]]],
        offer: Callable[[Item], Awaitable[_Offered]],
    ) -> PassState:
        state = current.passes[direction]
        if state.processed and not state.ordered:
            # An earlier attempt found the listing unsorted: its watermark proves nothing.
            state = state.restarted()
        while True:
            current.passes[direction] = state
            try:
                await self._stream(current, state, listing, offer)
            except _OutOfOrder:
                log.warning("backfill_listing_unsorted", direction=direction)
                state = state.restarted()
                state.ordered = False
                continue
            state.finished = True
            await self._checkpoint(current)
            if current.progress is not None:
                current.progress(_progress_of(state))
            return state

    async def _stream(
        self,
        current: _Run,
        state: PassState,
        listing: Callable[[], AsyncIterator[tuple[SortKey, Item]]],
        offer: Callable[[Item], Awaitable[_Offered]],
    ) -> None:
        """Offer every card of the listing after the watermark; count them in listing order.

        Workers finish out of order; a card is counted (and the watermark moved past it) only
        once every card before it is, so the watermark never passes a card still in flight.
        """
        skip_through = state.watermark if state.processed else None
        queue: asyncio.Queue[tuple[int, SortKey, Item] | None] = asyncio.Queue(self.concurrency)
        # Cards handed out but not yet counted: bounds memory when one card is slow.
        room = asyncio.Semaphore(self.concurrency * 4)
        finished: dict[int, tuple[SortKey, _Offered]] = {}
        next_to_count = 0
        counted_at_checkpoint = state.processed
        checkpointed_at = time.monotonic()
        saving = asyncio.Lock()
        rejected_in_a_row = 0

        async def produce() -> None:
            previous: SortKey | None = None
            handing_out = False
            sequence = 0
            async for key, item in listing():
                if previous is not None and key < previous:
                    if skip_through is not None:
                        raise _OutOfOrder()
                    state.ordered = False
                previous = key
                if not handing_out and skip_through is not None and key <= skip_through:
                    continue
                handing_out = True
                await room.acquire()
                await queue.put((sequence, key, item))
                sequence += 1
            for _ in range(self.concurrency):
                await queue.put(None)

        async def work() -> None:
            nonlocal rejected_in_a_row
            while (entry := await queue.get()) is not None:
                sequence, key, item = entry
                try:
                    offered = await offer(item)
                    rejected_in_a_row = 0
                except UpstreamRejected as exc:
                    rejected_in_a_row += 1
                    if _is_auth(exc) or rejected_in_a_row >= REJECTED_IN_A_ROW_LIMIT:
                        raise
                    offered = _rejected(item, exc)
                    log.warning(
                        "backfill_card_rejected",
                        direction=state.direction,
                        external_id=offered.external_id,
                        upstream=exc.upstream,
                        code=exc.code,
                    )
                finished[sequence] = (key, offered)
                await count_in_order()

        async def count_in_order() -> None:
            nonlocal next_to_count, counted_at_checkpoint, checkpointed_at
            while next_to_count in finished:
                key, offered = finished.pop(next_to_count)
                state.add(offered.outcome, offered.external_id, offered.last4)
                state.watermark = key
                next_to_count += 1
                room.release()
                if current.progress is not None:
                    current.progress(_progress_of(state))
            due = (
                state.processed - counted_at_checkpoint >= self.checkpoint_every
                or time.monotonic() - checkpointed_at >= self.checkpoint_seconds
            )
            if due and not saving.locked():
                async with saving:
                    counted_at_checkpoint = state.processed
                    checkpointed_at = time.monotonic()
                    await self._checkpoint(current)

        tasks = [asyncio.create_task(produce(), name=f"backfill:{state.direction}:list")]
        tasks += [
            asyncio.create_task(work(), name=f"backfill:{state.direction}:{n}")
            for n in range(self.concurrency)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _keyed(
    items: AsyncIterator[Item], external_id: Callable[[Item], str]
) -> AsyncIterator[tuple[SortKey, Item]]:
    async for item in items:
        yield sort_key(external_id(item)), item


def _is_auth(error: UpstreamRejected) -> bool:
    return isinstance(error, LightspeedAuthError | OnSiteAuthError) or error.code in _AUTH_CODES


def _rejected(item: object, error: UpstreamRejected) -> _Offered:
    reason = f"rejected_by_{error.upstream}:{error.code}"
    if isinstance(item, PosCard):
        return _Offered(LinkOutcome("skipped", reason=reason), item.external_id, item.serial[-4:])
    if isinstance(item, ShopifyGiftCard):
        return _Offered(LinkOutcome("skipped", reason=reason), item.id, item.last_characters)
    raise TypeError(f"not a card: {type(item).__name__}")


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


# --- wiring -----------------------------------------------------------------------------------


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
                progress(_progress_of(state))
            await asyncio.sleep(FOLLOW_SECONDS)
