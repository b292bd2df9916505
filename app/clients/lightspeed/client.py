"""Lightspeed Retail (R-Series) API V3: gift cards (credit accounts) and their balance moves.

Thin by design: one method per upstream operation. It owns OAuth rotation (`oauth`), leaky-bucket
pacing (`pacing`), paging and the string-typed wire format (`models`). Writes go through the
delivery policy: a balance move is looked up by its `SalePayment.remoteReference`, a created
card by its code.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from decimal import Decimal
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
from app.clients.lightspeed.models import (
    LsCustomer,
    LsGiftCard,
    LsGiftCardPayment,
    as_bool,
    as_list,
    first_of_type,
    iso,
    money_text,
    optional_id,
    parse_customer,
    parse_gift_card,
    parse_payment,
    payment_from_sale,
)
from app.clients.lightspeed.oauth import TokenKeeper
from app.clients.lightspeed.pacing import Interval, LeakyBucket, Sleep, sale_cost
from app.db.tokens import TokenStore
from app.logging import get_logger, mask_text
from app.settings import BalanceSign, Settings

T = TypeVar("T")

log = get_logger(__name__)

PAGE_LIMIT = 100
MAX_THROTTLE_RETRIES = 6
READ_ATTEMPTS = 4
# Sales need a shop, register and employee; the first of each exists on every account.
SALE_SHOP_ID = "1"
SALE_REGISTER_ID = "1"
SALE_EMPLOYEE_ID = "1"
# What an answer that says it did the work but cannot be read raises while being read.
_UNREADABLE = (LookupError, TypeError, ValueError, ArithmeticError, LightspeedUnavailable)


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
        self._api_root = f"{base_url.rstrip('/')}/API/V3/Account/{account_id}"
        self._balance_sign = balance_sign
        self._timeout = timeout
        self._http = new_http_client(
            timeout=timeout, transport=transport, headers={"Accept": "application/json"}
        )
        self._sleep: Sleep = asyncio.sleep
        self.bucket = LeakyBucket(sleep=self._sleep_hook)
        self._code_lookups = Interval(self.CODE_LOOKUP_INTERVAL_S, self._sleep_hook)
        self._tokens = TokenKeeper(
            token_store,
            initial_refresh_token=initial_refresh_token,
            client_id=client_id,
            client_secret=client_secret,
            token_url=token_url,
            http=self._http,
            timeout=timeout,
        )
        self._delivery = Delivery(
            UPSTREAM,
            LightspeedUnavailable,
            LightspeedUnknownOutcome,
            attempts=READ_ATTEMPTS,
            sleep=self._sleep_hook,
        )
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

    async def _access_token(self) -> str:
        return await self._tokens.access_token()

    # ---- gift cards ----

    async def iter_gift_cards(
        self, *, since: datetime | None = None, include_archived: bool = False
    ) -> AsyncIterator[LsGiftCard]:
        params: dict[str, str] = {"giftCard": "true"}
        if include_archived:
            params["archived"] = "true"
        if since is not None:
            params["timeStamp"] = f">,{iso(since)}"
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
            if as_bool(item.get("giftCard")):
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

        def created(body: dict[str, Any]) -> LsGiftCard:
            return parse_gift_card(as_list(body["CreditAccount"])[0], self._balance_sign)

        # A code is unique per account, so the code itself tells whether it landed.
        return await self._delivery.write(
            lambda: self._write("POST", "CreditAccount.json", payload, cost=1.0, read=created),
            what="Lightspeed gift card create",
            reference=f"code-last4:{code[-4:]}",
            look_up=lambda: self.get_gift_card_by_code(code),
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
            "timeStamp": f">,{iso(since)}",
            "sort": "timeStamp",
            "load_relations": json.dumps(["Sale"]),
        }
        async for item in self._paged("SalePayment", params):
            if optional_id(item.get("creditAccountID")) is None:
                continue
            yield parse_payment(item)

    async def _move_balance(
        self, credit_account_id: str, gift_amount: Decimal, reference: str
    ) -> LsGiftCardPayment:
        """One completed sale: the gift card payment and a cash payment that balances it.

        The reference is looked up first too, so a job retried after a crash never applies
        twice; after a lost answer it is looked up again and the sale re-sent at most once.
        """

        async def send() -> LsGiftCardPayment:
            gift_type_id, cash_type_id = await self._payment_types()
            sale = {
                "shopID": SALE_SHOP_ID,
                "registerID": SALE_REGISTER_ID,
                "employeeID": SALE_EMPLOYEE_ID,
                "completed": "true",
                "SalePayments": {
                    "SalePayment": [
                        {
                            "amount": money_text(gift_amount),
                            "paymentTypeID": gift_type_id,
                            "creditAccountID": credit_account_id,
                            "remoteReference": reference,
                        },
                        {"amount": money_text(-gift_amount), "paymentTypeID": cash_type_id},
                    ]
                },
            }
            return await self._write(
                "POST",
                "Sale.json",
                sale,
                cost=sale_cost(2, completed=True),
                read=lambda body: payment_from_sale(body, reference),
            )

        return await self._delivery.write(
            send,
            what="Lightspeed sale",
            reference=reference,
            look_up=lambda: self._find_payment(reference),
            look_up_first=True,
        )

    async def _find_payment(self, reference: str) -> LsGiftCardPayment | None:
        body = await self._read(
            "GET",
            "SalePayment.json",
            params={"remoteReference": reference, "load_relations": json.dumps(["Sale"])},
        )
        for item in as_list(body.get("SalePayment") if body else None):
            if item.get("remoteReference") == reference and not as_bool(item.get("archived")):
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
                    if not as_bool(item.get("archived"))
                ]
                gift = first_of_type(types, "gift card")
                cash = first_of_type(types, "cash")
                if gift is None or cash is None:
                    raise LightspeedError(
                        "Lightspeed account has no gift card or cash payment type",
                        code="payment_type_missing",
                    )
                self._payment_type_ids = (gift, cash)
            return self._payment_type_ids

    # ---- requests: paging, delivery, errors ----

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
        """A safe request, sent again after any failure; 404 is None when `not_found`."""

        async def attempt() -> dict[str, Any] | None:
            response = await self._send(method, path, params=params, cost=1.0)
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
        """One request with a valid token, paced; refreshes once on 401 and waits out 429s."""
        url = path if path.startswith("http") else f"{self._api_root}/{path}"
        refreshed = False
        throttled = 0
        while True:
            access_token = await self._tokens.access_token()
            await self.bucket.acquire(cost)
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
            wait = retry_after(response) or self.bucket.retry_after(cost) or 1.0
            if throttled > MAX_THROTTLE_RETRIES:
                raise NotSent("kept answering 429", retry_after=wait)
            log.info(
                "lightspeed_throttled",
                wait_s=wait,
                limit_type=response.headers.get("X-LS-API-RateLimit-Type"),
            )
            await self._sleep_hook(wait)


def _positive(amount: Decimal) -> Decimal:
    if not amount.is_finite() or amount <= 0:
        raise ValueError("amount must be a positive decimal")
    if amount != amount.quantize(Decimal("0.01")):
        raise ValueError("amount has more than two decimal places")
    return amount


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
    """A 4xx is Lightspeed's refusal (5xx and 429 never reach here)."""
    status = response.status_code
    if status < 400:
        return
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
