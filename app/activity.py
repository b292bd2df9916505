"""How busy this process is with HTTP requests, so that its background work can make room.

Shopify waits 5 s for a webhook's acknowledgement and a shopper waits on `/check-balance`; a
queued job can wait a little, but must not fall behind for good. The worker in the same
process shares one event loop with the requests, so it always runs one job at a time and adds
its other job loops only when there is room: no request for a moment, or this process using
less than a set share of its core. A burst of requests then slows the jobs to one at a time,
while steady traffic that leaves CPU to spare still gets every job loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

CPU_WINDOW_S = 0.25
"""How far back the process's CPU share is measured."""


class RequestActivity:
    def __init__(self) -> None:
        self.in_flight = 0
        self._quiet_since = time.monotonic()
        self._window_start = (time.monotonic(), time.process_time())
        self._cpu_share = 0.0

    @contextmanager
    def request(self) -> Iterator[None]:
        """Counts one request in flight for the duration of the block."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._quiet_since = time.monotonic()

    def settled(self, for_at_least: float) -> bool:
        """No request in flight, and none for `for_at_least` seconds."""
        return self.in_flight == 0 and time.monotonic() - self._quiet_since >= for_at_least

    def cpu_share(self) -> float:
        """The share of one core this process used over the last completed window."""
        wall_at, cpu_at = self._window_start
        now = time.monotonic()
        if now - wall_at >= CPU_WINDOW_S:
            cpu_now = time.process_time()
            self._cpu_share = (cpu_now - cpu_at) / (now - wall_at)
            self._window_start = (now, cpu_now)
        return self._cpu_share

    async def room(self, at_most: float, *, settled_for: float, cpu_below: float) -> bool:
        """Wait, for at most `at_most` seconds, until requests have settled for `settled_for`
        seconds or the process uses less than `cpu_below` of its core; True if that happened."""
        deadline = time.monotonic() + at_most
        while not (self.settled(settled_for) or self.cpu_share() < cpu_below):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(left, CPU_WINDOW_S / 2))
        return True
