"""Request id binding and request metrics as pure ASGI middleware (no body buffering)."""

from __future__ import annotations

import re
import secrets
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logging import get_logger
from app.metrics import HTTP_LATENCY, HTTP_REQUESTS

_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{8,64}")


def _new_request_id() -> str:
    # Letters mixed in: a hex uuid holds 12+ digits in a row often enough that the log's
    # card-number mask would garble it.
    return secrets.token_urlsafe(12)


log = get_logger("giftsync.http")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        request_id = (
            given.decode("latin-1") if _SAFE_REQUEST_ID.fullmatch(given) else _new_request_id()
        )
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], template).observe(elapsed)
            log.info(
                "http_request",
                method=scope["method"],
                route=template,
                status=status,
                ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()
