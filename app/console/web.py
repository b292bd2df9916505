"""What every console page shares: the signed-in operator, CSRF, templates and redirects.

A console request is signed in by its session cookie (DESIGN 3): a random id, HttpOnly,
SameSite=Strict, Secure whenever giftsync is reached over https (PUBLIC_URL or the request),
so the sandbox works on http://127.0.0.1. Every POST carries the session's CSRF token in its
form (`csrf`); without it the answer is 403 and nothing happens. Like bearer calls, a signed-in
request names its operator and address on `request.state`, so the audit middleware records
every change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.crypto import constant_time_equal
from app.db import console_sessions
from app.db.engine import transaction
from app.money import format_minor
from app.routers.client import client_address

HERE = Path(__file__).resolve().parent
COOKIE = "giftsync_console"
PRE_COOKIE = "giftsync_console_signin"
"""Before a session exists, the sign-in form's CSRF token (double submit)."""
COOKIE_PATH = "/console"
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{20,100}")
_NEXT = re.compile(r"/console(/[A-Za-z0-9/_.-]*)?")

NAV = (
    ("overview", "/console", "Overview"),
    ("findings", "/console/findings", "Findings"),
    ("runs", "/console/runs", "Runs"),
    ("cards", "/console/cards", "Cards"),
    ("settings", "/console/settings", "Settings"),
    ("liability", "/console/liability", "Liability"),
    ("lockouts", "/console/lockouts", "Lockouts"),
)


class SignInRequired(Exception):
    """No live session: the browser is sent to the sign-in page."""


class CsrfRefused(Exception):
    """A POST without its session's CSRF token: 403, nothing done."""


@dataclass(frozen=True)
class Operator:
    name: str
    csrf: str
    address: str


def secure_cookies(request: Request) -> bool:
    public_url = request.app.state.runtime.settings.public_url or ""
    return str(public_url).startswith("https://") or request.url.scheme == "https"


def set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path=COOKIE_PATH,
        secure=secure_cookies(request),
        httponly=True,
        samesite="strict",
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path=COOKIE_PATH, secure=secure_cookies(request), httponly=True, samesite="strict"
    )


async def form_field(request: Request, name: str) -> str | None:
    form = await request.form()
    value = form.get(name)
    return value if isinstance(value, str) else None


async def console_operator(request: Request) -> Operator:
    """The signed-in operator; raises SignInRequired, or CsrfRefused on a POST without CSRF."""
    runtime = request.app.state.runtime
    session_id = request.cookies.get(COOKIE, "")
    found = None
    if _SESSION_ID.fullmatch(session_id):
        async with transaction(runtime.sessions) as session:
            found = await console_sessions.touch(session, session_id)
    if found is None:
        raise SignInRequired()
    address = client_address(request, runtime.settings.trusted_proxies)
    request.state.operator = found.operator
    request.state.client = address
    if request.method not in ("GET", "HEAD"):
        given = await form_field(request, "csrf")
        if given is None or not constant_time_equal(given, found.csrf_token):
            raise CsrfRefused()
    return Operator(found.operator, found.csrf_token, address)


SignedIn = Annotated[Operator, Depends(console_operator)]


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path only, never another site."""
    return value if value is not None and _NEXT.fullmatch(value) else "/console"


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _money(minor: int | None) -> str:
    return "—" if minor is None else format_minor(minor)


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["when"] = _when
templates.env.filters["money"] = _money


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    operator: Operator | None,
    status: int = 200,
) -> HTMLResponse:
    """A console page; never cached (it shows balances and a CSRF token)."""
    page = name.removesuffix(".html")
    response = templates.TemplateResponse(
        request,
        name,
        {"operator": operator, "nav": NAV, "page": page, **context},
        status_code=status,
    )
    response.headers["Cache-Control"] = "no-store"
    return response
