"""Shopify GraphQL Admin client: gift cards, customers, orders, bulk export, webhooks.

Thin by design: one typed method per operation, no business rules. It owns what is Shopify's
alone: pacing against the cost bucket, retries that are safe, recovery of writes whose answer
was lost, and turning `userErrors` into typed exceptions. Documents live in `shopify_queries`.

Never logged: the access token and full gift card codes (only their last 4 characters).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_none,
    wait_random,
)

from app.clients.errors import UnknownOutcome, UpstreamRejected, UpstreamUnavailable
from app.clients.shopify_queries import ALL_OPERATIONS, BULK_GIFT_CARDS_QUERY, MUTATIONS
from app.clients.throttle import CostBucket, ThrottleStatus
from app.clients.transport import AiohttpTransport
from app.logging import get_logger
from app.settings import Settings

UPSTREAM = "shopify"
MUTATION_COST = 10.0
PAGE_SIZE = 50
# What the built-in simulator accepts when no real token is configured (sandbox mode only).
SANDBOX_ACCESS_TOKEN = "shpat_sandbox_token"  # noqa: S105
# How far back a lost credit/debit is searched for among the card's newest transactions.
RECOVERY_TRANSACTION_PAGES = 4
MAX_THROTTLED_RETRIES = 20
# When set (on the bucket's clock), calls give up rather than wait on the throttle past it.
_WAIT_DEADLINE: ContextVar[float | None] = ContextVar("shopify_wait_deadline", default=None)
_MARKER = re.compile(r"\[giftsync:([^\]]+)\]")


# --- errors -------------------------------------------------------------------------------


class ShopifyUserError(UpstreamRejected):
    """Shopify understood and refused: a `userErrors` entry or a non-transient GraphQL error."""

    upstream = UPSTREAM

    def __init__(self, message: str, *, code: str, field: str | None = None) -> None:
        super().__init__(message, code=code, upstream=UPSTREAM)
        self.field = field


class ShopifyCodeTaken(ShopifyUserError):
    """The gift card code (or customer email) already exists."""


class ShopifyInsufficientFunds(ShopifyUserError):
    """A debit above the card's balance."""


class ShopifyNotFound(ShopifyUserError):
    """The gift card, customer or other object named does not exist."""


class ShopifyInvalidInput(ShopifyUserError):
    """Refused input: a code too short or long, a bad amount, a mismatching currency, ..."""


class ShopifyUnavailable(UpstreamUnavailable):
    upstream = UPSTREAM

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, upstream=UPSTREAM, retry_after=retry_after)


class ShopifyUnknownOutcome(UnknownOutcome):
    upstream = UPSTREAM

    def __init__(self, message: str, *, reference: str) -> None:
        super().__init__(message, reference=reference, upstream=UPSTREAM)


_CODE_TO_ERROR: dict[str, type[ShopifyUserError]] = {
    "TAKEN": ShopifyCodeTaken,
    "INSUFFICIENT_FUNDS": ShopifyInsufficientFunds,
    "GIFT_CARD_NOT_FOUND": ShopifyNotFound,
    "CUSTOMER_NOT_FOUND": ShopifyNotFound,
    "RECIPIENT_NOT_FOUND": ShopifyNotFound,
    "NOT_FOUND": ShopifyNotFound,
    "TOO_SHORT": ShopifyInvalidInput,
    "TOO_LONG": ShopifyInvalidInput,
    "INVALID": ShopifyInvalidInput,
    "GREATER_THAN": ShopifyInvalidInput,
    "MISMATCHING_CURRENCY": ShopifyInvalidInput,
    "NEGATIVE_OR_ZERO_AMOUNT": ShopifyInvalidInput,
    "MISSING_ARGUMENT": ShopifyInvalidInput,
}


class _NotSent(Exception):
    """The request never reached Shopify (connect failed, HTTP 429): safe to send again."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _AnswerLost(Exception):
    """Sent, but no usable answer came back: a write may or may not have been applied."""


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShopifyGiftCard:
    id: str
    last_characters: str
    balance: Decimal
    currency: str
    initial_value: Decimal
    enabled: bool
    expires_on: date | None
    deactivated_at: datetime | None
    created_at: datetime
    updated_at: datetime
    note: str | None
    customer_id: str | None
    order_id: str | None


@dataclass(frozen=True)
class CreatedGiftCard:
    card: ShopifyGiftCard
    code: str = field(repr=False)
    """The full code; Shopify returns it only at creation."""


@dataclass(frozen=True)
class GiftCardMove:
    transaction_id: str
    amount: Decimal
    """What was credited or debited, as a positive amount."""
    balance_after: Decimal | None
    """The card's balance right after the move; None when recovered after a lost answer."""


