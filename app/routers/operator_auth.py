"""Operators: who may call `/internal/*` (and the console), failed attempts, the audit log.

An operator is `ADMIN_TOKEN` (named `admin`) or a named token from `giftsync operators add`
(only its hash is stored). Failed attempts are counted per client address, 10 in 15 minutes.
The console's sign-in past the limit is refused whatever the token (DESIGN 3). The bearer API
never refuses a valid token: an address shared behind a NAT or proxy must not let anyone lock
the operators out, and tokens are long and random (settings refuse weak ones), so the limit
there only turns a scanner's wrong tokens into 429s; a missing header is no attempt. Every request that may change
something (not GET/HEAD/OPTIONS) by a signed-in operator is written to the append-only audit
log (who, when, address, action, a hash of the body) before its answer leaves.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.crypto import constant_time_equal
from app.db import operators
from app.logging import get_logger
from app.problems import Problem
from app.routers.client import client_address

log = get_logger(__name__)

ADMIN = "admin"
FAILURE_LIMIT = 10
FAILURE_WINDOW = timedelta(minutes=15)
AUDITED_PREFIXES = ("/internal/", "/console")
_READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})

# auto_error=False: a missing header must become our 401 problem, not FastAPI's own answer.
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <operator token>`")


async def operator_for_token(request: Request, token: str | None, scope: str) -> str:
    """The operator a token names, counting failures per address; raises 401 or 429."""
    runtime = request.app.state.runtime
    address = client_address(request, runtime.settings.trusted_proxies)
    console = scope == "console"
    async with runtime.sessions() as session, session.begin():
        limited = await operators.failures(session, address, FAILURE_WINDOW) >= FAILURE_LIMIT
        if limited and console:
            raise _too_many()
        name = await _name(session, runtime.settings.admin_token, token)
        if name is None and (token or console):
            await operators.record_failure(session, address, scope)
    if name is None:
        log.warning("security_event", event_kind="operator_auth_failed", client=address)
        if limited:
            raise _too_many()
        raise Problem(
            401,
            "unauthorized",
            "A valid operator bearer token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.operator = name
    request.state.client = address
    return name


def _too_many() -> Problem:
    return Problem(
        429,
        "too_many_attempts",
        "Too many failed sign-ins from this address; try again later.",
        headers={"Retry-After": str(int(FAILURE_WINDOW.total_seconds()))},
    )


async def _name(
    session: AsyncSession, admin_token: SecretStr | None, token: str | None
) -> str | None:
    if not token:
        return None
    if admin_token is not None and constant_time_equal(admin_token.get_secret_value(), token):
        return ADMIN
    return await operators.name_for(session, token)


async def require_operator(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    return await operator_for_token(
        request, credentials.credentials if credentials else None, "bearer"
    )


class AuditMiddleware:
    """Writes the audit row for a changing operator request before its answer starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in _READ_ONLY
            or not scope["path"].startswith(AUDITED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        body = bytearray()

        async def receive_and_keep() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        async def audit_then_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                await _audit(scope, message["status"], bytes(body))
            await send(message)

        await self.app(scope, receive_and_keep, audit_then_send)


async def _audit(scope: Scope, status: int, body: bytes) -> None:
    state = scope.get("state") or {}
    operator = state.get("operator")
    if operator is None:
        return  # not signed in: the failure is counted in auth_failures instead
    runtime = scope["app"].state.runtime
    async with runtime.sessions() as session, session.begin():
        await operators.audit(
            session,
            operator=operator,
            address=state.get("client", "unknown"),
            action=f"{scope['method']} {scope['path']}",
            status=status,
            body=body,
        )
