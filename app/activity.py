"""How many HTTP requests this process is answering, so that its background work can give way.

Shopify waits 5 s for a webhook's acknowledgement and a shopper waits on `/check-balance`; a
queued job can wait. On a busy machine the worker in the same process would otherwise take its
turn on the event loop between every step of those requests. So while requests keep coming the
worker runs one job at a time, each started only once no request is in flight; its other job
loops join in once requests have stopped for a moment. Every wait is bounded, so a steady stream
of requests slows the jobs down but never stalls them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager


class RequestActivity:
    def __init__(self) -> None:
        self.in_flight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._quiet_since = time.monotonic()

    @contextmanager
    def request(self) -> Iterator[None]:
        """Counts one request in flight for the duration of the block."""
        self.in_flight += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._quiet_since = time.monotonic()
                self._quiet.set()

    async def quiet(self, at_most: float, *, settled_for: float = 0.0) -> bool:
        """Wait until no request has been in flight for `settled_for` seconds, for at most
        `at_most` seconds; True if that happened, False if the wait ran out."""
        deadline = time.monotonic() + at_most
        while True:
            now = time.monotonic()
            if self.in_flight == 0 and now - self._quiet_since >= settled_for:
                return True
            if now >= deadline:
                return False
            if self.in_flight == 0:
                await asyncio.sleep(min(deadline, self._quiet_since + settled_for) - now)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(deadline - now):
                        await self._quiet.wait()
