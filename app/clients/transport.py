"""The HTTP transport under every upstream client: httpx's API over aiohttp's connection pool.

The clients are written against httpx (requests, responses, timeouts, respx in tests); only the
bytes on the wire go through aiohttp. httpx's own transport (httpcore on anyio, h11 in pure
Python) cost about 0.7 ms of CPU per call more than aiohttp's C parser, on a checkout request
whose own share of the latency is a few milliseconds and that makes up to three upstream calls.

The rule that matters for money is how failures are reported, because the clients decide from
the exception type whether a write may be resent:
- "not sent" (`httpx.ConnectError`, `httpx.ConnectTimeout`): only when no connection was handed
  over to the request (refused, DNS, TLS handshake, waiting for a pooled connection);
- everything after that (reset, server gone, silence, a broken answer) is a lost answer
  (`httpx.ReadError`, `httpx.ReadTimeout`, `httpx.RemoteProtocolError`), which a client turns
  into an unknown outcome for a write, never into a blind resend.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator

import aiohttp
import httpx
from yarl import URL

DEFAULT_LIMITS = httpx.Limits(max_connections=20, keepalive_expiry=5.0)
# httpx already chose these headers (or chose to leave them out); aiohttp must not add its own.
_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")


def _lost_answer(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """What a failure after the request was handed to a connection becomes."""
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(f"no answer in time: {type(exc).__name__}", request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(
            f"the server broke off the exchange: {type(exc).__name__}", request=request
        )
    return httpx.ReadError(f"the connection failed: {type(exc).__name__}", request=request)


def _as_httpx_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """Map an aiohttp failure raised while sending or waiting for the status line."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(f"could not connect: {type(exc).__name__}", request=request)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout("no connection in time", request=request)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(f"cannot request {request.url}", request=request)
    return _lost_answer(exc, request)


class _ResponseBody(httpx.AsyncByteStream):
    """The answer's body as it arrives; the connection goes back to the pool once read."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request
        self._finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._response.close()
            raise _lost_answer(exc, self._request) from exc
        except BaseException:
            # Cancelled (a caller's deadline) or abandoned mid-body: the connection cannot be
            # reused, and must not stay counted against the pool's limit.
            self._response.close()
            raise
        self._finished = True

    async def aclose(self) -> None:
        if self._finished:
            self._response.release()
        else:
            # A body left half read would corrupt the next exchange on this connection.
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session per event loop, created on first use (aiohttp binds to a loop)."""

    def __init__(
        self, *, limits: httpx.Limits = DEFAULT_LIMITS, verify: bool | ssl.SSLContext = True
    ) -> None:
        self._max_connections = limits.max_connections or 0
        self._keepalive_s = limits.keepalive_expiry or 0.0
        self._ssl: ssl.SSLContext | bool = (
            verify
            if isinstance(verify, ssl.SSLContext)
            else (httpx.create_ssl_context(verify=True) if verify else False)
        )
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # HTTP(S)_PROXY and NO_PROXY, as httpx's own transport honoured them, read once.
        # (aiohttp's `trust_env` would read them, and ~/.netrc, in a thread on every request.)
        self._proxies = urllib.request.getproxies_environment()

    def _proxy_for(self, url: httpx.URL) -> str | None:
        if not self._proxies:
            return None  # the usual case: nothing configured, nothing to look up per request
        proxy = self._proxies.get(url.scheme)
        if proxy is None or urllib.request.proxy_bypass(url.host):
            return None
        return proxy

    def _current_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_s,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # httpx keeps the cookies (OnSite's session) and decodes gzip itself.
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=_AUTO_HEADERS,
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._loop = loop
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._current_session()
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        try:
            response = await session.request(
                request.method,
                URL(str(request.url), encoded=True),
                # As httpx spelled them (its `multi_items` would lower-case the names).
                headers=[
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                ],
                data=body or None,
                allow_redirects=False,
                proxy=self._proxy_for(request.url),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    # aiohttp's `connect` spans waiting for a pooled connection and opening one.
                    connect=timeouts.get("pool"),
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _as_httpx_error(exc, request) from exc
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("ascii", "replace")
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_ResponseBody(response, request),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
