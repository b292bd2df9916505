"""Pacing for Lightspeed's two rate limiters and the code look-up's own limit.

`docs/introduction/rate-limiting.md`: a leaky bucket (size 90, drip 1/s, more per licensed
register) and, beside it, a burst limiter on 1-second fixed windows where every request counts
1 against "a fraction of the allowed bucket size" (the page shows 1/20 beside a bucket of 90).
Both are estimated here from the headers every answer carries, and waited for before sending,
so a steady stream never meets a 429. `tutorials/gift-cards.md`: at most 1 code look-up a second.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

import httpx

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

# The burst limit before any answer has told it: rate-limiting.md's 20 for a 90 bucket.
BURST_FRACTION = 20 / 90


class LeakyBucket:
    """Our estimate of Lightspeed's bucket, shared by every caller of one client.

    The estimate counts requests in flight, which the server's header cannot yet know, and is
    only ever raised by what the server says (other registers and processes spend it too).
    """

    def __init__(
        self,
        size: float = 90.0,
        drip_rate: float = 1.0,
        *,
        margin: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self.size = size
        self.drip_rate = drip_rate
        self.margin = margin
        self.level = 0.0
        self._clock = clock
        self._updated = clock()
        self._lock = asyncio.Lock()
        self._sleep = sleep

    def _leak(self) -> None:
        now = self._clock()
        self.level = max(0.0, self.level - (now - self._updated) * self.drip_rate)
        self._updated = now

    async def acquire(self, cost: float) -> None:
        # The lock makes waiters queue in turn, so a burst drains at exactly the drip rate.
        async with self._lock:
            while True:
                self._leak()
                room = self.size - self.margin - self.level
                if cost <= room or self.level == 0.0:
                    self.level += cost
                    return
                await self._sleep((cost - room) / self.drip_rate)

    def observe(self, headers: httpx.Headers, guessed_cost: float) -> None:
        self._leak()
        actual_cost = header_float(headers.get("X-LS-Api-Request-Cost"))
        if actual_cost is not None:
            self.level = max(0.0, self.level + actual_cost - guessed_cost)
        drip = header_float(headers.get("X-LS-API-Drip-Rate"))
        if drip:
            self.drip_rate = drip
        used, size = fraction(headers.get("X-LS-API-Bucket-Level"))
        if size:
            self.size = size
        if used is not None:
            self.level = max(self.level, used)

    def retry_after(self, cost: float) -> float:
        self._leak()
        return max(0.0, (self.level + cost - (self.size - self.margin)) / self.drip_rate)


class BurstWindow:
    """At most `limit - margin` requests in any 1-second span, so none of Lightspeed's fixed
    1-second windows (which we cannot see the edges of) ever holds more than its limit."""

    def __init__(
        self,
        limit: int = round(90 * BURST_FRACTION),
        *,
        margin: int = 1,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self.limit = limit
        self.margin = margin
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()
        self._sleep = sleep
        self._clock = clock

    @property
    def allowed(self) -> int:
        return max(1, self.limit - self.margin)

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                while self._sent and self._sent[0] <= now - 1.0:
                    self._sent.popleft()
                if len(self._sent) < self.allowed:
                    self._sent.append(now)
                    return
                await self._sleep(self._sent[0] + 1.0 - now)

    def observe(self, headers: httpx.Headers) -> None:
        _, limit = fraction(headers.get("X-LS-API-Burst-Level"))
        if limit:
            self.limit = int(limit)


def fraction(raw: str | None) -> tuple[float | None, float | None]:
    """`12/90` -> (12.0, 90.0); what is missing or unreadable is None."""
    if not raw or "/" not in raw:
        return None, None
    used, size = raw.split("/", 1)
    return header_float(used), header_float(size)


def header_float(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class Interval:
    """At most one call per `seconds`: the code lookup has its own 1 request/s limit."""

    def __init__(self, seconds: float, sleep: Sleep, clock: Clock = time.monotonic) -> None:
        self.seconds = seconds
        self._next_at = 0.0
        self._lock = asyncio.Lock()
        self._sleep = sleep
        self._clock = clock

    async def wait(self) -> None:
        async with self._lock:
            delay = self._next_at - self._clock()
            if delay > 0:
                await self._sleep(delay)
            self._next_at = self._clock() + self.seconds


def sale_cost(nested: int, *, completed: bool) -> float:
    """sale.md: a Sale POST costs 2, +3 with `completed`; rate-limiting.md: +0.5 for each
    nested entity (SaleLine, SalePayment) in the payload."""
    return 2.0 + (3.0 if completed else 0.0) + 0.5 * nested


def query_relations_cost(to_many: int, to_one: int = 0) -> float:
    """relations.md: +0.2 per X-to-many and +0.1 per X-to-one relation, doubled on a query."""
    return 2 * (0.2 * to_many + 0.1 * to_one)
