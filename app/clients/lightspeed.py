"""Lightspeed Retail (R-Series) API V3: gift cards (credit accounts) and their balance moves.

Thin by design: one method per upstream operation. It owns OAuth rotation, leaky-bucket pacing,
paging, the string-typed wire format and the idempotent write path (SalePayment.remoteReference).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.clients.errors import UnknownOutcome, UpstreamRejected, UpstreamUnavailable
from app.clients.transport import AiohttpTransport
from app.db.tokens import TokenSet, TokenStore, refresh_lock
from app.logging import get_logger, mask_text
from app.settings import BalanceSign, Settings

log = get_logger(__name__)

UPSTREAM = "lightspeed"
PAGE_LIMIT = 100
# Refresh this long before the access token runs out, so no request races its expiry.
REFRESH_MARGIN = timedelta(seconds=60)
MAX_THROTTLE_RETRIES = 6
READ_ATTEMPTS = 4
# Sales need a shop, register and employee; the first of each exists on every account.
SALE_SHOP_ID = "1"
SALE_REGISTER_ID = "1"
SALE_EMPLOYEE_ID = "1"

Sleep = Callable[[float], Awaitable[None]]


class LightspeedError(UpstreamRejected):
    """Lightspeed refused the request: 409 edit conflict, 422 validation, other 4xx."""

    upstream = UPSTREAM


class LightspeedAuthError(LightspeedError):
    """No usable token: the refresh token was refused (reused, revoked, expired) or missing."""


class LightspeedUnavailable(UpstreamUnavailable):
    upstream = UPSTREAM


class LightspeedUnknownOutcome(UnknownOutcome):
    upstream = UPSTREAM


class _LostAnswer(Exception):
    """A write sent whose answer never came (timeout, dropped connection, 5xx)."""


@dataclass(frozen=True)
class LsGiftCard:
    credit_account_id: str
    code: str
    balance: Decimal
    """Money on the card, positive, whatever sign the account renders it with."""
    name: str | None
    description: str | None
    customer_id: str | None
    archived: bool
    time_stamp: datetime


@dataclass(frozen=True)
class LsGiftCardPayment:
    sale_payment_id: str
    sale_id: str
    credit_account_id: str
    amount: Decimal
    """Positive = redeemed from the card, negative = loaded onto it (Lightspeed's own sign)."""
    remote_reference: str | None
    time_stamp: datetime
    completed: bool


@dataclass(frozen=True)
class LsCustomer:
    customer_id: str
    email: str | None
    """The primary contact email, else the first one; None when the customer has none."""
    first_name: str | None
    last_name: str | None


# ---- the string-typed wire format ---------------------------------------------------------


def as_list(value: Any) -> list[dict[str, Any]]:
    """Lightspeed sends a one-item collection as a bare object and an empty one not at all."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    if isinstance(value, dict):
        return [value]
    return []


def card_money(raw_balance: str, sign: BalanceSign) -> Decimal:
    """The one place the contradictory balance sign is resolved: money on the card, positive."""
    balance = _decimal(raw_balance)
    money = -balance if sign is BalanceSign.NEGATIVE else balance
    return money + Decimal(0)  # turns -0 into 0


def _decimal(raw: Any) -> Decimal:
    try:
        value = Decimal(str(raw).strip() or "0")
    except InvalidOperation as exc:
        raise LightspeedUnavailable(f"Lightspeed sent a malformed amount {raw!r}") from exc
    if not value.is_finite():
        raise LightspeedUnavailable("Lightspeed sent a non-finite amount")
    return value


def _bool(raw: Any) -> bool:
    return str(raw).strip().lower() in {"true", "1"}


def _optional(raw: Any) -> str | None:
    text = str(raw).strip() if raw is not None else ""
    return text or None


def _optional_id(raw: Any) -> str | None:
    text = _optional(raw)
    return None if text in (None, "0") else text


def _time(raw: Any) -> datetime:
    text = str(raw or "").strip()
    if not text:
        return datetime.fromtimestamp(0, UTC)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    # Sub-second digits kept when the cursor has them, so a cursor never moves backwards.
    return aware.astimezone(UTC).isoformat()


def _money_text(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('0.01')):f}"


def parse_gift_card(item: Mapping[str, Any], sign: BalanceSign) -> LsGiftCard:
    return LsGiftCard(
        credit_account_id=str(item["creditAccountID"]),
        code=str(item.get("code") or ""),
        balance=card_money(str(item.get("balance", "0")), sign),
        name=_optional(item.get("name")),
        description=_optional(item.get("description")),
        customer_id=_optional_id(item.get("customerID")),
        archived=_bool(item.get("archived")),
        time_stamp=_time(item.get("timeStamp")),
    )


def parse_payment(item: Mapping[str, Any], *, completed: bool | None = None) -> LsGiftCardPayment:
    sale = item.get("Sale")
    if completed is None:
        completed = _bool(sale.get("completed")) if isinstance(sale, dict) else False
    return LsGiftCardPayment(
        sale_payment_id=str(item["salePaymentID"]),
        sale_id=str(item.get("saleID", "")),
        credit_account_id=str(item.get("creditAccountID", "")),
        amount=_decimal(item.get("amount", "0")),
        remote_reference=_optional(item.get("remoteReference")),
        time_stamp=_time(item.get("timeStamp") or item.get("createTime")),
        completed=completed,
    )


def parse_customer(item: Mapping[str, Any]) -> LsCustomer:
    contact = item.get("Contact")
    emails = contact.get("Emails") if isinstance(contact, dict) else None
    listed = as_list(emails.get("ContactEmail") if isinstance(emails, dict) else None)
    # Primary first; any other use type (secondary, work...) only when there is no primary.
    listed.sort(key=lambda entry: str(entry.get("useType", "")).strip().lower() != "primary")
    addresses = [address for entry in listed if (address := _optional(entry.get("address")))]
    return LsCustomer(
        customer_id=str(item["customerID"]),
        email=addresses[0] if addresses else None,
        first_name=_optional(item.get("firstName")),
        last_name=_optional(item.get("lastName")),
    )


# ---- pacing --------------------------------------------------------------------------------


class LeakyBucket:
    """Our estimate of Lightspeed's bucket, shared by every caller of one client.

    The estimate counts requests in flight, which the server's header cannot yet know, and is
    only ever raised by what the server says (other registers and processes spend it too).
    """

    def __init__(
        self,
        size: float = 90.0,
        drip_rate: float = 1.0,
        *,
        margin: float = 1.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.size = size
        self.drip_rate = drip_rate
        self.margin = margin
        self.level = 0.0
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()
        self._sleep = sleep

    def _leak(self) -> None:
        now = time.monotonic()
        self.level = max(0.0, self.level - (now - self._updated) * self.drip_rate)
        self._updated = now

    async def acquire(self, cost: float) -> None:
        # The lock makes waiters queue in turn, so a burst drains at exactly the drip rate.
        async with self._lock:
            while True:
                self._leak()
                room = self.size - self.margin - self.level
                if cost <= room or self.level == 0.0:
                    self.level += cost
                    return
                await self._sleep((cost - room) / self.drip_rate)

    def observe(self, headers: httpx.Headers, guessed_cost: float) -> None:
        self._leak()
        actual_cost = _float(headers.get("X-LS-Api-Request-Cost"))
        if actual_cost is not None:
            self.level = max(0.0, self.level + actual_cost - guessed_cost)
        drip = _float(headers.get("X-LS-API-Drip-Rate"))
        if drip:
            self.drip_rate = drip
        bucket = headers.get("X-LS-API-Bucket-Level")
        if bucket and "/" in bucket:
            used_text, size_text = bucket.split("/", 1)
            size = _float(size_text)
            if size:
                self.size = size
            used = _float(used_text)
            if used is not None:
                self.level = max(self.level, used)

    def retry_after(self, cost: float) -> float:
        self._leak()
        return max(0.0, (self.level + cost - (self.size - self.margin)) / self.drip_rate)


def _float(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class _Interval:
    """At most one call per `seconds`: the code lookup has its own 1 request/s limit."""

    def __init__(self, seconds: float, sleep: Sleep) -> None:
        self.seconds = seconds
        self._next_at = 0.0
        self._lock = asyncio.Lock()
        self._sleep = sleep

    async def wait(self) -> None:
        async with self._lock:
            delay = self._next_at - time.monotonic()
            if delay > 0:
                await self._sleep(delay)
            self._next_at = time.monotonic() + self.seconds


def sale_cost(payment_count: int, *, completed: bool) -> float:
    return 2.0 + (3.0 if completed else 0.0) + 0.5 * payment_count


# ---- the client ------------------------------------------------------------------------------


class LightspeedClient:
    # 5% over the documented 1 request/s, because the server times arrivals, not departures.
    CODE_LOOKUP_INTERVAL_S = 1.05

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
        balance_sign: BalanceSign,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._account_id = account_id
        self._client_id = client_id
        self._client_secret = client_secret
        self._store = token_store
        self._initial_refresh_token = initial_refresh_token
        self._api_root = f"{base_url.rstrip('/')}/API/V3/Account/{account_id}"
        self._token_url = token_url
        self._balance_sign = balance_sign
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            transport=transport or AiohttpTransport(),
            timeout=httpx.Timeout(timeout),
            headers={"Accept": "application/json"},
        )
        self._sleep: Sleep = asyncio.sleep
        self.bucket = LeakyBucket(sleep=self._sleep_hook)
        self._code_lookups = _Interval(self.CODE_LOOKUP_INTERVAL_S, self._sleep_hook)
        self._tokens: TokenSet | None = None
        self._tokens_loaded = False
        self._token_lock = asyncio.Lock()
        self._payment_type_ids: tuple[str, str] | None = None
        self._payment_type_lock = asyncio.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        token_store: TokenStore,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> LightspeedClient:
        secret = settings.lightspeed_client_secret
        refresh = settings.lightspeed_refresh_token
        return cls(
            account_id=settings.lightspeed_account_id or "",
            client_id=settings.lightspeed_client_id or "",
            client_secret=secret.get_secret_value() if secret else "",
            token_store=token_store,
            initial_refresh_token=refresh.get_secret_value() if refresh else None,
            base_url=settings.lightspeed_base_url,
            token_url=settings.lightspeed_token_url,
            balance_sign=settings.lightspeed_balance_sign,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _sleep_hook(self, seconds: float) -> None:
        # Looked up at call time so tests can swap `_sleep` after construction.
        await self._sleep(seconds)

    # ---- gift cards ----

    async def iter_gift_cards(
        self, *, since: datetime | None = None, include_archived: bool = False
    ) -> AsyncIterator[LsGiftCard]:
        params: dict[str, str] = {"giftCard": "true"}
        if include_archived:
            params["archived"] = "true"
        if since is not None:
            params["timeStamp"] = f">,{_iso(since)}"
            params["sort"] = "timeStamp"
        else:
            params["sort"] = "creditAccountID"
        async for item in self._paged("CreditAccount", params):
            yield parse_gift_card(item, self._balance_sign)

    async def get_gift_card(self, credit_account_id: str) -> LsGiftCard | None:
        body = await self._read("GET", f"CreditAccount/{credit_account_id}.json", not_found=True)
        if body is None:
            return None
        for item in as_list(body.get("CreditAccount")):
            if _bool(item.get("giftCard")):
                return parse_gift_card(item, self._balance_sign)
        return None

    async def get_gift_card_by_code(self, code: str) -> LsGiftCard | None:
        await self._code_lookups.wait()
        body = await self._read(
            "GET",
            "CreditAccount.json",
            params={"giftCard": "true", "archived": "true", "code": code},
        )
        items = as_list(body.get("CreditAccount")) if body else []
        return parse_gift_card(items[0], self._balance_sign) if items else None

    async def create_gift_card(
        self,
        code: str,
        *,
        name: str | None = None,
        description: str | None = None,
        customer_id: str | None = None,
    ) -> LsGiftCard:
        payload: dict[str, Any] = {"giftCard": "true", "code": code}
        if name is not None:
            payload["name"] = name
        if description is not None:
            payload["description"] = description
        if customer_id is not None:
            payload["customerID"] = customer_id
        for _attempt in range(2):
            try:
                body = await self._write("POST", "CreditAccount.json", payload, cost=1.0)
            except _LostAnswer:
                # A code is unique per account, so the code itself tells whether it landed.
                existing = await self.get_gift_card_by_code(code)
                if existing is not None:
                    return existing
                continue
            items = as_list(body.get("CreditAccount"))
            if not items:
                raise LightspeedUnavailable("Lightspeed answered a create without the card")
            return parse_gift_card(items[0], self._balance_sign)
        raise LightspeedUnknownOutcome(
            "gift card create unanswered twice", reference=f"code-last4:{code[-4:]}"
        )

    async def archive_gift_card(self, credit_account_id: str) -> None:
        # DELETE archives and is idempotent, so it may be retried like a read.
        await self._read("DELETE", f"CreditAccount/{credit_account_id}.json")

    # ---- customers ----

    async def get_customer(self, customer_id: str) -> LsCustomer | None:
        # Contact (where the emails live) is a relation: without load_relations it is absent.
        body = await self._read(
            "GET",
            f"Customer/{customer_id}.json",
            params={"load_relations": json.dumps(["Contact"])},
            not_found=True,
        )
        items = as_list(body.get("Customer")) if body else []
        return parse_customer(items[0]) if items else None

    # ---- balance moves ----

    async def load_gift_card(
        self, credit_account_id: str, amount: Decimal, *, reference: str
    ) -> LsGiftCardPayment:
        return await self._move_balance(credit_account_id, -_positive(amount), reference)

    async def redeem_gift_card(
        self, credit_account_id: str, amount: Decimal, *, reference: str
    ) -> LsGiftCardPayment:
        return await self._move_balance(credit_account_id, _positive(amount), reference)

    async def iter_gift_card_payments(self, *, since: datetime) -> AsyncIterator[LsGiftCardPayment]:
        gift_type_id, _ = await self._payment_types()
        params = {
            "paymentTypeID": gift_type_id,
            "timeStamp": f">,{_iso(since)}",
            "sort": "timeStamp",
            "load_relations": json.dumps(["Sale"]),
        }
        async for item in self._paged("SalePayment", params):
            if _optional_id(item.get("creditAccountID")) is None:
                continue
            yield parse_payment(item)

    async def _move_balance(
        self, credit_account_id: str, gift_amount: Decimal, reference: str
    ) -> LsGiftCardPayment:
        """One completed sale: the gift card payment and a cash payment that balances it.

        The reference is looked up first too, so a job retried after a crash never applies
        twice; after a lost answer it is looked up again and the sale re-sent at most once.
        """
        existing = await self._find_payment(reference)
        if existing is not None:
            return existing
        gift_type_id, cash_type_id = await self._payment_types()
        sale = {
            "shopID": SALE_SHOP_ID,
            "registerID": SALE_REGISTER_ID,
            "employeeID": SALE_EMPLOYEE_ID,
            "completed": "true",
            "SalePayments": {
                "SalePayment": [
                    {
                        "amount": _money_text(gift_amount),
                        "paymentTypeID": gift_type_id,
                        "creditAccountID": credit_account_id,
                        "remoteReference": reference,
                    },
                    {"amount": _money_text(-gift_amount), "paymentTypeID": cash_type_id},
                ]
            },
        }
        for attempt in range(2):
            try:
                body = await self._write(
                    "POST", "Sale.json", sale, cost=sale_cost(2, completed=True)
                )
            except _LostAnswer:
                log.warning("lightspeed_sale_answer_lost", reference=reference, attempt=attempt)
                found = await self._find_payment(reference)
                if found is not None:
                    return found
                continue
            return self._payment_from_sale(body, reference)
        raise LightspeedUnknownOutcome(
            "Lightspeed sale unanswered twice and not found by its reference",
            reference=reference,
        )

    def _payment_from_sale(self, body: Mapping[str, Any], reference: str) -> LsGiftCardPayment:
        for sale in as_list(body.get("Sale")):
            payments = sale.get("SalePayments")
            nested = payments.get("SalePayment") if isinstance(payments, dict) else None
            for item in as_list(nested):
                if item.get("remoteReference") == reference:
                    return parse_payment(item, completed=_bool(sale.get("completed")))
        raise LightspeedUnavailable("Lightspeed answered the sale without our payment")

    async def _find_payment(self, reference: str) -> LsGiftCardPayment | None:
        body = await self._read(
            "GET",
            "SalePayment.json",
            params={"remoteReference": reference, "load_relations": json.dumps(["Sale"])},
        )
        for item in as_list(body.get("SalePayment") if body else None):
            if item.get("remoteReference") == reference and not _bool(item.get("archived")):
                return parse_payment(item)
        return None

    async def _payment_types(self) -> tuple[str, str]:
        """(gift card type id, balancing cash type id), looked up once per client."""
        async with self._payment_type_lock:
            if self._payment_type_ids is None:
                body = await self._read("GET", "PaymentType.json")
                types = [
                    item
                    for item in as_list(body.get("PaymentType") if body else None)
                    if not _bool(item.get("archived"))
                ]
                gift = _first_of_type(types, "gift card")
                cash = _first_of_type(types, "cash")
                if gift is None or cash is None:
                    raise LightspeedError(
                        "Lightspeed account has no gift card or cash payment type",
                        code="payment_type_missing",
                    )
                self._payment_type_ids = (gift, cash)
            return self._payment_type_ids

    # ---- transport: paging, retries, errors ----

    async def _paged(self, resource: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        url: str | None = f"{self._api_root}/{resource}.json"
        query: dict[str, str] | None = {**params, "limit": str(PAGE_LIMIT)}
        while url:
            body = await self._read("GET", url, params=query)
            if body is None:
                return
            for item in as_list(body.get(resource)):
                yield item
            attributes = body.get("@attributes")
            next_url = attributes.get("next") if isinstance(attributes, dict) else None
            # The cursor URL carries every parameter already: follow it exactly as given.
            url, query = (str(next_url), None) if next_url else (None, None)

    async def _read(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        not_found: bool = False,
    ) -> dict[str, Any] | None:
        """A safe request, retried on 5xx and network trouble; 404 is None when `not_found`."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(LightspeedUnavailable),
            stop=stop_after_attempt(READ_ATTEMPTS),
            wait=wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.2),
            sleep=self._sleep_hook,
            reraise=True,
        ):
            with attempt:
                try:
                    response = await self._send(method, path, params=params, cost=1.0)
                except (httpx.TransportError, TimeoutError) as exc:
                    raise LightspeedUnavailable(
                        f"Lightspeed {method} failed: {type(exc).__name__}"
                    ) from exc
                if response.status_code == 404 and not_found:
                    return None
                _raise_for_status(response)
                return _json_body(response)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write(
        self, method: str, path: str, payload: Mapping[str, Any], *, cost: float
    ) -> dict[str, Any]:
        try:
            response = await self._send(method, path, json_body=payload, cost=cost)
        except (httpx.TransportError, TimeoutError) as exc:
            raise _LostAnswer(type(exc).__name__) from exc
        if response.status_code >= 500:
            raise _LostAnswer(f"HTTP {response.status_code}")
        _raise_for_status(response)
        body = _json_body(response)
        if body is None:
            raise _LostAnswer("empty body")
        return body

    async def _send(
        self,
        method: str,
        path: str,
        *,
        cost: float,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """One request with a valid token, paced; refreshes once on 401 and waits out 429s."""
        url = path if path.startswith("http") else f"{self._api_root}/{path}"
        refreshed = False
        throttled = 0
        while True:
            access_token = await self._access_token()
            await self.bucket.acquire(cost)
            async with asyncio.timeout(self._timeout):
                response = await self._http.request(
                    method,
                    url,
                    params=params,
                    json=json_body,
                    headers={"Authorization": f"Bearer {access_token}"},
                )
            self.bucket.observe(response.headers, cost)
            if response.status_code == 401 and not refreshed:
                refreshed = True
                await self._refresh(rejected_access_token=access_token)
                continue
            if response.status_code == 401:
                raise LightspeedAuthError(
                    "Lightspeed refused a freshly refreshed access token", code="unauthorized"
                )
            if response.status_code == 429:
                throttled += 1
                wait = _retry_after(response) or self.bucket.retry_after(cost) or 1.0
                if throttled > MAX_THROTTLE_RETRIES:
                    raise LightspeedUnavailable("Lightspeed kept answering 429", retry_after=wait)
                log.info(
                    "lightspeed_throttled",
                    wait_s=wait,
                    limit_type=response.headers.get("X-LS-API-RateLimit-Type"),
                )
                await self._sleep_hook(wait)
                continue
            return response

    # ---- OAuth ----

    async def _access_token(self) -> str:
        if not self._tokens_loaded:
            async with self._token_lock:
                if not self._tokens_loaded:
                    self._tokens = await self._store.load()
                    self._tokens_loaded = True
        tokens = self._tokens
        if tokens is not None and tokens.access_token and _fresh(tokens):
            return tokens.access_token
        return await self._refresh(rejected_access_token=tokens.access_token if tokens else None)

    async def _refresh(self, *, rejected_access_token: str | None) -> str:
        """Rotate once for every caller waiting here, and once for every process via the store.

        The new pair is saved before the new access token is handed to anyone: Lightspeed has
        already killed the old refresh token, so an unsaved new one would be lost with the
        process.
        """
        async with self._token_lock:
            mine = self._tokens
            if _usable(mine, rejected_access_token):
                assert mine is not None and mine.access_token is not None
                return mine.access_token
            async with refresh_lock(self._store):
                stored = await self._store.load()
                current_refresh = (
                    mine.refresh_token if mine is not None else self._initial_refresh_token
                )
                if stored is not None and (
                    stored.refresh_token != current_refresh
                    or _usable(stored, rejected_access_token)
                ):
                    self._tokens = stored
                    if _usable(stored, rejected_access_token):
                        assert stored.access_token is not None
                        return stored.access_token
                    current_refresh = stored.refresh_token
                if current_refresh is None:
                    raise LightspeedAuthError(
                        "no Lightspeed refresh token: set LIGHTSPEED_REFRESH_TOKEN",
                        code="no_refresh_token",
                    )
                rotated = await self._call_token_endpoint(current_refresh)
                await self._store.save(rotated)
                self._tokens = rotated
                log.info("lightspeed_token_rotated", expires_at=str(rotated.expires_at))
                assert rotated.access_token is not None
                return rotated.access_token

    async def _call_token_endpoint(self, refresh_token: str) -> TokenSet:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http.post(self._token_url, data=form)
        except (httpx.TransportError, TimeoutError) as exc:
            # The old token may already be spent; nothing safe to retry with it here.
            raise LightspeedUnavailable(
                f"Lightspeed token refresh failed: {type(exc).__name__}"
            ) from exc
        if response.status_code >= 500:
            raise LightspeedUnavailable(
                f"Lightspeed token endpoint answered {response.status_code}"
            )
        body = _json_body(response) or {}
        if response.status_code != 200:
            error = str(body.get("error") or f"http_{response.status_code}")
            raise LightspeedAuthError(
                f"Lightspeed refused the refresh token ({mask_text(error)})", code=error
            )
        try:
            access = str(body["access_token"])
            refresh = str(body["refresh_token"])
            expires_in = int(body.get("expires_in") or 0)
        except (KeyError, ValueError) as exc:
            raise LightspeedAuthError(
                "Lightspeed token answer lacks a token", code="bad_token_answer"
            ) from exc
        expires_at = datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in else None
        return TokenSet(access_token=access, refresh_token=refresh, expires_at=expires_at)


def _positive(amount: Decimal) -> Decimal:
    if not amount.is_finite() or amount <= 0:
        raise ValueError("amount must be a positive decimal")
    if amount != amount.quantize(Decimal("0.01")):
        raise ValueError("amount has more than two decimal places")
    return amount


def _fresh(tokens: TokenSet) -> bool:
    if tokens.expires_at is None:
        return True
    return tokens.expires_at - datetime.now(UTC) > REFRESH_MARGIN


def _usable(tokens: TokenSet | None, rejected_access_token: str | None) -> bool:
    return (
        tokens is not None
        and tokens.access_token is not None
        and tokens.access_token != rejected_access_token
        and _fresh(tokens)
    )


def _first_of_type(types: list[dict[str, Any]], kind: str) -> str | None:
    matching = [
        str(item["paymentTypeID"])
        for item in types
        if str(item.get("type", "")).strip().lower() == kind and item.get("paymentTypeID")
    ]
    return min(matching, key=lambda value: (len(value), value)) if matching else None


def _retry_after(response: httpx.Response) -> float | None:
    value = _float(response.headers.get("Retry-After"))
    return value if value is not None and value >= 0 else None


def _json_body(response: httpx.Response) -> dict[str, Any] | None:
    if not response.content:
        return None
    try:
        body = response.json()
    except ValueError as exc:
        if response.status_code >= 500:
            return None
        raise LightspeedUnavailable("Lightspeed answered with malformed JSON") from exc
    return body if isinstance(body, dict) else None


_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    409: "edit_conflict",
    422: "validation",
}


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    if status >= 500:
        raise LightspeedUnavailable(
            f"Lightspeed answered {status}", retry_after=_retry_after(response)
        )
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            message = str(body.get("message") or body.get("httpMessage") or "")
    except ValueError:
        message = ""
    detail = mask_text(message)[:300] or f"HTTP {status}"
    raise LightspeedError(
        f"Lightspeed rejected the request: {detail}", code=_CODES.get(status, f"http_{status}")
    )
