"""`/docs` (Swagger UI) and `/redoc` without internet (issue 17): every asset served by giftsync.

The Swagger UI and Redoc builds come from the `fastapi-offline` package, which ships them as
files; the pages start them with scripts from `app/static`, so the Content-Security-Policy
needs no 'unsafe-inline'. Redoc injects its styles at run time: it is given the request's
nonce (`Redoc.init(..., {nonce})`), which its start script reads from its own tag. Two style
elements are inserted by the bundle as it loads, before any nonce can reach it: their exact
contents are allowed by hash (`REDOC_STYLE_HASHES`, for the pinned fastapi-offline version; the
browser test fails on any CSP violation if a new version changes them).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs/assets"
ASSETS_DIRECTORY = Path(str(importlib.resources.files("fastapi_offline") / "static"))

router = APIRouter(include_in_schema=False)

REDOC_STYLE_HASHES = (
    "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",  # an empty <style>
    "sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc=",  # perfect-scrollbar's stylesheet
)

# Static markup: only the request's nonce (URL-safe base64 of random bytes) is put in.
_SWAGGER = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>giftsync API (Swagger UI)</title>
<link rel="icon" href="{assets}/favicon.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="/static/docs-swagger.js"></script>
</body>
</html>
"""

_REDOC = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>giftsync API (Redoc)</title>
<link rel="icon" href="{assets}/favicon.png">
<link rel="stylesheet" href="/static/docs-redoc.css">
</head>
<body>
<div id="redoc" data-spec-url="{openapi}"></div>
<script src="{assets}/redoc.standalone.js"></script>
<script src="/static/docs-redoc.js" nonce="{nonce}"></script>
</body>
</html>
"""


def _openapi_url(request: Request) -> str:
    return str(request.app.openapi_url or "/openapi.json")


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    return HTMLResponse(_SWAGGER.format(assets=ASSETS_PATH, openapi=_openapi_url(request)))


@router.get("/redoc", response_class=HTMLResponse)
async def redoc(request: Request) -> HTMLResponse:
    nonce = getattr(request.state, "csp_nonce", "")
    request.state.csp_style_hashes = REDOC_STYLE_HASHES
    return HTMLResponse(
        _REDOC.format(assets=ASSETS_PATH, openapi=_openapi_url(request), nonce=nonce)
    )


def install_docs(app: FastAPI) -> None:
    """Serve the two pages and their assets; the app must be made with docs_url=None."""
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIRECTORY), name="docs-assets")
