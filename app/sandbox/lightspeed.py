"""Lightspeed Retail (R-Series) API V3 simulator: OAuth rotation, gift cards, sales, leaky bucket.

Faithful to UPSTREAMS.md: every value on the wire is a string, a one-item collection is a bare
object, lists page by cursor URLs, a gift card's balance moves only through completed sales,
and the balance is rendered with the configured (contradictorily documented) sign.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from app.sandbox.faults import Faults, faults_router
from app.settings import BalanceSign

GIFT_CARD_TYPE_ID = "5"
CASH_TYPE_ID = "1"
DEFAULT_ACCOUNT_ID = "12345"
DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_CLIENT_SECRET = "sandbox-secret"  # noqa: S105 - a simulator's fixed demo credential
MAX_LIMIT = 100

_PAYMENT_TYPES = [
    ("1", "Cash", "cash"),
    ("2", "Check", "user defined"),
    ("3", "Credit Card", "credit card"),
    ("4", "Credit Account", "credit account"),
    ("5", "Gift Card", "gift card"),
    ("7", "Debit Card", "user defined"),
]


class _Answer(Exception):
    """Stops a handler with a ready response (auth failure, throttle, validation)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass
class _Card:
    credit_account_id: str
    code: str
    money: Decimal
    name: str = ""
    description: str = ""
    customer_id: str = "0"
    archived: bool = False
    time_stamp: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class _Payment:
    sale_payment_id: str
    sale_id: str
    amount: Decimal
    payment_type_id: str
    credit_account_id: str
    remote_reference: str
    time_stamp: datetime


@dataclass
class _Sale:
    sale_id: str
    completed: bool
    payment_ids: list[str]
    customer_id: str
    time_stamp: datetime


@dataclass
class _Customer:
    customer_id: str
    first_name: str
    last_name: str
    email: str
    time_stamp: datetime


