"""One GraphQL request to Shopify's Admin API: paced by the cost bucket, delivered by the policy.

What is Shopify's alone lives here: the THROTTLED answer (HTTP 200, nothing executed) is
waited out on the bucket's own figures; `userErrors` and GraphQL errors become typed refusals;
a 401 (nothing executed) gets one renewed token and one more try; every answer's
`X-Shopify-API-Version` is read, since Shopify answers a retired version with the oldest one it
still serves, silently but for that header (UPSTREAMS.md, "API versions").
Never logged: the access token.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any, TypeVar

import httpx

from app.clients.delivery import (
    AnswerLost,
    Delivery,
    check_status,
    new_http_client,
    transmit,
)
from app.clients.shopify.errors import (
    CODE_TO_ERROR,
    UPSTREAM,
    ShopifyAuthError,
    ShopifyUnavailable,
    ShopifyUnknownOutcome,
    ShopifyUserError,
)
from app.clients.shopify.models import masked_code
from app.clients.shopify.queries import ALL_OPERATIONS, MUTATIONS
from app.clients.shopify.tokens import AccessTokens, StaticToken
from app.clients.throttle import CostBucket, ThrottleStatus
from app.logging import get_logger
from app.metrics import SHOPIFY_API_VERSION_MISMATCH

T = TypeVar("T")

MUTATION_COST = 10.0
MAX_THROTTLED_RETRIES = 20
VERSION_HEADER = "X-Shopify-API-Version"
# When set (on the bucket's clock), calls give up rather than wait on the throttle past it.
_WAIT_DEADLINE: ContextVar[float | None] = ContextVar("shopify_wait_deadline", default=None)
# What an answer that says it did the work but cannot be read raises while being read.
_UNREADABLE = (LookupError, TypeError, ValueError, ArithmeticError, ShopifyUnavailable)


def throttle_status(body: dict[str, Any]) -> tuple[ThrottleStatus | None, float | None]:
    cost = (body.get("extensions") or {}).get("cost") or {}
    requested = cost.get("requestedQueryCost")
    raw = cost.get("throttleStatus") or {}
    status: ThrottleStatus | None = None
    try:
        if raw:
            status = ThrottleStatus(
                maximum_available=float(raw["maximumAvailable"]),
                currently_available=float(raw["currentlyAvailable"]),
                restore_rate=float(raw["restoreRate"]),
            )
    except (KeyError, TypeError, ValueError):
        status = None
    return status, float(requested) if isinstance(requested, int | float) else None


def error_codes(body: dict[str, Any]) -> list[str]:
    codes: list[str] = []
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            codes.append(str((error.get("extensions") or {}).get("code") or "GRAPHQL_ERROR"))
    return codes


def raise_user_errors(errors: list[dict[str, Any]], *, secret: str | None = None) -> None:
    if not errors:
        return
    first = errors[0]
    code = str(first.get("code") or "")
    message = str(first.get("message") or "rejected")
    if not code:
        # Plain `UserError` carries no code: read the usual wording.
        code = "TAKEN" if "taken" in message.lower() else "USER_ERROR"
    if secret:
        message = re.sub(re.escape(secret), masked_code(secret), message, flags=re.IGNORECASE)
    raw_field = first.get("field")
    field_path = ".".join(str(part) for part in raw_field) if raw_field else None
    error_type = CODE_TO_ERROR.get(code, ShopifyUserError)
    raise error_type(f"Shopify refused: {message} ({code})", code=code, field=field_path)


class ShopifyGraphQL:
    """The request layer under `ShopifyClient`."""

    def __init__(
        self,
        base_url: str,
        access_token: str | AccessTokens,
        api_version: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        bucket: CostBucket | None = None,
        retry_attempts: int = 4,
        retry_backoff: float = 0.5,
        currency: str = "AUD",
    ) -> None:
        self._graphql_url = f"{base_url.rstrip('/')}/admin/api/{api_version}/graphql.json"
        self._tokens: AccessTokens = (
            StaticToken(access_token) if isinstance(access_token, str) else access_token
        )
        self.api_version = api_version
        self.answered_version: str | None = None
        """What the last answer's `X-Shopify-API-Version` said (None before any answer)."""
        self.currency = currency.strip().upper()
        """The shop's currency (CURRENCY): what a new card's `initialAmount` is given in."""
        self._timeout = timeout
        self._http = new_http_client(timeout=timeout, transport=transport)
        self._bucket = bucket or CostBucket()
        self._delivery = Delivery(
            UPSTREAM,
            ShopifyUnavailable,
            ShopifyUnknownOutcome,
            attempts=retry_attempts,
            backoff=retry_backoff,
        )
        self._learned_costs: dict[tuple[str, int | None], float] = {}
        # Resolved lazily at first use, so it follows whatever logging setup is current then.
        self._log = get_logger(__name__)

    @property
    def token_mode(self) -> str:
        """`static` (SHOPIFY_ADMIN_TOKEN) or `client_credentials`."""
        return self._tokens.mode

    @property
    def version_mismatch(self) -> bool:
        """Shopify answered with another API version than the one asked."""
        return self.answered_version is not None and self.answered_version != self.api_version

    @property
    def bucket(self) -> CostBucket:
        return self._bucket

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._tokens.aclose()

    def _estimate_cost(self, operation: str, variables: dict[str, Any]) -> float:
        first = variables.get("first")
        learned = self._learned_costs.get((operation, first))
        if learned is not None:
            return learned
        if operation in MUTATIONS:
            return MUTATION_COST
        if isinstance(first, int):
            return 2.0 + first
        return 2.0

    async def _exchange(self, payload: dict[str, Any], token: str) -> httpx.Response:
        headers = {"X-Shopify-Access-Token": token}
        response = await transmit(
            self._http.post(self._graphql_url, json=payload, headers=headers),
            deadline=self._timeout,
        )
        self._note_version(response)
        return response

    def _note_version(self, response: httpx.Response) -> None:
        answered = response.headers.get(VERSION_HEADER)
        if not answered or answered == self.answered_version:
            return
        previous, self.answered_version = self.answered_version, answered
        if previous is not None:
            # Another client asking the same version may have removed it already.
            with suppress(KeyError):
                SHOPIFY_API_VERSION_MISMATCH.remove(self.api_version, previous)
        SHOPIFY_API_VERSION_MISMATCH.labels(self.api_version, answered).set(
            1 if self.version_mismatch else 0
        )
        if self.version_mismatch:
            self._log.warning(
                "shopify_api_version_mismatch", asked=self.api_version, answered=answered
            )

    async def _post(self, operation: str, variables: dict[str, Any]) -> dict[str, Any]:
        payload = {
            "query": ALL_OPERATIONS[operation],
            "operationName": operation,
            "variables": variables,
        }
        token = await self._tokens.current()
        response = await self._exchange(payload, token)
        if response.status_code == 401:
            # Nothing was executed: one renewed token (shared with every caller refused with
            # the same one) and one more try; a second 401 is a refusal.
            fresh = await self._tokens.renew(token)
            if fresh is not None:
                self._log.info("shopify_token_renewed_after_401", operation=operation)
                response = await self._exchange(payload, fresh)
        check_status(response)
        status = response.status_code
        if status in (401, 403):
            code = "UNAUTHORIZED" if status == 401 else "ACCESS_DENIED"
            raise ShopifyAuthError(f"Shopify refused the access token (HTTP {status})", code=code)
        if status >= 400:
            raise ShopifyUserError(f"Shopify answered HTTP {status}", code=f"HTTP_{status}")
        try:
            body = response.json()
        except ValueError as exc:
            raise AnswerLost("answered something that is not JSON") from exc
        if not isinstance(body, dict):
            raise AnswerLost("answered an unexpected JSON shape")
        return body

    @contextmanager
    def wait_budget(self, seconds: float) -> Iterator[None]:
        """Within the block, a call that would wait on Shopify's throttle past `seconds` from
        now gives up with ShopifyUnavailable before sending: a shopper at checkout cannot wait
        like a backfill, and nothing unsent needs compensating."""
        token = _WAIT_DEADLINE.set(self._bucket.now() + seconds)
        try:
            yield
        finally:
            _WAIT_DEADLINE.reset(token)

    def _check_wait(self, operation: str, cost: float) -> None:
        deadline = _WAIT_DEADLINE.get()
        if deadline is None:
            return
        wait = self._bucket.wait_needed(cost) if self._bucket.status is not None else 0.0
        if self._bucket.now() + wait > deadline:
            raise ShopifyUnavailable(
                f"{operation} would wait {wait:.1f} s on Shopify's throttle, over its budget",
                retry_after=max(1.0, wait),
            )

    async def _send(self, operation: str, variables: dict[str, Any]) -> dict[str, Any]:
        """One logical request: paced by the bucket, repeated while Shopify says THROTTLED."""
        cost_key = (operation, variables.get("first"))
        for throttled_in_a_row in range(MAX_THROTTLED_RETRIES):
            self._check_wait(operation, self._estimate_cost(operation, variables))
            reservation = await self._bucket.reserve(
                lambda: self._estimate_cost(operation, variables)
            )
            status: ThrottleStatus | None = None
            try:
                body = await self._post(operation, variables)
                status, requested = throttle_status(body)
            finally:
                self._bucket.settle(reservation, status)
            if requested is not None:
                self._learned_costs[cost_key] = requested
            codes = error_codes(body)
            if "THROTTLED" in codes and not body.get("data"):
                # Not executed. reserve() waits exactly (cost - currentlyAvailable) / restoreRate.
                self._log.info("shopify_throttled", operation=operation, requested_cost=requested)
                await self._after_throttled(status, requested, throttled_in_a_row)
                continue
            return _data(body, codes, operation)
        raise ShopifyUnavailable(
            f"Shopify kept throttling {operation}",
            retry_after=self._bucket.wait_needed(MUTATION_COST) if self._bucket.status else 1.0,
        )

    async def _after_throttled(
        self, status: ThrottleStatus | None, requested: float | None, in_a_row: int
    ) -> None:
        if status is None:
            await self._bucket.pause(1.0)
        elif status.currently_available >= (requested or MUTATION_COST):
            # The answer says there is room, yet it was refused (another app on the same
            # bucket, or clock skew): wait for one request's refill, growing each time.
            floor = (requested or MUTATION_COST) / max(status.restore_rate, 1.0)
            await self._bucket.pause(min(5.0, floor * 2**in_a_row))

    async def _query(self, operation: str, variables: dict[str, Any]) -> dict[str, Any]:
        """A read, or a write that may be repeated: sent again after any failure."""
        return await self._delivery.call(
            lambda: self._send(operation, variables), what=f"Shopify {operation}"
        )

    async def _write(
        self,
        operation: str,
        variables: dict[str, Any],
        read: Callable[[dict[str, Any]], T],
        *,
        reference: str,
        look_up: Callable[[], Awaitable[T | None]] | None = None,
        absence_is_proof: bool = True,
    ) -> T:
        """A write that must not be repeated blindly; `read` turns its answer into the result.

        An answer `read` cannot make sense of is as good as lost: the write may have happened.
        """

        async def send() -> T:
            data = await self._send(operation, variables)
            try:
                return read(data)
            except _UNREADABLE as exc:
                raise AnswerLost(f"answer unreadable ({type(exc).__name__})") from exc

        return await self._delivery.write(
            send,
            what=f"Shopify {operation}",
            reference=reference,
            look_up=look_up,
            absence_is_proof=absence_is_proof,
        )


def _data(body: dict[str, Any], codes: list[str], operation: str) -> dict[str, Any]:
    if codes and not any((body.get("data") or {}).values()):
        if "INTERNAL_SERVER_ERROR" in codes:
            raise AnswerLost("Shopify reported an internal error")
        message = str((body["errors"][0] or {}).get("message") or "GraphQL error")
        raise ShopifyUserError(f"Shopify refused {operation}: {message}", code=codes[0])
    data = body.get("data")
    if not isinstance(data, dict):
        raise AnswerLost("Shopify answered without data")
    return data
