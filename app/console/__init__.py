"""The operator console at `/console` (issue 17, DESIGN 3): server-rendered pages (Jinja2), one
small stylesheet and one small script served by giftsync itself, no build step, no CDN.

Every page works without JavaScript; the script only adds live progress on a run's page.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from app.console import merchant_pages, pages, signin, work_pages
from app.console.web import HERE, CsrfRefused, SignInRequired, render, see_other

STATIC_PATH = "/console/static"


async def _sign_in_first(request: Request, exc: Exception) -> Response:
    if request.method != "GET":
        return see_other("/console/sign-in")
    return see_other(f"/console/sign-in?next={quote(request.url.path, safe='/')}")


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    return render(
        request,
        "refused.html",
        {"reason": "This form did not carry the console's token. Reload the page and try again."},
        operator=None,
        status=403,
    )


def install_console(app: FastAPI) -> None:
    for module in (signin, pages, work_pages, merchant_pages):
        app.include_router(module.router)
    app.mount(STATIC_PATH, StaticFiles(directory=HERE / "static"), name="console-static")
    app.add_exception_handler(SignInRequired, _sign_in_first)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