class LightspeedSimulator:
    def __init__(
        self,
        bucket_size: float = 90,
        drip_rate: float = 1.0,
        balance_sign: BalanceSign = BalanceSign.NEGATIVE,
        faults: Faults | None = None,
        *,
        account_id: str = DEFAULT_ACCOUNT_ID,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        can_view_gift_card_numbers: bool = True,
        access_token_ttl_s: int = 3600,
        code_lookup_interval_s: float = 1.0,
    ) -> None:
        self.bucket_size = float(bucket_size)
        self.drip_rate = float(drip_rate)
        self.balance_sign = balance_sign
        self.faults = faults or Faults()
        self.account_id = account_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.can_view_gift_card_numbers = can_view_gift_card_numbers
        self.access_token_ttl_s = access_token_ttl_s
        self.code_lookup_interval_s = code_lookup_interval_s

        self.cards: dict[str, _Card] = {}
        self.payments: dict[str, _Payment] = {}
        self.sales: dict[str, _Sale] = {}
        self.customers: dict[str, _Customer] = {}
        self._ids = itertools.count(1)
        self._last_time = datetime.now(UTC).replace(microsecond=0)

        self._refresh_tokens: set[str] = set()
        self._access_tokens: dict[str, float] = {}
        self.refresh_count = 0
        self.request_count = 0
        self.rate_limited_count = 0
        self._bucket_level = 0.0
        self._bucket_updated = time.monotonic()
        self._last_code_lookup = -math.inf

        self.app = FastAPI(title="Lightspeed Retail simulator", docs_url=None, redoc_url=None)
        self.app.include_router(faults_router(self.faults))
        self.app.add_exception_handler(_Answer, _answer_handler)
        self._routes()

    # ---- helpers for tests: acting behind giftsync's back ----

    def issue_refresh_token(self) -> str:
        token = f"ls-refresh-{secrets.token_urlsafe(16)}"
        self._refresh_tokens.add(token)
        return token

    def expire_access_tokens(self) -> None:
        for token in self._access_tokens:
            self._access_tokens[token] = 0.0

    def add_customer(self, first: str, last: str, email: str) -> str:
        customer_id = self._next_id()
        self.customers[customer_id] = _Customer(customer_id, first, last, email, self._now())
        return customer_id

    def add_gift_card(self, code: str, balance: Decimal, customer_id: str | None = None) -> str:
        card_id = self._next_id()
        self.cards[card_id] = _Card(
            credit_account_id=card_id,
            code=code,
            money=Decimal(balance),
            customer_id=customer_id or "0",
            time_stamp=self._now(),
        )
        return card_id

    def spend_in_store(self, credit_account_id: str, amount: Decimal) -> str:
        """A POS sale paid with the card: returns the sale payment id."""
        return self._pos_sale(credit_account_id, Decimal(amount))

    def reload_in_store(self, credit_account_id: str, amount: Decimal) -> str:
        """A POS top-up paid in cash: returns the gift card sale payment id."""
        return self._pos_sale(credit_account_id, -Decimal(amount))

    def card(self, credit_account_id: str) -> dict[str, str]:
        return self._render_card(self.cards[credit_account_id], masked=False)

    def money_on(self, credit_account_id: str) -> Decimal:
        return self.cards[credit_account_id].money

    def seed_demo(self) -> list[str]:
        customer_id = self.add_customer("Dana", "Demo", "dana.demo@example.com")
        first = self.add_gift_card("2000000000018904", Decimal("100.00"), customer_id)
        second = self.add_gift_card("2000000000024411", Decimal("25.50"))
        self.spend_in_store(second, Decimal("5.50"))
        return [
            f"Lightspeed R-Series simulator: account {self.account_id}, "
            f"bucket {self.bucket_size:g} drip {self.drip_rate:g}/s, "
            f"balances read {self.balance_sign.value}",
            f"  gift card {first}: code ending 8904, 100.00, customer Dana Demo",
            f"  gift card {second}: code ending 4411, 20.00 (5.50 spent in store)",
        ]

    # ---- state ----

    def _next_id(self) -> str:
        return str(next(self._ids))

    def _now(self) -> datetime:
        # Strictly increasing, so `timeStamp > cursor` never skips a change.
        now = datetime.now(UTC)
        self._last_time = max(now, self._last_time + timedelta(microseconds=1))
        return self._last_time

    def _pos_sale(self, credit_account_id: str, gift_amount: Decimal) -> str:
        card = self.cards[credit_account_id]
        if card.money - gift_amount < 0:
            raise ValueError("the card does not hold that much")
        payments = [
            {
                "amount": str(gift_amount),
                "paymentTypeID": GIFT_CARD_TYPE_ID,
                "creditAccountID": credit_account_id,
            }
        ]
        body: dict[str, Any] = {"completed": "true", "SalePayments": {"SalePayment": payments}}
        if gift_amount < 0:
            payments.append({"amount": str(-gift_amount), "paymentTypeID": CASH_TYPE_ID})
        else:
            # A shopper buying goods: the line the card pays for.
            body["SaleLines"] = {
                "SaleLine": {"itemID": "1", "unitQuantity": "1", "unitPrice": str(gift_amount)}
            }
        sale = self._apply_sale(body)
        return sale.payment_ids[0]

    def _apply_sale(self, body: dict[str, Any]) -> _Sale:
        completed = str(body.get("completed", "false")).lower() == "true"
        raw_payments = _as_list((body.get("SalePayments") or {}).get("SalePayment"))
        lines_total = Decimal(0)
        for line in _as_list((body.get("SaleLines") or {}).get("SaleLine")):
            lines_total += _money(line.get("unitPrice", "0")) * _money(
                line.get("unitQuantity", "1")
            )
        parsed: list[tuple[Decimal, str, str, str]] = []
        known_types = {type_id for type_id, _, _ in _PAYMENT_TYPES}
        for raw in raw_payments:
            amount = _money(raw.get("amount", "0"))
            type_id = str(raw.get("paymentTypeID", ""))
            if type_id not in known_types:
                raise _Answer(_error(422, f"Unknown paymentTypeID {type_id}"))
            card_id = str(raw.get("creditAccountID") or "0")
            if type_id == GIFT_CARD_TYPE_ID:
                card = self.cards.get(card_id)
                if card is None:
                    raise _Answer(_error(422, "Gift card payment needs a valid creditAccountID"))
                if card.archived:
                    raise _Answer(_error(422, "That gift card is archived"))
            parsed.append((amount, type_id, card_id, str(raw.get("remoteReference") or "")))
        if completed:
            paid = sum((amount for amount, _, _, _ in parsed), Decimal(0))
            if paid != lines_total:
                raise _Answer(_error(422, "Sale is not balanced: payments must equal the total"))
            moves: dict[str, Decimal] = {}
            for amount, type_id, card_id, _ in parsed:
                if type_id == GIFT_CARD_TYPE_ID:
                    moves[card_id] = moves.get(card_id, Decimal(0)) + amount
            for card_id, spent in moves.items():
                if self.cards[card_id].money - spent < 0:
                    raise _Answer(_error(422, "Gift card balance is too low for this payment"))
        now = self._now()
        sale = _Sale(self._next_id(), completed, [], str(body.get("customerID") or "0"), now)
        for amount, type_id, card_id, reference in parsed:
            payment = _Payment(
                self._next_id(), sale.sale_id, amount, type_id, card_id, reference, now
            )
            self.payments[payment.sale_payment_id] = payment
            sale.payment_ids.append(payment.sale_payment_id)
            if completed and type_id == GIFT_CARD_TYPE_ID:
                card = self.cards[card_id]
                card.money -= amount
                card.time_stamp = now
        self.sales[sale.sale_id] = sale
        return sale

    # ---- rendering: every value a string ----

    def _render_balance(self, money: Decimal) -> str:
        shown = -money if self.balance_sign is BalanceSign.NEGATIVE else money
        return f"{shown + Decimal(0):.2f}"

    def _render_card(self, card: _Card, *, masked: bool) -> dict[str, str]:
        code = card.code
        if masked:
            code = "*" * max(len(code) - 4, 0) + code[-4:]
        return {
            "creditAccountID": card.credit_account_id,
            "code": code,
            "name": card.name,
            "description": card.description,
            "giftCard": "true",
            "balance": self._render_balance(card.money),
            "creditLimit": "0.00",
            "customerID": card.customer_id,
            "archived": "true" if card.archived else "false",
            "timeStamp": _iso(card.time_stamp),
        }

    def _render_payment(self, payment: _Payment, *, with_sale: bool) -> dict[str, Any]:
        rendered: dict[str, Any] = {
            "salePaymentID": payment.sale_payment_id,
            "amount": f"{payment.amount:.2f}",
            "tipAmount": "0",
            "createTime": _iso(payment.time_stamp),
            "timeStamp": _iso(payment.time_stamp),
            "archived": "false",
            "remoteReference": payment.remote_reference,
            "paymentID": "",
            "saleID": payment.sale_id,
            "paymentTypeID": payment.payment_type_id,
            "ccChargeID": "0",
            "refPaymentID": "0",
            "registerID": "1",
            "employeeID": "1",
            "creditAccountID": payment.credit_account_id,
        }
        if with_sale:
            sale = self.sales[payment.sale_id]
            rendered["Sale"] = {
                "saleID": sale.sale_id,
                "completed": "true" if sale.completed else "false",
                "customerID": sale.customer_id,
                "timeStamp": _iso(sale.time_stamp),
            }
        return rendered

    def _render_sale(self, sale: _Sale) -> dict[str, Any]:
        payments = [
            self._render_payment(self.payments[pid], with_sale=False) for pid in sale.payment_ids
        ]
        total = sum((self.payments[pid].amount for pid in sale.payment_ids), Decimal(0))
        return {
            "saleID": sale.sale_id,
            "completed": "true" if sale.completed else "false",
            "archived": "false",
            "voided": "false",
            "customerID": sale.customer_id,
            "shopID": "1",
            "registerID": "1",
            "employeeID": "1",
            "calcTotal": f"{total:.2f}",
            "timeStamp": _iso(sale.time_stamp),
            "SalePayments": {"SalePayment": _one_or_list(payments)} if payments else "",
        }

    def _render_customer(self, customer: _Customer) -> dict[str, Any]:
        return {
            "customerID": customer.customer_id,
            "firstName": customer.first_name,
            "lastName": customer.last_name,
            "archived": "false",
            "timeStamp": _iso(customer.time_stamp),
            "Contact": {
                "Emails": {"ContactEmail": {"address": customer.email, "useType": "Primary"}}
            },
        }

    # ---- the wire ----

    def _leak(self) -> None:
        now = time.monotonic()
        elapsed = now - self._bucket_updated
        self._bucket_level = max(0.0, self._bucket_level - elapsed * self.drip_rate)
        self._bucket_updated = now

    def _bucket_headers(self, cost: float) -> dict[str, str]:
        return {
            "X-LS-API-Bucket-Level": f"{_number(self._bucket_level)}/{_number(self.bucket_size)}",
            "X-LS-API-Drip-Rate": _number(self.drip_rate),
            "X-LS-Api-Request-Cost": _number(cost),
        }

    async def _admit(
        self, request: Request, account_id: str, cost: float, *, code_lookup: bool = False
    ) -> dict[str, str]:
        """Auth, faults, the account's bucket; returns the headers every answer carries."""
        await self.faults.delay()
        self.request_count += 1
        self._check_bearer(request)
        if account_id != self.account_id:
            raise _Answer(_error(404, "Account not found"))
        self._leak()
        throttle_type = None
        if self.faults.force_throttle or self._bucket_level + cost > self.bucket_size:
            throttle_type = "bucket"
        elif (
            code_lookup and time.monotonic() - self._last_code_lookup < self.code_lookup_interval_s
        ):
            throttle_type = "endpoint"
        if throttle_type is not None:
            self.rate_limited_count += 1
            over = self._bucket_level + cost - self.bucket_size
            wait = max(1, math.ceil(over / self.drip_rate)) if over > 0 else 1
            headers = {
                **self._bucket_headers(cost),
                "Retry-After": str(wait),
                "X-LS-API-RateLimit-Type": throttle_type,
            }
            raise _Answer(_error(429, "Rate limit exceeded", headers))
        if code_lookup:
            self._last_code_lookup = time.monotonic()
        self._bucket_level += cost
        if self.faults.draw_error():
            raise _Answer(_error(503, "Service Unavailable", self._bucket_headers(cost)))
        return self._bucket_headers(cost)

    def _check_bearer(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        expires = self._access_tokens.get(token)
        if expires is None or expires <= time.monotonic():
            raise _Answer(
                JSONResponse(
                    {"httpCode": "401", "httpMessage": "Unauthorized", "message": "Invalid token"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            )

    def _page(
        self, request: Request, resource: str, items: list[dict[str, Any]], headers: dict[str, str]
    ) -> JSONResponse:
        params = request.query_params
        try:
            limit = min(int(params.get("limit", MAX_LIMIT)), MAX_LIMIT)
        except ValueError:
            limit = MAX_LIMIT
        limit = max(limit, 1)
        cursor = params.get("after")
        offset = _decode_cursor(cursor) if cursor else 0
        if "offset" in params and "after" not in params:
            offset = int(params["offset"]) if params["offset"].isdigit() else 0
        window = items[offset : offset + limit]

        def link(position: int) -> str:
            query = {k: v for k, v in params.items() if k not in {"after", "offset"}}
            query["after"] = _encode_cursor(position)
            return str(request.url.replace_query_params(**query))

        more = offset + limit < len(items)
        attributes = {
            "count": str(len(items)),
            "offset": str(offset),
            "limit": str(limit),
            "next": link(offset + limit) if more else "",
            "previous": link(max(offset - limit, 0)) if offset > 0 else "",
        }
        body: dict[str, Any] = {"@attributes": attributes}
        if window:
            body[resource] = _one_or_list(window)
        return JSONResponse(body, headers=headers)

    def _routes(self) -> None:
        app = self.app
        prefix = "/API/V3/Account/{account_id}"

        @app.post("/auth/oauth/token")
        async def token(request: Request) -> Response:
            await self.faults.delay()
            # Parsed by hand: Starlette's form parser needs python-multipart, not a dependency.
            raw_form = parse_qs((await request.body()).decode("utf-8", "replace"))
            form = {name: values[0] for name, values in raw_form.items()}
            if form.get("client_id") != self.client_id or (
                form.get("client_secret") != self.client_secret
            ):
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            if form.get("grant_type") != "refresh_token":
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            presented = str(form.get("refresh_token") or "")
            if presented not in self._refresh_tokens:
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "refresh token is invalid"},
                    status_code=400,
                )
            if self.faults.draw_error():
                return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
            self._refresh_tokens.discard(presented)
            new_refresh = self.issue_refresh_token()
            new_access = f"ls-access-{secrets.token_urlsafe(16)}"
            self._access_tokens[new_access] = time.monotonic() + self.access_token_ttl_s
            self.refresh_count += 1
            return JSONResponse(
                {
                    "access_token": new_access,
                    "refresh_token": new_refresh,
                    "expires_in": self.access_token_ttl_s,
                    "token_type": "bearer",
                    "scope": "employee:all"
                    + (
                        " employee:customers_view_gift_card_numbers"
                        if self.can_view_gift_card_numbers
                        else ""
                    ),
                }
            )

        @app.get(prefix + "/CreditAccount.json")
        async def list_credit_accounts(request: Request, account_id: str) -> Response:
            params = request.query_params
            headers = await self._admit(request, account_id, 1.0, code_lookup="code" in params)
            cards = list(self.cards.values())
            if params.get("giftCard") != "true":
                return JSONResponse(
                    _error_body(400, "List calls must filter on giftCard=true"),
                    status_code=400,
                    headers=headers,
                )
            archived = params.get("archived", "false")
            if archived == "only":
                cards = [c for c in cards if c.archived]
            elif archived != "true":
                cards = [c for c in cards if not c.archived]
            if "code" in params:
                cards = [c for c in cards if c.code == params["code"]]
            for name, attribute in (
                ("creditAccountID", "credit_account_id"),
                ("customerID", "customer_id"),
            ):
                if name in params:
                    cards = [c for c in cards if _matches(getattr(c, attribute), params[name])]
            if "timeStamp" in params:
                cards = [c for c in cards if _matches_time(c.time_stamp, params["timeStamp"])]
            cards.sort(key=_card_sort_key(params.get("sort", "creditAccountID")))
            masked = not self.can_view_gift_card_numbers
            rendered = [self._render_card(c, masked=masked) for c in cards]
            return self._page(request, "CreditAccount", rendered, headers)

        @app.get(prefix + "/CreditAccount/{credit_account_id}.json")
        async def get_credit_account(
            request: Request, account_id: str, credit_account_id: str
        ) -> Response:
            headers = await self._admit(request, account_id, 1.0)
            card = self.cards.get(credit_account_id)
            if card is None:
                return JSONResponse(
                    _error_body(404, "CreditAccount not found"), status_code=404, headers=headers
                )
            rendered = self._render_card(card, masked=not self.can_view_gift_card_numbers)
            return JSONResponse(
                {"@attributes": {"count": "1"}, "CreditAccount": rendered}, headers=headers
            )

        @app.post(prefix + "/CreditAccount.json")
        async def create_credit_account(request: Request, account_id: str) -> Response:
            headers = await self._admit(request, account_id, 1.0)
            body = await _json(request)
            code = str(body.get("code") or "")
            if not 8 <= len(code) <= 32:
                raise _Answer(_error(422, "code must be 8-32 characters", headers))
            if any(c.code == code for c in self.cards.values()):
                raise _Answer(_error(422, "That gift card code is already in use", headers))
            if str(body.get("giftCard", "false")).lower() != "true":
                raise _Answer(_error(422, "Only gift cards are simulated", headers))
            customer_id = str(body.get("customerID") or "0")
            if customer_id != "0" and customer_id not in self.customers:
                raise _Answer(_error(422, "customerID does not exist", headers))
            card_id = self.add_gift_card(code, Decimal(0), customer_id)
            card = self.cards[card_id]
            card.name = str(body.get("name") or "")
            card.description = str(body.get("description") or "")
            if self.faults.draw_lost_answer():
                await self.faults.hang()
            rendered = self._render_card(card, masked=not self.can_view_gift_card_numbers)
            return JSONResponse(
                {"@attributes": {"count": "1"}, "CreditAccount": rendered}, headers=headers
            )

        @app.delete(prefix + "/CreditAccount/{credit_account_id}.json")
        async def archive_credit_account(
            request: Request, account_id: str, credit_account_id: str
        ) -> Response:
            headers = await self._admit(request, account_id, 1.0)
            card = self.cards.get(credit_account_id)
            if card is None:
                raise _Answer(_error(404, "CreditAccount not found", headers))
            if not card.archived:
                card.archived = True
                card.time_stamp = self._now()
            rendered = self._render_card(card, masked=not self.can_view_gift_card_numbers)
            return JSONResponse(
                {"@attributes": {"count": "1"}, "CreditAccount": rendered}, headers=headers
            )

        @app.get(prefix + "/PaymentType.json")
        async def list_payment_types(request: Request, account_id: str) -> Response:
            headers = await self._admit(request, account_id, 1.0)
            rendered = [
                {
                    "paymentTypeID": type_id,
                    "name": name,
                    "requireCustomer": "false",
                    "archived": "false",
                    "internalReserved": "true",
                    "type": kind,
                    "refundAsPaymentTypeID": "0",
                }
                for type_id, name, kind in _PAYMENT_TYPES
            ]
            return self._page(request, "PaymentType", rendered, headers)

        @app.post(prefix + "/Sale.json")
        async def create_sale(request: Request, account_id: str) -> Response:
            body = await _json(request)
            completed = str(body.get("completed", "false")).lower() == "true"
            nested = len(_as_list((body.get("SalePayments") or {}).get("SalePayment"))) + len(
                _as_list((body.get("SaleLines") or {}).get("SaleLine"))
            )
            cost = 2.0 + (3.0 if completed else 0.0) + 0.5 * nested
            headers = await self._admit(request, account_id, cost)
            try:
                sale = self._apply_sale(body)
            except _Answer as answer:
                answer.response.headers.update(headers)
                raise
            if self.faults.draw_lost_answer():
                await self.faults.hang()
            return JSONResponse(
                {"@attributes": {"count": "1"}, "Sale": self._render_sale(sale)}, headers=headers
            )

        @app.get(prefix + "/Sale.json")
        async def list_sales(request: Request, account_id: str) -> Response:
            headers = await self._admit(request, account_id, 1.0)
            params = request.query_params
            sales = list(self.sales.values())
            if "completed" in params:
                sales = [s for s in sales if _matches(_flag(s.completed), params["completed"])]
            if "timeStamp" in params:
                sales = [s for s in sales if _matches_time(s.time_stamp, params["timeStamp"])]
            sales.sort(key=lambda s: (s.time_stamp, int(s.sale_id)))
            return self._page(request, "Sale", [self._render_sale(s) for s in sales], headers)

        @app.get(prefix + "/SalePayment.json")
        async def list_sale_payments(request: Request, account_id: str) -> Response:
            headers = await self._admit(request, account_id, 1.0)
            params = request.query_params
            payments = list(self.payments.values())
            for name, attribute in (
                ("remoteReference", "remote_reference"),
                ("paymentTypeID", "payment_type_id"),
                ("creditAccountID", "credit_account_id"),
                ("saleID", "sale_id"),
            ):
                if name in params:
                    payments = [
                        p for p in payments if _matches(getattr(p, attribute), params[name])
                    ]
            if "timeStamp" in params:
                payments = [p for p in payments if _matches_time(p.time_stamp, params["timeStamp"])]
            payments.sort(key=lambda p: (p.time_stamp, int(p.sale_payment_id)))
            with_sale = "Sale" in _relations(params.get("load_relations"))
            rendered = [self._render_payment(p, with_sale=with_sale) for p in payments]
            return self._page(request, "SalePayment", rendered, headers)

        @app.get(prefix + "/Customer.json")
        async def list_customers(request: Request, account_id: str) -> Response:
            headers = await self._admit(request, account_id, 1.0)
            customers = sorted(self.customers.values(), key=lambda c: int(c.customer_id))
            rendered = [self._render_customer(c) for c in customers]
            return self._page(request, "Customer", rendered, headers)

        @app.get(prefix + "/Customer/{customer_id}.json")
        async def get_customer(request: Request, account_id: str, customer_id: str) -> Response:
            headers = await self._admit(request, account_id, 1.0)
            customer = self.customers.get(customer_id)
            if customer is None:
                raise _Answer(_error(404, "Customer not found", headers))
            return JSONResponse(
                {"@attributes": {"count": "1"}, "Customer": self._render_customer(customer)},
                headers=headers,
            )


async def _answer_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Answer)
    return exc.response


