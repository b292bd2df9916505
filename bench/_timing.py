"""Per-request upstream wait, measured from outside the app code.

A bench-side ASGI wrapper gives each incoming request a fresh `UpstreamWait` in a ContextVar;
the upstream clients' transports are wrapped in `TimedTransport`, which adds the time spent in
`handle_async_request` to whatever accumulator the current context holds. The app runs the
whole request in that context (pure ASGI middleware, no thread hops), so the wait lands on the
right request even with fifty in flight. The wrapper reports the figure back in a response
header, so the same numbers come out whether the app is driven in-process or over HTTP.

The wait starts when the request leaves for the upstream, not when the client asks its
connection pool for a connection: a request queued for one of the client's pooled connections is
waiting on giftsync, so that time stays in giftsync's own share.
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
# httpcore trace events that mark a request leaving on a connection it already holds: opening
# the connection (an upstream's latency too) or, on a kept-alive one, sending the headers.
_LEAVING = frozenset(
    {
        "connection.connect_tcp.started",
        "connection.connect_unix_socket.started",
        "http11.send_request_headers.started",
        "http2.send_request_headers.started",
    }
)


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
        started: float | None = None
        outer_trace = request.extensions.get("trace")

        async def trace(event: str, info: dict[str, object]) -> None:
            nonlocal started
            if started is None and event in _LEAVING:
                started = time.perf_counter()
            if outer_trace is not None:
                await outer_trace(event, info)

        request.extensions["trace"] = trace
        try:
            response = await self._inner.handle_async_request(request)
            # ASGITransport buffers the body; a socket transport may not, so read it here to
            # charge the body's arrival to the upstream too.
            await response.aread()
            return response
        finally:
            wait = current_wait.get()
            if wait is not None:
                # No trace event: an in-process transport (ASGITransport), which has no pool.
                wait.seconds += time.perf_counter() - (started if started is not None else asked)
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
