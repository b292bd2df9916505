"""Pacing for a cost-based leaky bucket such as Shopify's GraphQL Admin limit.

The bucket estimate is rebuilt from every `throttleStatus` the server reports and shared by all
concurrent callers of one client. Each call reserves its estimated cost before it is sent; the
reservation is held until the answer arrives, so concurrent callers never spend the same points
twice. Until the first answer, the real size of the bucket (and how much other processes have
drawn from it) is unknown, so only one request is let through to learn it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class ThrottleStatus:
    maximum_available: float
    currently_available: float
    restore_rate: float


@dataclass
class Reservation:
    cost: float
    settled: bool = False


class CostBucket:
    """Waits just long enough that the next request will not overdraw the server's bucket."""

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._status: ThrottleStatus | None = None
        self._observed_at = 0.0
        self._reserved = 0.0
        self._probe_in_flight = False
        # Held by the caller at the head of the line, so waiters are served in arrival order.
        self._queue = asyncio.Lock()
        self._changed = asyncio.Event()

    @property
    def status(self) -> ThrottleStatus | None:
        return self._status

    def now(self) -> float:
        """This bucket's clock, on which waits are measured."""
        return self._clock()

    @property
    def reserved(self) -> float:
        return self._reserved

    def available(self) -> float | None:
        """Points the server should have now, minus what in-flight requests have reserved."""
        if self._status is None:
            return None
        elapsed = max(0.0, self._clock() - self._observed_at)
        refilled = min(
            self._status.maximum_available,
            self._status.currently_available + elapsed * self._status.restore_rate,
        )
        return refilled - self._reserved

    def wait_needed(self, cost: float) -> float:
        """Seconds until `cost` points are free (0 when they are now); needs an observation."""
        assert self._status is not None
        available = self.available()
        assert available is not None
        # A request larger than the whole bucket can only ever run on a full one.
        needed = min(cost, self._status.maximum_available)
        # Points are fractional and clocks are floats: a millionth of a point is no overdraft,
        # and waiting for it could spin on float rounding.
        if available >= needed - 1e-6:
            return 0.0
        if self._status.restore_rate <= 0:
            return 1.0
        return (needed - available) / self._status.restore_rate

    async def reserve(self, cost_of: Callable[[], float]) -> Reservation:
        """Wait for room and reserve it; `cost_of` is asked again after every wait, since the
        answer that ends the wait may teach the caller the real cost."""
        async with self._queue:
            while True:
                cost = cost_of()
                self._changed.clear()
                if self._status is None:
                    if not self._probe_in_flight:
                        self._probe_in_flight = True
                        break
                    await self._changed.wait()
                    continue
                delay = self.wait_needed(cost)
                if delay <= 0:
                    break
                await self._sleep_or_wake(delay)
            self._reserved += cost
            return Reservation(cost=cost)

    def settle(self, reservation: Reservation, status: ThrottleStatus | None = None) -> None:
        """End a reservation: the answer arrived (with or without a status) or never will."""
        if not reservation.settled:
            reservation.settled = True
            self._reserved = max(0.0, self._reserved - reservation.cost)
        if status is not None:
            self._status = status
            self._observed_at = self._clock()
        self._probe_in_flight = False
        self._changed.set()

    async def _sleep_or_wake(self, delay: float) -> None:
        """Sleep `delay`, but wake early when an answer settles or reports a fresher bucket."""
        sleeper = asyncio.ensure_future(self._sleep(delay))
        waker = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)

    async def pause(self, seconds: float) -> None:
        """Sleep on this bucket's clock (the server gave no status to compute a wait from)."""
        await self._sleep(seconds)
