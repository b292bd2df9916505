"""How many HTTP requests this process is answering, so that its background work can give way.

Shopify waits 5 s for a webhook's acknowledgement and a shopper waits on `/check-balance`; a
queued job can wait. On a busy machine the worker in the same process would otherwise take its
turn on the event loop between every step of those requests. So the worker starts its next job
only once no request is in flight, or after a bounded wait, so that a steady stream of requests
slows the jobs down but never stalls them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class RequestActivity:
    def __init__(self) -> None:
        self.in_flight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

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
                self._quiet.set()

    async def quiet(self, at_most: float) -> bool:
        """Wait until no request is in flight, for at most `at_most` seconds; True if it was."""
        if self.in_flight == 0:
            return True
        try:
            async with asyncio.timeout(at_most):
                await self._quiet.wait()
        except TimeoutError:
            return False
        return True
