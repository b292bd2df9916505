"""The engine of a backfill pass: a bounded queue, N workers, cards counted in listing order.

Workers finish out of order; a card is counted (and the watermark moved past it) only once
every card before it is, so the watermark never passes a card still in flight, and a pass
resumed at the watermark skips no card.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic

from app.clients.errors import UpstreamRejected
from app.logging import get_logger
from app.sync.backfill.cards import REJECTED_IN_A_ROW_LIMIT, Offered, is_auth, rejected
from app.sync.backfill.listing import Item
from app.sync.backfill.progress import PassState, ProgressCallback, SortKey, progress_of

log = get_logger(__name__)

Listing = Callable[[], AsyncIterator[tuple[SortKey, Item]]]
Offer = Callable[[Item], Awaitable[Offered]]


class OutOfOrder(Exception):
    """A resumed listing is not sorted: skipping to the watermark could skip unhandled cards."""


class CardStream(Generic[Item]):
    """One walk through a listing; `checkpoint` saves the pass state, `progress` hears of
    every card counted."""

    def __init__(
        self,
        state: PassState,
        *,
        concurrency: int,
        checkpoint_every: int,
        checkpoint_seconds: float,
        checkpoint: Callable[[], Awaitable[None]],
        progress: ProgressCallback | None,
    ) -> None:
        self.state = state
        self.concurrency = concurrency
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self._checkpoint = checkpoint
        self._progress = progress
        self._queue: asyncio.Queue[tuple[int, SortKey, Item] | None] = asyncio.Queue(concurrency)
        # Cards handed out but not yet counted: bounds memory when one card is slow.
        self._room = asyncio.Semaphore(concurrency * 4)
        self._finished: dict[int, tuple[SortKey, Offered]] = {}
        self._next_to_count = 0
        self._counted_at_checkpoint = state.processed
        self._checkpointed_at = time.monotonic()
        self._saving = asyncio.Lock()
        self._rejected_in_a_row = 0

    async def run(self, listing: Listing[Item], offer: Offer[Item]) -> None:
        """Offer every card of the listing after the watermark; count them in listing order."""
        skip_through = self.state.watermark if self.state.processed else None
        direction = self.state.direction
        tasks = [
            asyncio.create_task(
                self._produce(listing, skip_through), name=f"backfill:{direction}:list"
            )
        ]
        tasks += [
            asyncio.create_task(self._work(offer), name=f"backfill:{direction}:{n}")
            for n in range(self.concurrency)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _produce(self, listing: Listing[Item], skip_through: SortKey | None) -> None:
        previous: SortKey | None = None
        handing_out = False
        sequence = 0
        async for key, item in listing():
            if previous is not None and key < previous:
                if skip_through is not None:
                    raise OutOfOrder()
                self.state.ordered = False
            previous = key
            if not handing_out and skip_through is not None and key <= skip_through:
                continue
            handing_out = True
            await self._room.acquire()
            await self._queue.put((sequence, key, item))
            sequence += 1
        for _ in range(self.concurrency):
            await self._queue.put(None)

    async def _work(self, offer: Offer[Item]) -> None:
        while (entry := await self._queue.get()) is not None:
            sequence, key, item = entry
            try:
                offered = await offer(item)
                self._rejected_in_a_row = 0
            except UpstreamRejected as exc:
                self._rejected_in_a_row += 1
                if is_auth(exc) or self._rejected_in_a_row >= REJECTED_IN_A_ROW_LIMIT:
                    raise
                offered = rejected(item, exc)
                log.warning(
                    "backfill_card_rejected",
                    direction=self.state.direction,
                    external_id=offered.external_id,
                    upstream=exc.upstream,
                    code=exc.code,
                )
            self._finished[sequence] = (key, offered)
            await self._count_in_order()

    async def _count_in_order(self) -> None:
        state = self.state
        while self._next_to_count in self._finished:
            key, offered = self._finished.pop(self._next_to_count)
            state.add(offered.outcome, offered.external_id, offered.last4)
            state.watermark = key
            self._next_to_count += 1
            self._room.release()
            if self._progress is not None:
                self._progress(progress_of(state))
        due = (
            state.processed - self._counted_at_checkpoint >= self.checkpoint_every
            or time.monotonic() - self._checkpointed_at >= self.checkpoint_seconds
        )
        if due and not self._saving.locked():
            async with self._saving:
                self._counted_at_checkpoint = state.processed
                self._checkpointed_at = time.monotonic()
                await self._checkpoint()