@dataclass(frozen=True)
class GiftCardTransaction:
    id: str
    amount: Decimal
    """Signed: positive for a credit, negative for a debit."""
    currency: str
    note: str | None
    processed_at: datetime | None
    idempotency_key: str | None


@dataclass(frozen=True)
class OrderTransaction:
    id: str
    kind: str
    status: str
    gateway: str
    amount: Decimal
    currency: str
    gift_card_id: str | None
    gift_card_last_characters: str | None
    parent_id: str | None


@dataclass(frozen=True)
class OrderGiftCardLine:
    line_item_id: str
    title: str
    quantity: int
    amount: Decimal
    """Value of each card bought on this line (the unit price, shop currency)."""


@dataclass(frozen=True)
class ShopifyOrder:
    id: str
    name: str
    transactions: list[OrderTransaction]
    gift_card_lines: list[OrderGiftCardLine]
    shipping_name: str | None
    customer_email: str | None


# --- helpers ------------------------------------------------------------------------------


def idempotency_note(key: str, note: str | None = None) -> str:
    """The transaction note that tags a credit/debit so a lost answer can be looked up."""
    marker = f"[giftsync:{key}]"
    return f"{note} {marker}" if note else marker


def idempotency_key_from_note(note: str | None) -> str | None:
    """The key giftsync wrote into a transaction note, or None for a move made elsewhere."""
    if not note:
        return None
    match = _MARKER.search(note)
    return match.group(1) if match else None


def masked_code(code: str) -> str:
    return f"…{code[-4:]}"


def gid(kind: str, value: str | int) -> str:
    text = str(value)
    return text if text.startswith("gid://") else f"gid://shopify/{kind}/{text}"


def _decimal_text(value: Decimal) -> str:
    if not isinstance(value, Decimal):
        raise TypeError("money must be a Decimal")
    return format(value, "f")


def _money(node: Any) -> tuple[Decimal, str]:
    try:
        return Decimal(str(node["amount"])), str(node["currencyCode"])
    except (KeyError, TypeError, InvalidOperation) as exc:
        raise ShopifyUnavailable("Shopify answered a malformed money value") from exc


