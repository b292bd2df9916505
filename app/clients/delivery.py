"""How every upstream call is delivered: one reading of a failure, one retry policy, one write path.

Each attempt ends in one of four ways, the same for Shopify, Lightspeed, OnSite and Vii:
- **answered**: the client reads the answer. A refusal (a 4xx, `userErrors`, a Vii decline) is an
  answer: the client raises its `UpstreamRejected`, and nothing here retries it;
- **not sent** (`NotSent`): no connection took the request (refused, DNS, TLS, a connect
  timeout, no pooled connection in time), or the upstream answered 429 or 503, which say nothing
  was done. Sending again is always safe;
- **answer lost** (`AnswerLost`): the request may have reached the upstream and no usable answer
  came back (a timeout while waiting, a reset, a broken or unreadable answer, any other 5xx).

What follows is decided here, not in each client:
- `Delivery.call`: a request that may be repeated (a read, an idempotent write) is sent again
  after either failure, within the retry policy;
- `Delivery.write`: a write that must not be repeated blindly is sent again only when it was not
  sent; when its answer is lost it is looked up, and sent once more only if the look-up proves
  it was not applied. Otherwise the caller gets the client's `UnknownOutcome`, naming the
  reference to look up or undo (Vii: undo the `viiTranId`, then redeem with a new one).

The retry policy (tenacity): exponential backoff with full jitter, a bounded number of attempts,
and `Retry-After` honoured: never sent sooner than the upstream asked, and when it asks for a
longer wait than this policy ever makes (16 backoff steps), no wait at all: the caller gets
`UpstreamUnavailable.retry_after` to pass on or to schedule by.

Pacing (Shopify's cost bucket and THROTTLED answers, Lightspeed's leaky bucket and its 429s) is
not failure: each client waits what its upstream's own figures say, before this policy sees
anything.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_random_exponential

from app.clients.errors import UnknownOutcome, UpstreamUnavailable
from app.logging import get_logger

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

log = get_logger(__name__)

# Every client opens at most this many connections to its upstream.
LIMITS = httpx.Limits(max_connections=20, keepalive_expiry=5.0)
# The longest single wait of a policy, in backoff steps: 0.2 s steps wait at most 3.2 s.
_LONGEST_WAIT_STEPS = 16


class Undelivered(Exception):
    """An attempt that got no answer to act on; never escapes a client."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class NotSent(Undelivered):
    """Nothing reached the upstream, or it said it did nothing: safe to send again."""


class AnswerLost(Undelivered):
    """The request may have been applied; no usable answer says whether it was."""


# No connection was handed the request: refused, DNS, TLS handshake, proxy, pool exhausted.
_NOT_SENT_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
)


def classify(exc: BaseException) -> Undelivered:
    """What a failure raised while sending or awaiting the answer means for a resend.

    `TimeoutError` is the caller's own deadline (`asyncio.timeout`), which may fire at any point:
    it counts as a lost answer, since the request may have gone out. The message holds only the
    exception's type: transport errors can quote what was sent.
    """
    name = type(exc).__name__
    if isinstance(exc, _NOT_SENT_ERRORS):
        return NotSent(f"not sent ({name})")
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return AnswerLost(f"no answer in time ({name})")
    return AnswerLost(f"connection failed after sending ({name})")


async def transmit(call: Awaitable[httpx.Response], *, deadline: float) -> httpx.Response:
    """Await one exchange; its failures become `NotSent` or `AnswerLost`.

    The deadline holds on every transport (in-process ASGI transports ignore httpx's timeouts).
    """
    try:
        async with asyncio.timeout(deadline):
            return await call
    except (TimeoutError, httpx.TransportError) as exc:
        raise classify(exc) from exc


