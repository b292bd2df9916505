"""Pacing for Lightspeed's leaky bucket (`rate-limiting.md`) and its per-endpoint limits."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

import httpx

Sleep = Callable[[float], Awaitable[None]]


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
    ) -> None:
        self.size = size
        self.drip_rate = drip_rate
        self.margin = margin
        self.level = 0.0
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()
        self._sleep = sleep

    def _leak(self) -> None:
        now = time.monotonic()
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
        bucket = headers.get("X-LS-API-Bucket-Level")
        if bucket and "/" in bucket:
            used_text, size_text = bucket.split("/", 1)
            size = header_float(size_text)
            if size:
                self.size = size
            used = header_float(used_text)
            if used is not None:
                self.level = max(self.level, used)

    def retry_after(self, cost: float) -> float:
        self._leak()
        return max(0.0, (self.level + cost - (self.size - self.margin)) / self.drip_rate)


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

    def __init__(self, seconds: float, sleep: Sleep) -> None:
        self.seconds = seconds
        self._next_at = 0.0
        self._lock = asyncio.Lock()
        self._sleep = sleep

    async def wait(self) -> None:
        async with self._lock:
            delay = self._next_at - time.monotonic()
            if delay > 0:
                await self._sleep(delay)
            self._next_at = time.monotonic() + self.seconds


def sale_cost(payment_count: int, *, completed: bool) -> float:
    return 2.0 + (3.0 if completed else 0.0) + 0.5 * payment_count
