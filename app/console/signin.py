"""Signing in to the console with an operator token, and signing out (DESIGN 3).

Sign-in goes through `operator_for_token`, the same check (and the same count of failures per
address: 10 in 15 minutes, then 429) as a bearer call. The sign-in form has no session yet, so
its CSRF token is a double submit: a random value in a cookie and in the form.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.console.web import (
    COOKIE,
    PRE_COOKIE,
    SignedIn,
    clear_cookie,
    form_field,
    render,
    safe_next,
    see_other,
    set_cookie,
)
from app.crypto import constant_time_equal
from app.db import console_sessions
from app.db.engine import transaction
from app.problems import Problem
from app.routers.operator_auth import operator_for_token

router = APIRouter(prefix="/console", include_in_schema=False)

_MESSAGES = {
    401: "That token is not an operator token.",
    429: "Too many failed sign-ins from this address. Try again in 15 minutes.",
}


def _sign_in_page(
    request: Request, next_path: str, *, error: str | None = None, status: int = 200
) -> HTMLResponse:
    pre = secrets.token_urlsafe(32)
    signed_out = request.query_params.get("signed_out") == "1"
    response = render(
        request,
        "sign_in.html",
        {"pre": pre, "next": next_path, "error": error, "signed_out": signed_out},
        operator=None,
        status=status,
    )
    set_cookie(request, response, PRE_COOKIE, pre)
    return response


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(
    request: Request, next: Annotated[str | None, Query(max_length=200)] = None
) -> HTMLResponse:
    return _sign_in_page(request, safe_next(next))


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    given = await form_field(request, "csrf")
    expected = request.cookies.get(PRE_COOKIE)
    next_path = safe_next(await form_field(request, "next"))
    if not given or not expected or not constant_time_equal(given, expected):
        return render(
            request,
            "refused.html",
            {"reason": "This sign-in form has expired. Open the sign-in page again."},
            operator=None,
            status=403,
        )
    token = (await form_field(request, "token") or "").strip()
    try:
        name = await operator_for_token(request, token[:512], "console")
    except Problem as problem:
        page = _sign_in_page(
            request,
            next_path,
            error=_MESSAGES.get(problem.status, problem.detail),
            status=problem.status,
        )
        for header, value in problem.headers.items():
            if header.lower() == "retry-after":
                page.headers[header] = value
        return page
    runtime = request.app.state.runtime
    async with transaction(runtime.sessions) as session:
        session_id, _ = await console_sessions.create(
            session, operator=name, address=request.state.client
        )
    response = see_other(next_path)
    set_cookie(request, response, COOKIE, session_id)
    clear_cookie(request, response, PRE_COOKIE)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, operator: SignedIn) -> Response:
    session_id = request.cookies.get(COOKIE, "")
    async with transaction(request.app.state.runtime.sessions) as session:
        await console_sessions.delete(session, session_id)
    response = see_other("/console/sign-in?signed_out=1")
    clear_cookie(request, response, COOKIE)
    return response
