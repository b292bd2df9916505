"""Lightspeed R-Series on the wire: one paced, authorised request at a time.

The base of `LightspeedClient`: the OAuth token (`oauth`), both rate limiters (`pacing`), the
shared delivery policy for what a failure means, cursor paging and Lightspeed's refusals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from app.clients.delivery import (
    AnswerLost,
    Delivery,
    NotSent,
    check_status,
    new_http_client,
    retry_after,
    transmit,
)
from app.clients.lightspeed.errors import (
    UPSTREAM,
    LightspeedAuthError,
    LightspeedError,
    LightspeedUnavailable,
    LightspeedUnknownOutcome,
)
from app.clients.lightspeed.models import as_list
from app.clients.lightspeed.oauth import TokenKeeper
from app.clients.lightspeed.pacing import BurstWindow, Clock, LeakyBucket, Sleep
from app.clients.lightspeed.setup import LightspeedSetupError
from app.db.tokens import TokenStore
from app.logging import get_logger, mask_text

T = TypeVar("T")

log = get_logger(__name__)

PAGE_LIMIT = 100
MAX_THROTTLE_RETRIES = 6
READ_ATTEMPTS = 4
# What an answer that says it did the work but cannot be read raises while being read.
_UNREADABLE = (LookupError, TypeError, ValueError, ArithmeticError, LightspeedUnavailable)


class LightspeedWire:
    def __init__(
        self,
        account_id: str,
        client_id: str,
        client_secret: str,
        token_store: TokenStore,
        *,
        initial_refresh_token: str | None,
        base_url: str,
        token_url: str,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = time.time,
        sleep: Sleep | None = None,
    ) -> None:
        self._account_id = account_id
        self._api_root = f"{base_url.rstrip('/')}/API/V3/Account/{account_id}"
        self._timeout = timeout
        self._http = new_http_client(
            timeout=timeout, transport=transport, headers={"Accept": "application/json"}
        )
        self._clock = clock
        self._sleep: Sleep = sleep or asyncio.sleep
        self.bucket = LeakyBucket(sleep=self._sleep_hook, clock=clock)
        self.burst = BurstWindow(sleep=self._sleep_hook, clock=clock)
        self._delivery = Delivery(
            UPSTREAM,
            LightspeedUnavailable,
            LightspeedUnknownOutcome,
            attempts=READ_ATTEMPTS,
            sleep=self._sleep_hook,
        )
        self._tokens = TokenKeeper(
            token_store,
            initial_refresh_token=initial_refresh_token,
            client_id=client_id,
            client_secret=client_secret,
            token_url=token_url,
            http=self._http,
            timeout=timeout,
            delivery=self._delivery,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _sleep_hook(self, seconds: float) -> None:
        # Looked up at call time so tests can swap `_sleep` after construction.
        await self._sleep(seconds)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _paged(
        self,
        resource: str,
        params: dict[str, str],
        key: str,
        *,
        extra_cost: float = 0.0,
        one_page: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item once: a record changed while the pages are read moves behind the cursor
        and shows up again, so items are de-duplicated by their primary `key`."""
        url: str | None = f"{self._api_root}/{resource}.json"
        query: dict[str, str] | None = {**params, "limit": str(PAGE_LIMIT)}
        seen: set[str] = set()
        while url:
            body = await self._read("GET", url, params=query, cost=1.0 + extra_cost)
            if body is None:
                return
            for item in as_list(body.get(resource)):
                if str(item.get(key)) not in seen:
                    seen.add(str(item.get(key)))
                    yield item
            attributes = body.get("@attributes")
            next_url = attributes.get("next") if isinstance(attributes, dict) else None
            # pagination.md: the cursor URL carries every parameter: follow it as given.
            url, query = (str(next_url), None) if next_url and not one_page else (None, None)

    async def _read(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        not_found: bool = False,
        cost: float = 1.0,
    ) -> dict[str, Any] | None:
        """A safe request, sent again after any failure; 404 is None when `not_found`."""

        async def attempt() -> dict[str, Any] | None:
            response = await self._send(method, path, params=params, cost=cost)
            if response.status_code == 404 and not_found:
                return None
            check_status(response)
            _raise_for_status(response)
            return _json_body(response)

        return await self._delivery.call(attempt, what=f"Lightspeed {method}")

    async def _write(
        self,
        method: str,
        path: str,
        payload: Mapping[str, Any],
        *,
        cost: float,
        read: Callable[[dict[str, Any]], T],
    ) -> T:
        """One attempt of a write; an answer `read` cannot make sense of is as good as lost."""
        response = await self._send(method, path, json_body=payload, cost=cost)
        check_status(response)
        _raise_for_status(response)
        body = _json_body(response)
        if body is None:
            raise AnswerLost("answered with an empty body")
        try:
            return read(body)
        except LightspeedSetupError:
            raise
        except _UNREADABLE as exc:
            raise AnswerLost(f"answer unreadable ({type(exc).__name__})") from exc

    async def _send(
        self,
        method: str,
        path: str,
        *,
        cost: float,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """One request with a valid token, paced for both limiters; refreshes once on 401 and
        waits out 429s (rate-limiting.md: at least a second after a burst refusal)."""
        url = path if path.startswith("http") else f"{self._api_root}/{path}"
        refreshed = False
        throttled = 0
        while True:
            access_token = await self._tokens.access_token()
            await self.bucket.acquire(cost)
            await self.burst.acquire()
            response = await transmit(
                self._http.request(
                    method,
                    url,
                    params=params,
                    json=json_body,
                    headers={"Authorization": f"Bearer {access_token}"},
                ),
                deadline=self._timeout,
            )
            self.bucket.observe(response.headers, cost)
            self.burst.observe(response.headers)
            if response.status_code == 401 and not refreshed:
                refreshed = True
                await self._tokens.refresh(rejected_access_token=access_token)
                continue
            if response.status_code == 401:
                raise LightspeedAuthError(
                    "Lightspeed refused a freshly refreshed access token", code="unauthorized"
                )
            if response.status_code != 429:
                return response
            # Pacing, not failure: wait what Lightspeed says, then send again.
            throttled += 1
            kind = response.headers.get("X-LS-API-RateLimit-Type")
            wait = retry_after(response) or self.bucket.retry_after(cost) or 1.0
            if kind == "api-burst-limiter":
                wait = max(wait, 1.0)
            if throttled > MAX_THROTTLE_RETRIES:
                raise NotSent("kept answering 429", retry_after=wait)
            log.info("lightspeed_throttled", wait_s=wait, limit_type=kind)
            await self._sleep_hook(wait)


def _json_body(response: httpx.Response) -> dict[str, Any] | None:
    if not response.content:
        return None
    try:
        body = response.json()
    except ValueError as exc:
        raise AnswerLost("answered with malformed JSON") from exc
    return body if isinstance(body, dict) else None


_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    409: "edit_conflict",
    422: "validation",
}


def _raise_for_status(response: httpx.Response) -> None:
    """A 4xx is Lightspeed's refusal (5xx and 429 never reach here). errors.md documents the
    statuses only, so the code comes from the status; a `message` is kept if there is one."""
    status = response.status_code
    if status < 400:
        return
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            message = str(body.get("message") or body.get("error_description") or "")
    except ValueError:
        message = ""
    detail = mask_text(message)[:300] or f"HTTP {status}"
    raise LightspeedError(
        f"Lightspeed rejected the request: {detail}", code=_CODES.get(status, f"http_{status}")
    )
