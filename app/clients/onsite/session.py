"""The one OnSite session a client keeps for its life (the `LS_SERVER_SESSION_ID` cookie).

Each request without the cookie opens a new session, and every session holds a seat until the
server restarts: so requests go one at a time until the first answer sets it, a session the
server forgot is replaced once, and closing logs out.
"""

from __future__ import annotations

import asyncio

import httpx

from app.clients.delivery import transmit
from app.clients.onsite.wire import LOGOUT_PATH, SESSION_COOKIE
from app.logging import get_logger

log = get_logger(__name__)

Params = dict[str, str | int]


class OnSiteSession:
    def __init__(self, http: httpx.AsyncClient, *, timeout: float) -> None:
        self._http = http
        self._timeout = timeout
        self._login_lock = asyncio.Lock()
        self._closed = False

    @property
    def active(self) -> bool:
        return self._cookie() is not None

    def _cookie(self) -> str | None:
        for cookie in self._http.cookies.jar:
            if cookie.name == SESSION_COOKIE:
                return cookie.value
        return None

    def _forget(self, refused: str | None = None) -> None:
        """Drops the cookie; with `refused`, only if no concurrent call has replaced it yet."""
        for cookie in list(self._http.cookies.jar):
            if cookie.name == SESSION_COOKIE and refused in (None, cookie.value):
                self._http.cookies.jar.clear(cookie.domain, cookie.path, cookie.name)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """One exchange, logged in again once if the server has forgotten our session (its
        401 refused the request, so sending it again is safe for a write too)."""
        sent_session = self._cookie()
        response = await self._exchange(method, path, params, content)
        if response.status_code == 401 and sent_session is not None:
            log.info("onsite_session_expired_relogin")
            self._forget(sent_session)
            response = await self._exchange(method, path, params, content)
        return response

    async def _exchange(
        self, method: str, path: str, params: Params | None, content: bytes | None
    ) -> httpx.Response:
        if self.active:
            return await self._send(method, path, params, content)
        async with self._login_lock:
            return await self._send(method, path, params, content)

    async def _send(
        self, method: str, path: str, params: Params | None, content: bytes | None
    ) -> httpx.Response:
        headers = {"Content-Type": "application/xml"} if content is not None else None
        response = await transmit(
            self._http.request(method, path, params=params, content=content, headers=headers),
            deadline=self._timeout,
        )
        log.debug("onsite_request", method=method, path=path, status=response.status_code)
        return response

    async def close(self) -> None:
        """Log out so the session's seat is freed now rather than at the next server restart."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.active:
                try:
                    async with asyncio.timeout(self._timeout):
                        response = await self._http.post(LOGOUT_PATH)
                    if response.status_code >= 400:
                        log.warning("onsite_logout_refused", status=response.status_code)
                except (httpx.HTTPError, TimeoutError) as exc:
                    log.warning("onsite_logout_failed", error=type(exc).__name__)
                self._forget()
        finally:
            await self._http.aclose()