def retry_after(response: httpx.Response, *, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds (either form HTTP allows), None when absent or unreadable."""
    raw = (response.headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def check_status(response: httpx.Response) -> None:
    """429 and 503 say nothing was done; any other 5xx may come after the work was done."""
    status = response.status_code
    if status in (429, 503):
        raise NotSent(f"answered HTTP {status}", retry_after=retry_after(response))
    if status >= 500:
        raise AnswerLost(f"answered HTTP {status}", retry_after=retry_after(response))


def new_http_client(
    *,
    timeout: float,
    transport: httpx.AsyncBaseTransport | None = None,
    headers: dict[str, str] | None = None,
    base_url: str = "",
    auth: httpx.Auth | None = None,
    verify: bool = True,
) -> httpx.AsyncClient:
    """The httpx client under every upstream client: httpx's own transport unless a test (or
    the sandbox) passes one; proxies come from the environment, as httpx reads them."""
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        limits=LIMITS,
        headers=headers,
        base_url=base_url,
        auth=auth,
        verify=verify,
    )


def _hint(state: RetryCallState) -> float | None:
    outcome = state.outcome
    failure = outcome.exception() if outcome is not None else None
    return failure.retry_after if isinstance(failure, Undelivered) else None


@dataclass(frozen=True)
class Delivery:
    """The policy as one upstream uses it: its errors, its attempts, its backoff step."""

    upstream: str
    unavailable: type[UpstreamUnavailable]
    unknown: type[UnknownOutcome]
    attempts: int = 3
    backoff: float = 0.2
    sleep: Sleep = asyncio.sleep

    @property
    def longest_wait(self) -> float:
        return self.backoff * _LONGEST_WAIT_STEPS

    def _wait(self, state: RetryCallState) -> float:
        jittered = wait_random_exponential(multiplier=self.backoff, max=self.longest_wait)(state)
        hint = _hint(state)
        return max(jittered, hint) if hint is not None else jittered

    def _stop(self, state: RetryCallState) -> bool:
        hint = _hint(state)
        if hint is not None and hint > self.longest_wait:
            return True  # asked to wait longer than this policy ever does: the caller decides
        return state.attempt_number >= max(1, self.attempts)

    def _retrying(self, retry_on: tuple[type[Undelivered], ...]) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception_type(retry_on),
            stop=self._stop,
            wait=self._wait,
            sleep=self.sleep,
            reraise=True,
        )

    async def call(
        self, attempt: Callable[[], Awaitable[T]], *, what: str, repeatable: bool = True
    ) -> T:
        """`attempt` until it is answered or the policy gives up (`unavailable`).

        A request that was not sent is always sent again; one whose answer was lost only when
        `repeatable`, otherwise `AnswerLost` is raised for `write` to resolve.
        """
        retry_on: tuple[type[Undelivered], ...] = (
            (NotSent, AnswerLost) if repeatable else (NotSent,)
        )
        try:
            async for trial in self._retrying(retry_on):
                with trial:
                    return await attempt()
        except NotSent as exc:
            raise self.unavailable(f"{what}: {exc}", retry_after=exc.retry_after) from exc
        except AnswerLost as exc:
            if not repeatable:
                raise
            raise self.unavailable(f"{what}: {exc}", retry_after=exc.retry_after) from exc
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def write(
        self,
        send: Callable[[], Awaitable[T]],
        *,
        what: str,
        reference: str,
        look_up: Callable[[], Awaitable[T | None]] | None = None,
        absence_is_proof: bool = True,
        look_up_first: bool = False,
    ) -> T:
        """Send a write that must not be applied twice.

        `look_up` finds the write's effect by its reference (None: not found). A lost answer is
        looked up; found, it is the result; not found, the write is sent once more, but only if
        `absence_is_proof` (the upstream shows a write as soon as it is applied). Without a
        look-up a lost answer is at once an unknown outcome. `look_up_first` also looks before
        the first send, so a caller retrying after a crash never applies the write twice.
        """
        if look_up_first and look_up is not None:
            found = await look_up()
            if found is not None:
                return found
        for sends in (1, 2):
            try:
                return await self.call(send, what=what, repeatable=False)
            except AnswerLost as lost:
                log.warning(
                    "upstream_answer_lost",
                    upstream=self.upstream,
                    operation=what,
                    reference=reference,
                    reason=str(lost),
                )
                if look_up is None:
                    raise self.unknown(
                        f"{what}: {lost}; outcome unknown", reference=reference
                    ) from lost
                found = await self._look_up(look_up, what, reference)
                if found is not None:
                    log.info("upstream_lost_write_found", upstream=self.upstream, operation=what)
                    return found
                if not absence_is_proof or sends == 2:
                    raise self.unknown(
                        f"{what}: {lost}, and not found by its reference; outcome unknown",
                        reference=reference,
                    ) from lost
        raise AssertionError("unreachable")  # pragma: no cover

    async def _look_up(
        self, look_up: Callable[[], Awaitable[T | None]], what: str, reference: str
    ) -> T | None:
        try:
            return await look_up()
        except (UpstreamUnavailable, UnknownOutcome) as exc:
            raise self.unknown(
                f"{what}: answer lost and the look-up failed ({exc})", reference=reference
            ) from exc
