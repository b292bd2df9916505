"""Per-request upstream wait, measured from outside the app code.

A bench-side ASGI wrapper gives each incoming request a fresh `UpstreamWait` in a ContextVar;
the upstream clients' transports are wrapped in `TimedTransport`, which adds the wall time of
each call (sending, the upstream's work, the answer's last byte) to whatever accumulator the
current context holds. The app runs the whole request in that context (pure ASGI middleware, no
thread hops), so the wait lands on the right request even with fifty in flight. The wrapper
reports the figure back in a response header, so the same numbers come out whether the app is
driven in-process or over HTTP.

A call that first waits for one of the client's pooled connections would count that wait as
upstream time, though it is giftsync's own; bench/_service.py gives each client more connections
than there are shoppers, so no call ever waits for one.
"""

from __future__ import annotations

import os
import time
from contextvars import ContextVar
from dataclasses import dataclass

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPSTREAM_HEADER = "x-bench-upstream-us"
APP_HEADER = "x-bench-app-us"
PID_HEADER = "x-bench-pid"


@dataclass
class UpstreamWait:
    """Seconds one request spent waiting on upstream calls, and how many it made."""

    seconds: float = 0.0
    calls: int = 0


current_wait: ContextVar[UpstreamWait | None] = ContextVar("bench_upstream_wait", default=None)


class TimedTransport(httpx.AsyncBaseTransport):
    """Delegates to `inner`, charging the wall time of each call to the current request.

    Calls are summed, not merged: the checkout flow calls its upstreams one after another, so
    overlap (which would over-count) does not arise there.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        asked = time.perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
            # A socket transport streams the body: read it here, so its arrival is charged to
            # the upstream too.
            await response.aread()
            return response
        finally:
            wait = current_wait.get()
            if wait is not None:
                wait.seconds += time.perf_counter() - asked
                wait.calls += 1

    async def aclose(self) -> None:
        await self._inner.aclose()


class UpstreamTimingMiddleware:
    """Outermost ASGI wrapper: one accumulator per request, reported in response headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Built in each server process, so the header tells which replica answered.
        self._pid = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wait = UpstreamWait()
        token = current_wait.set(wait)
        started = time.perf_counter()

        async def send_with_timing(message: Message) -> None:
            if message["type"] == "http.response.start":
                app_us = int((time.perf_counter() - started) * 1_000_000)
                headers = list(message.get("headers", []))
                headers.append((UPSTREAM_HEADER.encode(), str(int(wait.seconds * 1e6)).encode()))
                headers.append((APP_HEADER.encode(), str(app_us).encode()))
                headers.append((PID_HEADER.encode(), self._pid))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_timing)
        finally:
            current_wait.reset(token)