def _datetime(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def _required_datetime(value: Any) -> datetime:
    parsed = _datetime(value)
    if parsed is None:
        raise ShopifyUnavailable("Shopify answered a card without a timestamp")
    return parsed


def _id_of(node: Any) -> str | None:
    return str(node["id"]) if isinstance(node, dict) and node.get("id") else None


def parse_gift_card(node: dict[str, Any]) -> ShopifyGiftCard:
    balance, currency = _money(node["balance"])
    initial_value, _ = _money(node["initialValue"])
    expires_on = node.get("expiresOn")
    return ShopifyGiftCard(
        id=str(node["id"]),
        last_characters=str(node["lastCharacters"]),
        balance=balance,
        currency=currency,
        initial_value=initial_value,
        enabled=bool(node["enabled"]),
        expires_on=date.fromisoformat(str(expires_on)) if expires_on else None,
        deactivated_at=_datetime(node.get("deactivatedAt")),
        created_at=_required_datetime(node.get("createdAt")),
        updated_at=_required_datetime(node.get("updatedAt")),
        note=node.get("note"),
        customer_id=_id_of(node.get("customer")),
        order_id=_id_of(node.get("order")),
    )


def _receipt(value: Any) -> dict[str, Any]:
    """Shopify's `receiptJson` arrives as a JSON string; some tools hand an object instead."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _parse_order_transaction(node: dict[str, Any]) -> OrderTransaction:
    amount, currency = _money(node["amountSet"]["shopMoney"])
    receipt = _receipt(node.get("receiptJson"))
    card_id = receipt.get("gift_card_id")
    last_characters = receipt.get("gift_card_last_characters")
    return OrderTransaction(
        id=str(node["id"]),
        kind=str(node["kind"]),
        status=str(node["status"]),
        gateway=str(node.get("gateway") or ""),
        amount=amount,
        currency=currency,
        gift_card_id=gid("GiftCard", card_id) if card_id not in (None, "") else None,
        gift_card_last_characters=str(last_characters) if last_characters else None,
        parent_id=_id_of(node.get("parentTransaction")),
    )


def _parse_order(node: dict[str, Any]) -> ShopifyOrder:
    lines: list[OrderGiftCardLine] = []
    for item in node["lineItems"]["nodes"]:
        if item.get("isGiftCard"):
            amount, _ = _money(item["originalUnitPriceSet"]["shopMoney"])
            lines.append(
                OrderGiftCardLine(
                    line_item_id=str(item["id"]),
                    title=str(item["title"]),
                    quantity=int(item["quantity"]),
                    amount=amount,
                )
            )
    customer = node.get("customer") or {}
    shipping = node.get("shippingAddress") or {}
    return ShopifyOrder(
        id=str(node["id"]),
        name=str(node["name"]),
        transactions=[_parse_order_transaction(t) for t in node["transactions"]],
        gift_card_lines=lines,
        shipping_name=shipping.get("name"),
        customer_email=node.get("email") or customer.get("email"),
    )


def _parse_transaction(node: dict[str, Any]) -> GiftCardTransaction:
    amount, currency = _money(node["amount"])
    # Debits are reported negative by Shopify, but the sign is forced from the type to be sure.
    if node.get("__typename") == "GiftCardDebitTransaction":
        amount = -abs(amount)
    elif node.get("__typename") == "GiftCardCreditTransaction":
        amount = abs(amount)
    return GiftCardTransaction(
        id=str(node["id"]),
        amount=amount,
        currency=currency,
        note=node.get("note"),
        processed_at=_datetime(node.get("processedAt")),
        idempotency_key=idempotency_key_from_note(node.get("note")),
    )


def _search_term(value: str) -> str:
    """A search value quoted for Shopify's query syntax."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _throttle_status(body: dict[str, Any]) -> tuple[ThrottleStatus | None, float | None]:
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


def _error_codes(body: dict[str, Any]) -> list[str]:
    codes: list[str] = []
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            codes.append(str((error.get("extensions") or {}).get("code") or "GRAPHQL_ERROR"))
    return codes


def _raise_user_errors(errors: list[dict[str, Any]], *, secret: str | None = None) -> None:
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
    error_type = _CODE_TO_ERROR.get(code, ShopifyUserError)
    raise error_type(f"Shopify refused: {message} ({code})", code=code, field=field_path)


# --- client -------------------------------------------------------------------------------


class ShopifyClient:
    def __init__(
        self,
        base_url: str,
        access_token: str,
        api_version: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        bucket: CostBucket | None = None,
        retry_attempts: int = 4,
        retry_backoff: float = 0.5,
    ) -> None:
        self._graphql_url = f"{base_url.rstrip('/')}/admin/api/{api_version}/graphql.json"
        self._token = SecretStr(access_token)
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            transport=transport or AiohttpTransport(), timeout=httpx.Timeout(timeout)
        )
        self._bucket = bucket or CostBucket()
        self._retry_attempts = retry_attempts
        self._retry_backoff = retry_backoff
        self._learned_costs: dict[tuple[str, int | None], float] = {}
        # Resolved lazily at first use, so it follows whatever logging setup is current then.
        self._log = get_logger(__name__)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> ShopifyClient:
        token = settings.shopify_admin_token
        if token is None and not settings.sandbox_enabled:
            raise ValueError("SHOPIFY_ADMIN_TOKEN is not configured")
        return cls(
            settings.shopify_url,
            token.get_secret_value() if token is not None else SANDBOX_ACCESS_TOKEN,
            settings.shopify_api_version,
            transport=transport,
        )

    @property
    def bucket(self) -> CostBucket:
        return self._bucket

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- transport ------------------------------------------------------------------------

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

    async def _post(self, operation: str, variables: dict[str, Any]) -> dict[str, Any]:
        payload = {
            "query": ALL_OPERATIONS[operation],
            "operationName": operation,
            "variables": variables,
        }
        headers = {"X-Shopify-Access-Token": self._token.get_secret_value()}
        try:
            # ASGI transports ignore httpx timeouts; this deadline holds on every transport.
            async with asyncio.timeout(self._timeout):
                response = await self._http.post(self._graphql_url, json=payload, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _NotSent(f"could not reach Shopify: {type(exc).__name__}") from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise _AnswerLost("Shopify did not answer in time") from exc
        except httpx.TransportError as exc:
            raise _AnswerLost(f"connection to Shopify failed: {type(exc).__name__}") from exc
        status = response.status_code
        if status == 429:
            retry_after = response.headers.get("Retry-After")
            raise _NotSent(
                "Shopify answered 429",
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        if status >= 500:
            raise _AnswerLost(f"Shopify answered HTTP {status}")
        if status in (401, 403):
            code = "UNAUTHORIZED" if status == 401 else "ACCESS_DENIED"
            raise ShopifyUserError(f"Shopify refused the access token (HTTP {status})", code=code)
        if status >= 400:
            raise ShopifyUserError(f"Shopify answered HTTP {status}", code=f"HTTP_{status}")
        try:
            body = response.json()
        except ValueError as exc:
            raise _AnswerLost("Shopify answered something that is not JSON") from exc
        if not isinstance(body, dict):
            raise _AnswerLost("Shopify answered an unexpected JSON shape")
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
                status, requested = _throttle_status(body)
            finally:
                self._bucket.settle(reservation, status)
            if requested is not None:
                self._learned_costs[cost_key] = requested
            codes = _error_codes(body)
            if "THROTTLED" in codes and not body.get("data"):
                # Not executed. reserve() waits exactly (cost - currentlyAvailable) / restoreRate.
                self._log.info("shopify_throttled", operation=operation, requested_cost=requested)
                if status is None:
                    await self._bucket.pause(1.0)
                elif status.currently_available >= (requested or MUTATION_COST):
                    # The answer says there is room, yet it was refused (another app on the same
                    # bucket, or clock skew): wait for one request's refill, growing each time.
                    floor = (requested or MUTATION_COST) / max(status.restore_rate, 1.0)
                    await self._bucket.pause(min(5.0, floor * 2**throttled_in_a_row))
                continue
            if codes and not any((body.get("data") or {}).values()):
                if "INTERNAL_SERVER_ERROR" in codes:
                    raise _AnswerLost("Shopify reported an internal error")
                message = str((body["errors"][0] or {}).get("message") or "GraphQL error")
                raise ShopifyUserError(f"Shopify refused {operation}: {message}", code=codes[0])
            data = body.get("data")
            if not isinstance(data, dict):
                raise _AnswerLost("Shopify answered without data")
            return data
        raise ShopifyUnavailable(
            f"Shopify kept throttling {operation}",
            retry_after=self._bucket.wait_needed(MUTATION_COST) if self._bucket.status else 1.0,
        )

    def _retrying(self, retry_on: tuple[type[Exception], ...]) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception_type(retry_on),
            stop=stop_after_attempt(self._retry_attempts),
            wait=(
                wait_exponential(multiplier=self._retry_backoff, max=8.0)
                + wait_random(0, self._retry_backoff)
                if self._retry_backoff > 0
                else wait_none()
            ),
            reraise=True,
        )

    async def _query(self, operation: str, variables: dict[str, Any]) -> dict[str, Any]:
        """A read, or a write that may be repeated: retried on anything transient."""
        try:
            async for attempt in self._retrying((_NotSent, _AnswerLost)):
                with attempt:
                    return await self._send(operation, variables)
        except _NotSent as exc:
            raise ShopifyUnavailable(str(exc), retry_after=exc.retry_after) from exc
        except _AnswerLost as exc:
            raise ShopifyUnavailable(str(exc)) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _mutate(self, operation: str, variables: dict[str, Any]) -> dict[str, Any]:
        """A write that must not be repeated blindly: only a request never sent is retried.

        Raises `_AnswerLost` for the caller to look the outcome up.
        """
        try:
            async for attempt in self._retrying((_NotSent,)):
                with attempt:
                    return await self._send(operation, variables)
        except _NotSent as exc:
            raise ShopifyUnavailable(str(exc), retry_after=exc.retry_after) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # --- gift card writes -----------------------------------------------------------------

    async def create_gift_card(
        self,
        initial_value: Decimal,
        *,
        code: str | None = None,
        note: str | None = None,
        customer_id: str | None = None,
        expires_on: date | None = None,
    ) -> CreatedGiftCard:
        card_input: dict[str, Any] = {"initialValue": _decimal_text(initial_value)}
        if code is not None:
            card_input["code"] = code
        if note is not None:
            card_input["note"] = note
        if customer_id is not None:
            card_input["customerId"] = customer_id
        if expires_on is not None:
            card_input["expiresOn"] = expires_on.isoformat()
        reference = f"giftCardCreate:{masked_code(code)}" if code else "giftCardCreate"
        lost_before = False
        for attempt in range(2):
            try:
                data = await self._mutate("GiftCardCreate", {"input": card_input})
                payload = data["giftCardCreate"]
                user_errors = payload["userErrors"]
            except (_AnswerLost, KeyError, TypeError) as exc:
                # An answer that never came and one that cannot be read (a null payload, a
                # missing field) tell the same: the card may exist. Never report "not created".
                self._log.warning(
                    "shopify_answer_lost", operation="GiftCardCreate", reference=reference
                )
                if code is None:
                    raise ShopifyUnknownOutcome(
                        "gift card create answer lost", reference=reference
                    ) from exc
                recovered = await self._recover_created(code, initial_value, reference)
                if recovered is not None:
                    return recovered
                if attempt == 1:
                    raise ShopifyUnknownOutcome(
                        "gift card create answer lost twice", reference=reference
                    ) from exc
                lost_before = True
                continue
            try:
                _raise_user_errors(user_errors, secret=code)
            except ShopifyCodeTaken:
                if not (lost_before and code):
                    raise
                # The lost first attempt may have created it; search can lag behind a create.
                recovered = await self._recover_created(code, initial_value, reference)
                if recovered is not None:
                    return recovered
                raise ShopifyUnknownOutcome(
                    "gift card code taken after a lost create", reference=reference
                ) from None
            try:
                card = parse_gift_card(payload["giftCard"])
            except (KeyError, TypeError, ValueError, ArithmeticError, ShopifyUnavailable):
                if code is None:
                    raise ShopifyUnknownOutcome(
                        "gift card created but its answer is unreadable", reference=reference
                    ) from None
                # Created, by the answer's own account: read the card back by its code.
                recovered = await self._recover_created(code, initial_value, reference)
                if recovered is None:
                    raise ShopifyUnknownOutcome(
                        "gift card create answer unreadable", reference=reference
                    ) from None
                return recovered
            full_code = payload.get("giftCardCode") or code
            if not full_code:
                raise ShopifyUnknownOutcome(
                    "Shopify created a gift card but sent no code", reference=reference
                )
            self._log.info("shopify_gift_card_created", card_id=card.id, last4=card.last_characters)
            return CreatedGiftCard(card=card, code=str(full_code))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _recover_created(
        self, code: str, initial_value: Decimal, reference: str
    ) -> CreatedGiftCard | None:
        try:
            card = await self.find_gift_card_by_code(code)
        except ShopifyUnavailable as exc:
            raise ShopifyUnknownOutcome(
                "gift card create answer lost and lookup failed", reference=reference
            ) from exc
        if card is None:
            return None
        if card.initial_value != initial_value:
            raise ShopifyCodeTaken(
                f"gift card code {masked_code(code)} belongs to another card", code="TAKEN"
            )
        self._log.info("shopify_lost_create_recovered", card_id=card.id, last4=card.last_characters)
        return CreatedGiftCard(card=card, code=code)

    async def credit_gift_card(
        self,
        card_id: str,
        amount: Decimal,
        currency: str,
        *,
        idempotency_key: str,
        note: str | None = None,
    ) -> GiftCardMove:
        return await self._move("credit", card_id, amount, currency, idempotency_key, note)

    async def debit_gift_card(
        self,
        card_id: str,
        amount: Decimal,
        currency: str,
        *,
        idempotency_key: str,
        note: str | None = None,
    ) -> GiftCardMove:
        return await self._move("debit", card_id, amount, currency, idempotency_key, note)

    async def _move(
        self,
        kind: str,
        card_id: str,
        amount: Decimal,
        currency: str,
        idempotency_key: str,
        note: str | None,
    ) -> GiftCardMove:
        operation = "GiftCardCredit" if kind == "credit" else "GiftCardDebit"
        tagged_note = idempotency_note(idempotency_key, note)
        variables = {
            "id": card_id,
            f"{kind}Input": {
                f"{kind}Amount": {"amount": _decimal_text(amount), "currencyCode": currency},
                "note": tagged_note,
            },
        }
        for attempt in range(2):
            try:
                data = await self._mutate(operation, variables)
            except _AnswerLost as exc:
                self._log.warning(
                    "shopify_answer_lost",
                    operation=operation,
                    card_id=card_id,
                    idempotency_key=idempotency_key,
                )
                found = await self._find_move(card_id, idempotency_key, tagged_note)
                if found is not None:
                    return found
                if attempt == 1:
                    raise ShopifyUnknownOutcome(
                        f"gift card {kind} answer lost twice", reference=tagged_note
                    ) from exc
                continue
            try:
                payload = data[f"giftCard{kind.capitalize()}"]
                user_errors = payload["userErrors"]
            except (KeyError, TypeError):
                user_errors = None
            if user_errors:
                _raise_user_errors(user_errors)
            try:
                transaction = payload[f"giftCard{kind.capitalize()}Transaction"]
                moved, _ = _money(transaction["amount"])
                balance, _ = _money(transaction["giftCard"]["balance"])
                return GiftCardMove(
                    transaction_id=str(transaction["id"]), amount=abs(moved), balance_after=balance
                )
            except (KeyError, TypeError, ValueError, ArithmeticError, ShopifyUnavailable):
                # Applied or not, the answer cannot say: look the move up by its key.
                found = await self._find_move(card_id, idempotency_key, tagged_note)
                if found is not None:
                    return found
                raise ShopifyUnknownOutcome(
                    f"gift card {kind} answer unreadable", reference=tagged_note
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _find_move(
        self, card_id: str, idempotency_key: str, reference: str
    ) -> GiftCardMove | None:
        try:
            async for transaction in self._iter_transactions(card_id, RECOVERY_TRANSACTION_PAGES):
                if transaction.idempotency_key == idempotency_key:
                    self._log.info(
                        "shopify_lost_move_recovered", card_id=card_id, txn=transaction.id
                    )
                    return GiftCardMove(
                        transaction_id=transaction.id,
                        amount=abs(transaction.amount),
                        balance_after=None,
                    )
        except ShopifyUnavailable as exc:
            raise ShopifyUnknownOutcome(
                "gift card move answer lost and lookup failed", reference=reference
            ) from exc
        return None

    async def list_gift_card_transactions(
        self, card_id: str, *, max_pages: int = 1
    ) -> list[GiftCardTransaction]:
        """The card's credits and debits, newest first."""
        return [t async for t in self._iter_transactions(card_id, max_pages)]

    async def _iter_transactions(
        self, card_id: str, max_pages: int
    ) -> AsyncIterator[GiftCardTransaction]:
        after: str | None = None
        for _ in range(max_pages):
            data = await self._query(
                "GiftCardTransactions", {"id": card_id, "first": 25, "after": after}
            )
            card = data.get("giftCard")
            if card is None:
                raise ShopifyNotFound(f"gift card {card_id} not found", code="GIFT_CARD_NOT_FOUND")
            connection = card.get("transactions") or {"nodes": [], "pageInfo": {}}
            for node in connection["nodes"]:
                yield _parse_transaction(node)
            page = connection.get("pageInfo") or {}
            if not page.get("hasNextPage"):
                return
            after = page.get("endCursor")

    async def deactivate_gift_card(self, card_id: str) -> ShopifyGiftCard:
        # Deactivating twice leaves the card as once: safe to repeat after a lost answer.
        data = await self._query("GiftCardDeactivate", {"id": card_id})
        return self._card_from_payload(data["giftCardDeactivate"], card_id)

    async def update_gift_card(
        self,
        card_id: str,
        *,
        note: str | None = None,
        customer_id: str | None = None,
        expires_on: date | None = None,
    ) -> ShopifyGiftCard:
        update: dict[str, Any] = {}
        if note is not None:
            update["note"] = note
        if customer_id is not None:
            update["customerId"] = customer_id
        if expires_on is not None:
            update["expiresOn"] = expires_on.isoformat()
        if not update:
            raise ValueError("update_gift_card needs at least one field to change")
        data = await self._query("GiftCardUpdate", {"id": card_id, "input": update})
        return self._card_from_payload(data["giftCardUpdate"], card_id)

    @staticmethod
    def _card_from_payload(payload: dict[str, Any], card_id: str) -> ShopifyGiftCard:
        _raise_user_errors(payload["userErrors"])
        if payload.get("giftCard") is None:
            raise ShopifyNotFound(f"gift card {card_id} not found", code="GIFT_CARD_NOT_FOUND")
        return parse_gift_card(payload["giftCard"])

    async def send_gift_card_notification(self, card_id: str) -> None:
        # A repeat after a lost answer at worst sends the email twice, which beats none.
        data = await self._query("GiftCardSendNotification", {"id": card_id})
        _raise_user_errors(data["giftCardSendNotificationToCustomer"]["userErrors"])

    # --- gift card reads ------------------------------------------------------------------

    async def get_gift_card(self, card_id: str) -> ShopifyGiftCard | None:
        data = await self._query("GiftCardGet", {"id": gid("GiftCard", card_id)})
        node = data.get("giftCard")
        return parse_gift_card(node) if node else None

    async def _search_page(
        self,
        query: str | None,
        after: str | None,
        *,
        first: int = PAGE_SIZE,
        sort_key: str | None = None,
        reverse: bool = False,
    ) -> tuple[list[ShopifyGiftCard], str | None]:
        """One page of `giftCards`; the cursor is None when there is no next page."""
        variables: dict[str, Any] = {"first": first, "after": after, "query": query}
        if sort_key is not None:
            variables["sortKey"] = sort_key
            variables["reverse"] = reverse
        data = await self._query("GiftCardsSearch", variables)
        connection = data["giftCards"]
        cards = [parse_gift_card(node) for node in connection["nodes"]]
        page = connection.get("pageInfo") or {}
        return cards, (page.get("endCursor") if page.get("hasNextPage") else None)

    async def find_gift_card_by_code(self, code: str) -> ShopifyGiftCard | None:
        """The card with this full code; Shopify searches codes by the default search term."""
        wanted = code.strip()
        if not wanted:
            return None
        cards, _ = await self._search_page(_search_term(wanted), None, first=5)
        suffix = wanted[-4:].lower()
        matches = [card for card in cards if card.last_characters.lower() == suffix]
        return matches[0] if matches else None

    async def find_gift_cards_by_last_characters(
        self, last_characters: str, *, max_pages: int = 5
    ) -> list[ShopifyGiftCard]:
        wanted = last_characters.strip().lower()
        found: list[ShopifyGiftCard] = []
        after: str | None = None
        for _ in range(max_pages):
            cards, after = await self._search_page(_search_term(wanted), after)
            found.extend(card for card in cards if card.last_characters.lower() == wanted)
            if after is None:
                break
        return found

    async def iter_gift_cards_updated_since(
        self, since: datetime, *, query: str | None = None
    ) -> AsyncIterator[ShopifyGiftCard]:
        """Cards updated at or after `since`, newest first.

        There is no updated_at search filter, so pages are sorted by UPDATED_AT descending and
        reading stops at the first card older than `since`.
        """
        after: str | None = None
        while True:
            cards, after = await self._search_page(
                query, after, sort_key="UPDATED_AT", reverse=True
            )
            for card in cards:
                if card.updated_at < since:
                    return
                yield card
            if after is None:
                return

    async def count_gift_cards(self, query: str | None = None) -> int:
        data = await self._query("GiftCardsCount", {"query": query})
        count = data.get("giftCardsCount") or {}
        return int(count.get("count") or 0)

    # --- customers ------------------------------------------------------------------------

    async def find_customer_by_email(self, email: str) -> str | None:
        wanted = email.strip().lower()
        data = await self._query(
            "CustomersByEmail", {"first": 5, "query": f"email:{_search_term(wanted)}"}
        )
        for node in data["customers"]["nodes"]:
            if str(node.get("email") or "").lower() == wanted:
                return str(node["id"])
        return None

    async def find_or_create_customer(
        self, email: str, *, first_name: str | None = None, last_name: str | None = None
    ) -> str:
        existing = await self.find_customer_by_email(email)
        if existing is not None:
            return existing
        customer_input: dict[str, Any] = {"email": email.strip()}
        if first_name:
            customer_input["firstName"] = first_name
        if last_name:
            customer_input["lastName"] = last_name
        for attempt in range(2):
            try:
                data = await self._mutate("CustomerCreate", {"input": customer_input})
            except _AnswerLost as exc:
                found = await self.find_customer_by_email(email)
                if found is not None:
                    return found
                if attempt == 1:
                    raise ShopifyUnknownOutcome(
                        "customer create answer lost twice", reference="customerCreate"
                    ) from exc
                continue
            payload = data["customerCreate"]
            try:
                _raise_user_errors(payload["userErrors"])
            except ShopifyCodeTaken:
                # Created meanwhile by someone else (or by our own lost attempt).
                found = await self.find_customer_by_email(email)
                if found is None:
                    raise
                return found
            return str(payload["customer"]["id"])
        raise AssertionError("unreachable")  # pragma: no cover

    # --- orders ---------------------------------------------------------------------------

    async def get_order(self, order_id: str | int) -> ShopifyOrder | None:
        data = await self._query(
            "OrderGet",
            {"id": gid("Order", order_id), "transactionsFirst": 50, "lineItemsFirst": 100},
        )
        node = data.get("order")
        return _parse_order(node) if node else None

    # --- bulk export ----------------------------------------------------------------------

    async def bulk_export_gift_cards(
        self, *, poll_interval: float = 1.0
    ) -> AsyncIterator[ShopifyGiftCard]:
        """Every gift card, streamed from Shopify's JSONL export one line at a time."""
        operation_id = await self._start_bulk_operation()
        url = await self._wait_for_bulk_operation(operation_id, poll_interval)
        if url is None:
            return
        # The file lives on a storage host: the access token must not go there.
        async with self._http.stream("GET", url) as response:
            if response.status_code >= 400:
                raise ShopifyUnavailable(f"bulk export download answered {response.status_code}")
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                row = json.loads(line)
                # Rows of nested connections point at their parent; the export has none of
                # interest, and a card row never carries the key.
                if "__parentId" in row:
                    continue
                yield parse_gift_card(row)

    async def _start_bulk_operation(self) -> str:
        variables = {"query": BULK_GIFT_CARDS_QUERY}
        for attempt in range(2):
            try:
                data = await self._mutate("BulkOperationRunQuery", variables)
            except _AnswerLost as exc:
                current = await self._current_bulk_operation()
                if (
                    current is not None
                    and _same_query(str(current.get("query") or ""))
                    and current.get("status") in ("CREATED", "RUNNING", "COMPLETED")
                ):
                    return str(current["id"])
                if attempt == 1:
                    raise ShopifyUnknownOutcome(
                        "bulk operation start answer lost twice", reference="bulkOperationRunQuery"
                    ) from exc
                continue
            payload = data["bulkOperationRunQuery"]
            _raise_user_errors(payload["userErrors"])
            return str(payload["bulkOperation"]["id"])
        raise AssertionError("unreachable")  # pragma: no cover

    async def _current_bulk_operation(self) -> dict[str, Any] | None:
        data = await self._query("CurrentBulkOperation", {})
        current = data.get("currentBulkOperation")
        return current if isinstance(current, dict) else None

    async def _wait_for_bulk_operation(self, operation_id: str, poll_interval: float) -> str | None:
        while True:
            current = await self._current_bulk_operation()
            if current is None or current.get("id") != operation_id:
                raise ShopifyUnavailable("the bulk operation disappeared (another one started?)")
            status = current.get("status")
            if status == "COMPLETED":
                url = current.get("url")
                return str(url) if url else None
            if status in ("FAILED", "CANCELED", "CANCELING", "EXPIRED"):
                raise ShopifyUnavailable(
                    f"bulk operation {status}: {current.get('errorCode') or 'no error code'}"
                )
            await asyncio.sleep(poll_interval)

    # --- webhooks -------------------------------------------------------------------------

    async def create_webhook_subscription(self, topic: str, callback_url: str) -> str:
        """Subscribe `callback_url`; `topic` as `orders/paid` or `ORDERS_PAID`."""
        variables = {
            "topic": topic.strip().upper().replace("/", "_"),
            "webhookSubscription": {"callbackUrl": callback_url, "format": "JSON"},
        }
        # A repeat after a lost answer is refused as taken at worst, never doubled.
        data = await self._query("WebhookSubscriptionCreate", variables)
        payload = data["webhookSubscriptionCreate"]
        _raise_user_errors(payload["userErrors"])
        return str(payload["webhookSubscription"]["id"])


def _same_query(text: str) -> bool:
    return " ".join(text.split()) == " ".join(BULK_GIFT_CARDS_QUERY.split())