def _error_body(status: int, message: str) -> dict[str, str]:
    return {
        "httpCode": str(status),
        "httpMessage": {
            400: "Bad Request",
            404: "Not Found",
            409: "Conflict",
            422: "Unprocessable Entity",
            429: "Too Many Requests",
            503: "Service Unavailable",
        }.get(status, "Error"),
        "message": message,
        "errorClass": "SimulatedError",
    }


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(_error_body(status, message), status_code=status, headers=headers)


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Answer(_error(400, "Body must be JSON")) from exc
    if not isinstance(body, dict):
        raise _Answer(_error(400, "Body must be a JSON object"))
    return body


def _as_list(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    if isinstance(value, dict):
        return [value]
    return []


def _one_or_list(items: list[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    return items[0] if len(items) == 1 else items


def _money(raw: Any) -> Decimal:
    try:
        value = Decimal(str(raw))
    except InvalidOperation as exc:
        raise _Answer(_error(422, "amount must be a number")) from exc
    if not value.is_finite():
        raise _Answer(_error(422, "amount must be a number"))
    return value


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _split_operator(raw: str) -> tuple[str, str]:
    """`>,value` style filters; a bare value means equality."""
    for operator in (">=", "<=", "!=", ">", "<", "="):
        if raw.startswith(operator + ","):
            return operator, raw[len(operator) + 1 :]
    return "=", raw


def _matches(actual: str, raw: str) -> bool:
    operator, expected = _split_operator(raw)
    if operator in {">=", "<=", ">", "<"}:
        try:
            left, right = Decimal(actual), Decimal(expected)
        except InvalidOperation:
            return False
        return _compare(left, right, operator)
    return (actual == expected) == (operator == "=")


def _matches_time(actual: datetime, raw: str) -> bool:
    operator, expected = _split_operator(raw)
    try:
        moment = datetime.fromisoformat(expected.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _Answer(_error(400, "timeStamp filter is not an ISO 8601 time")) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if operator == "=":
        return actual == moment
    if operator == "!=":
        return actual != moment
    return _compare(actual, moment, operator)


def _compare(left: Any, right: Any, operator: str) -> bool:
    if operator == ">":
        return bool(left > right)
    if operator == ">=":
        return bool(left >= right)
    if operator == "<":
        return bool(left < right)
    return bool(left <= right)


def _card_sort_key(sort: str) -> Any:
    descending = sort.startswith("-")
    name = sort.lstrip("-")

    def key(card: _Card) -> Any:
        if name == "timeStamp":
            return (card.time_stamp.timestamp(), int(card.credit_account_id))
        return (int(card.credit_account_id),)

    if descending:
        return lambda card: tuple(-part for part in key(card))
    return key


def _relations(raw: str | None) -> list[str]:
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        return [raw]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": position}).encode()).decode().rstrip("=")


def _decode_cursor(raw: str) -> int:
    try:
        padded = raw + "=" * (-len(raw) % 4)
        return max(int(json.loads(base64.urlsafe_b64decode(padded))["o"]), 0)
    except (ValueError, KeyError, TypeError) as exc:
        raise _Answer(_error(400, "Invalid cursor")) from exc
