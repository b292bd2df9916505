"""The console over HTTP: an app on the test runtime, and a browser-like signed-in client."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from app.main import create_app
from app.runtime import Runtime

ADMIN_TOKEN = "test-admin-oua6Df4cIZNy6hMFDLFrsQyJmY2nJnF3"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


async def sign_in(
    client: httpx.AsyncClient, token: str = ADMIN_TOKEN, next_path: str = "/console"
) -> httpx.Response:
    page = await client.get("/console/sign-in")
    assert page.status_code == 200
    return await client.post(
        "/console/sign-in",
        data={"token": token, "csrf": csrf_of(page.text), "next": next_path},
    )


@dataclass
class Console:
    http: httpx.AsyncClient
    csrf: str

    async def post(self, path: str, **form: str) -> httpx.Response:
        return await self.http.post(path, data={"csrf": self.csrf, **form})


@pytest.fixture
async def web(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as client:
        yield client


@pytest.fixture
async def console(web: httpx.AsyncClient) -> Console:
    signed = await sign_in(web)
    assert signed.status_code == 303, signed.text
    overview = await web.get("/console")
    assert overview.status_code == 200, overview.text
    return Console(web, csrf_of(overview.text))
