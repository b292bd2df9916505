"""Lightspeed Retail (R-Series) API V3 simulator, written from Lightspeed's developer docs.

The docs are mirrored in koop-voor-hoop/lightspeed-retail-client `docs/` (UPSTREAMS.md). Each
rule below names its page; where a page is silent, `Readings` (in `lightspeed_merchant`) says
which reading is played and tests run the flows under `Readings.strict()` and `.lenient()`.
The merchant's records and sale rules live in `lightspeed_merchant`, query parameters in
`lightspeed_query`; this module is the wire: OAuth, scopes, both rate limiters, the routes.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from app.sandbox import lightspeed_query as query
from app.sandbox.faults import Faults, faults_router
from app.sandbox.lightspeed_merchant import (
    CORRECT_SET_UP,
    CUSTOMERS_SCOPE,
    DEFAULT_SCOPES,
    GIFT_CARD_SCOPE,
    REGISTER_SCOPE,
    Card,
    Customer,
    Merchant,
    Payment,
    Readings,
    Refusal,
    Sale,
    as_list,
    iso,
    one_or_list,
)
from app.settings import BalanceSign

DEFAULT_ACCOUNT_ID = "12345"
DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_CLIENT_SECRET = "sandbox-secret"  # noqa: S105 - a simulator's fixed demo credential
GIFT_CARD_TYPE_ID = "5"
CASH_TYPE_ID = "1"
IN_STORE = {"shopID": "1", "registerID": "1", "employeeID": "1"}
# authentication/refresh-token.md: the body of a refused access token.
_ACCESS_DENIED = {
    "error": "access_denied",
    "error_description": "The resource owner or authorization server denied the request.",
    "hint": "Access token could not be verified",
}

Clock = Callable[[], float]


class _Answer(Exception):
    """Stops a handler with a ready response (auth, scope, throttle)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass
class _Access:
    expires_at: float
    scopes: frozenset[str]
    parent: str
    """The refresh token that issued it: revoked when this access token is first used."""
    used: bool = False


class LightspeedSimulator:
    def __init__(
        self,
        bucket_size: float | None = None,
        drip_rate: float | None = None,
        balance_sign: BalanceSign = BalanceSign.NEGATIVE,
        faults: Faults | None = None,
        *,
        account_id: str = DEFAULT_ACCOUNT_ID,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        can_view_gift_card_numbers: bool = True,
        access_token_ttl_s: int = 1800,
        code_lookup_interval_s: float = 1.0,
        licensed_registers: int = 1,
        readings: Readings | None = None,
        clock: Clock | None = None,
    ) -> None:
        # rate-limiting.md: bucket 90 and drip 1/s, +10 and +0.5/s per licensed register.
        extra = max(0, licensed_registers - 1)
        self.bucket_size = float(bucket_size if bucket_size is not None else 90 + 10 * extra)
        self.drip_rate = float(drip_rate if drip_rate is not None else 1 + 0.5 * extra)
        self.balance_sign = balance_sign
        self.faults = faults or Faults()
        self.account_id = account_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.can_view_gift_card_numbers = can_view_gift_card_numbers
        self.access_token_ttl_s = access_token_ttl_s
        self.code_lookup_interval_s = code_lookup_interval_s
        self.readings = readings or Readings.strict()
        self.clock: Clock = clock or time.time
        self.merchant = Merchant(self.readings, self._datetime)

        self._refresh_tokens: dict[str, frozenset[str]] = {}
        self._access_tokens: dict[str, _Access] = {}
        self._issued_from: dict[str, list[tuple[str, str]]] = {}
        self.refresh_count = 0
        self.request_count = 0
        self.rate_limited_count = 0
        self.rate_limited_by: dict[str, int] = {}
        self.units_charged = 0.0
        self.code_lookups = 0
        self._bucket_level = 0.0
        self._bucket_at = self.clock()
        self._burst_window = -1
        self._burst_count = 0
        self._last_code_lookup = -math.inf

        self.app = FastAPI(title="Lightspeed Retail simulator", docs_url=None, redoc_url=None)
        self.app.include_router(faults_router(self.faults))
        self.app.add_exception_handler(_Answer, _answer_handler)
        self.app.add_exception_handler(Refusal, _refusal_handler)
        self._routes()

    # ---- the merchant's records, for tests ----

    @property
    def cards(self) -> dict[str, Card]:
        return self.merchant.cards

    @property
    def sales(self) -> dict[str, Sale]:
        return self.merchant.sales

    @property
    def payments(self) -> dict[str, Payment]:
        return self.merchant.payments

    @property
    def customers(self) -> dict[str, Customer]:
        return self.merchant.customers

    @property
    def burst_limit(self) -> int:
        return max(1, round(self.bucket_size * self.readings.burst_fraction))

    def correct_set_up(self) -> dict[str, str]:
        """Ids of a set-up every check passes: `LIGHTSPEED_SHOP_ID` and friends."""
        return dict(CORRECT_SET_UP)

    # ---- helpers for tests: acting behind giftsync's back ----

    def issue_refresh_token(self, scopes: Iterable[str] | None = None) -> str:
        granted = frozenset(scopes) if scopes is not None else DEFAULT_SCOPES
        if scopes is None and not self.can_view_gift_card_numbers:
            granted = granted - {GIFT_CARD_SCOPE}
        token = f"ls-refresh-{secrets.token_urlsafe(16)}"
        self._refresh_tokens[token] = granted
        return token

    def withdraw_scope(self, scope: str) -> None:
        """The merchant authorises again without `scope`: every token loses it."""
        self.can_view_gift_card_numbers &= scope != GIFT_CARD_SCOPE
        for token, scopes in self._refresh_tokens.items():
            self._refresh_tokens[token] = scopes - {scope}
        for access in self._access_tokens.values():
            access.scopes = access.scopes - {scope}

    def expire_access_tokens(self) -> None:
        for access in self._access_tokens.values():
            access.expires_at = 0.0

    def add_customer(self, first: str, last: str, email: str) -> str:
        customer_id = self.merchant.next_id()
        self.customers[customer_id] = Customer(customer_id, first, last, email, self._now())
        return customer_id

    def add_gift_card(self, code: str, balance: Decimal, customer_id: str | None = None) -> str:
        """A card sold at the till: created, then loaded by a completed cash sale."""
        card = self.merchant.create_card({"code": code, "customerID": customer_id or "0"})
        if Decimal(balance) > 0:
            self.reload_in_store(card.credit_account_id, Decimal(balance))
        return card.credit_account_id

    def spend_in_store(self, credit_account_id: str, amount: Decimal) -> str:
        """A shopper pays for an item with the card; returns the gift card payment's id."""
        amount = Decimal(amount)
        if self.cards[credit_account_id].money < amount:
            raise ValueError("the card does not hold that much")
        sale = self.merchant.apply_sale(
            {
                **IN_STORE,
                "completed": True,
                "SaleLines": {
                    "SaleLine": {"itemID": 12, "unitQuantity": 1, "unitPrice": str(amount)}
                },
                "SalePayments": {
                    "SalePayment": {
                        "amount": str(amount),
                        "creditAccountID": credit_account_id,
                        "paymentTypeID": GIFT_CARD_TYPE_ID,
                    }
                },
            }
        )
        return sale.payment_ids[0]

    def reload_in_store(self, credit_account_id: str, amount: Decimal) -> str:
        """gift-cards.md Option 2 at the till, paid in cash; returns the gift card payment's id."""
        amount = Decimal(amount)
        sale = self.merchant.apply_sale(
            {
                **IN_STORE,
                "completed": True,
                "SalePayments": {
                    "SalePayment": [
                        {
                            "amount": str(-amount),
                            "creditAccountID": credit_account_id,
                            "paymentTypeID": GIFT_CARD_TYPE_ID,
                        },
                        {"amount": str(amount), "paymentTypeID": CASH_TYPE_ID},
                    ]
                },
            }
        )
        return sale.payment_ids[0]

    def card(self, credit_account_id: str) -> dict[str, str]:
        return self.merchant.render_card(
            self.cards[credit_account_id], masked=False, sign=self.balance_sign
        )

    def money_on(self, credit_account_id: str) -> Decimal:
        return self.cards[credit_account_id].money

    def seed_demo(self) -> list[str]:
        customer_id = self.add_customer("Dana", "Demo", "dana.demo@example.com")
        first = self.add_gift_card("2000000000018904", Decimal("100.00"), customer_id)
        second = self.add_gift_card("2000000000024411", Decimal("25.50"))
        self.spend_in_store(second, Decimal("5.50"))
        set_up = self.correct_set_up()
        return [
            f"Lightspeed R-Series simulator: account {self.account_id}, "
            f"bucket {self.bucket_size:g} drip {self.drip_rate:g}/s, "
            f"balances read {self.balance_sign.value}",
            f"  shops 1-2, registers 1-6 (3 is named eCom), employees 1-4, payment types 1-8; "
            f"giftsync uses shop {set_up['shop_id']}, register {set_up['register_id']}, "
            f"employee {set_up['employee_id']}, payment type {set_up['payment_type_id']} (Shopify)",
            f"  gift card {first}: code ending 8904, 100.00, customer Dana Demo",
            f"  gift card {second}: code ending 4411, 20.00 (5.50 spent in store)",
        ]

    # ---- clock ----

    def _datetime(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _now(self) -> datetime:
        return self.merchant.now()

    # ---- OAuth (authentication/refresh-token.md) ----

    async def _token(self, request: Request) -> Response:
        await self.faults.delay()
        form = await _token_form(request)
        if form.get("client_id") != self.client_id or (
            form.get("client_secret") != self.client_secret
        ):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        presented = str(form.get("refresh_token") or "")
        if not presented:
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        scopes = self._refresh_tokens.get(presented)
        if scopes is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if self.faults.draw_error():
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
        if not self.readings.lost_pair_survives_retry:
            for earlier_access, earlier_refresh in self._issued_from.get(presented, []):
                self._access_tokens.pop(earlier_access, None)
                self._refresh_tokens.pop(earlier_refresh, None)
        new_refresh = self.issue_refresh_token(scopes)
        new_access = f"ls-access-{secrets.token_urlsafe(16)}"
        # The old refresh token is revoked only once the new access token is used.
        self._access_tokens[new_access] = _Access(
            self.clock() + self.access_token_ttl_s, scopes, presented
        )
        self._issued_from.setdefault(presented, []).append((new_access, new_refresh))
        self.refresh_count += 1
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.access_token_ttl_s,
                "access_token": new_access,
                "refresh_token": new_refresh,
            }
        )

    def _bearer(self, request: Request) -> _Access:
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""
        access = self._access_tokens.get(token)
        if access is None or access.expires_at <= self.clock():
            raise _Answer(JSONResponse(_ACCESS_DENIED, status_code=401))
        if not access.used:
            access.used = True
            self._refresh_tokens.pop(access.parent, None)
            self._issued_from.pop(access.parent, None)
        return access

    # ---- admission: auth, scope, the burst limiter, the bucket (rate-limiting.md) ----

    async def _admit(
        self,
        request: Request,
        account_id: str,
        cost: float,
        scope: str,
        *,
        code_lookup: bool = False,
    ) -> tuple[dict[str, str], frozenset[str]]:
        await self.faults.delay()
        self.request_count += 1
        if request.query_params.get("count") == "1":
            cost = 10  # pagination.md: `count=1` costs 10 whatever else is asked
        access = self._bearer(request)
        if account_id != self.account_id:
            raise _Answer(_error(404, "Account not found"))
        # errors.md: 403 when the token lacks the endpoint's scope.
        if scope not in access.scopes:
            raise _Answer(_error(403, f"this request needs the scope {scope}"))
        self._leak()
        # "All requests add 1 increment to the burst rate limiter", on 1-second fixed windows.
        window = math.floor(self.clock())
        if window != self._burst_window:
            self._burst_window, self._burst_count = window, 0
        self._burst_count += 1
        if self._burst_count > self.burst_limit:
            self._throttle(cost, "api-burst-limiter", 1)
        # "The first request that would increase the bucket level beyond the bucket size is
        # allowed, but subsequent requests will be blocked ... until the bucket level reduces
        # below the bucket size."
        if self.faults.force_throttle or self._bucket_level >= self.bucket_size:
            over = self._bucket_level - self.bucket_size
            self._throttle(cost, "api-leaky-bucket", max(1, math.ceil(over / self.drip_rate)))
        if code_lookup:
            # gift-cards.md: "A rate limit of 1 request per second per lookup"; the 429's
            # limiter type for it is not documented.
            if self.clock() - self._last_code_lookup < self.code_lookup_interval_s:
                self._throttle(cost, "gift-card-code-lookup", 1)
            self._last_code_lookup = self.clock()
            self.code_lookups += 1
        self._bucket_level += cost
        self.units_charged += cost
        if self.faults.draw_error():
            raise _Answer(_error(503, "Service Unavailable", self._headers(cost)))
        return self._headers(cost), access.scopes

    def _leak(self) -> None:
        now = self.clock()
        self._bucket_level = max(0.0, self._bucket_level - (now - self._bucket_at) * self.drip_rate)
        self._bucket_at = now

    def _throttle(self, cost: float, kind: str, wait: int) -> None:
        self.rate_limited_count += 1
        self.rate_limited_by[kind] = self.rate_limited_by.get(kind, 0) + 1
        headers = {**self._headers(cost), "X-LS-API-RateLimit-Type": kind, "Retry-After": str(wait)}
        message = "burst rate limit exceeded" if kind == "api-burst-limiter" else "Rate Limited"
        raise _Answer(_error(429, message, headers))

    def _headers(self, cost: float) -> dict[str, str]:
        return {
            "X-LS-Acct-Id": self.account_id,
            "X-LS-Api-Bucket-Level": f"{_number(self._bucket_level)}/{_number(self.bucket_size)}",
            "X-LS-API-Burst-Level": f"{self._burst_count}/{self.burst_limit}",
            "X-LS-Api-Drip-Rate": _number(self.drip_rate),
            "X-LS-Api-Request-Cost": _number(cost),
        }

    # ---- lists (pagination.md) ----

    def _list(
        self,
        request: Request,
        endpoint: str,
        records: list[Any],
        render: Callable[[Any], dict[str, Any]],
        sort_fields: dict[str, Callable[[Any], Any]],
        headers: dict[str, str],
        default_sort: str,
    ) -> JSONResponse:
        params = request.query_params
        if params.get("count") == "1":
            return JSONResponse({"@attributes": {"count": str(len(records))}}, headers=headers)
        field_name, descending = query.sort_key(endpoint, params.get("sort"), default_sort)
        getter = sort_fields.get(field_name, sort_fields[default_sort])
        records = sorted(records, key=lambda r: (getter(r), int(sort_fields[default_sort](r))))
        if descending:
            records.reverse()
        limit = query.page_limit(params.get("limit"))
        cursor = params.get("after")
        start = query.decode_cursor(cursor) if cursor else 0
        window = records[start : start + limit]

        def link(position: int) -> str:
            kept = {k: v for k, v in params.items() if k not in {"after", "before"}}
            kept.update(after=query.encode_cursor(position), limit=str(limit))
            return str(request.url.replace_query_params(**kept))

        # V3 lists carry next/previous only (update-to-v3.md); "" when there is none.
        attributes = {
            "next": link(start + limit) if start + limit < len(records) and limit else "",
            "previous": link(max(start - limit, 0)) if start > 0 else "",
        }
        body: dict[str, Any] = {"@attributes": attributes}
        if window:
            body[endpoint] = one_or_list([render(record) for record in window])
        return JSONResponse(body, headers=headers)

    @staticmethod
    def _one(endpoint: str, rendered: dict[str, Any], headers: dict[str, str]) -> JSONResponse:
        return JSONResponse({"@attributes": {"count": "1"}, endpoint: rendered}, headers=headers)

    def _relations(
        self, request: Request, endpoint: str, *, single: bool = False
    ) -> tuple[set[str], float]:
        raw = request.query_params.get("load_relations")
        loaded = query.relations(endpoint, raw, self.readings)
        return loaded, query.relations_cost(endpoint, loaded, query=not single)

    # ---- routes ----

    def _routes(self) -> None:
        self.app.add_api_route("/auth/oauth/token", self._token, methods=["POST"])
        prefix = "/API/V3/Account/{account_id}"
        routes: list[tuple[str, Callable[..., Any], str]] = [
            ("/Shop.json", self._shops, "GET"),
            ("/Shop/{record_id}.json", self._shop, "GET"),
            ("/Register.json", self._registers, "GET"),
            ("/Register/{record_id}.json", self._register, "GET"),
            ("/Employee.json", self._employees, "GET"),
            ("/Employee/{record_id}.json", self._employee, "GET"),
            ("/PaymentType.json", self._payment_types, "GET"),
            ("/PaymentType/{record_id}.json", self._payment_type, "GET"),
            ("/CreditAccount.json", self._credit_accounts, "GET"),
            ("/CreditAccount.json", self._create_credit_account, "POST"),
            ("/CreditAccount/{record_id}.json", self._credit_account, "GET"),
            ("/CreditAccount/{record_id}.json", self._archive_credit_account, "DELETE"),
            ("/Sale.json", self._sales, "GET"),
            ("/Sale.json", self._create_sale, "POST"),
            ("/Sale/{record_id}.json", self._sale, "GET"),
            ("/SalePayment.json", self._sale_payments, "GET"),
            ("/Customer.json", self._customers, "GET"),
            ("/Customer/{record_id}.json", self._customer, "GET"),
        ]
        for path, handler, method in routes:
            self.app.add_api_route(prefix + path, handler, methods=[method])

    # set-up records: shop.md, register.md, employee.md, paymenttype.md (any of the scopes in
    # their tables, employee:register among them)

    async def _shops(self, request: Request, account_id: str) -> Response:
        loaded, extra = self._relations(request, "Shop")
        headers, _ = await self._admit(request, account_id, 1 + extra, REGISTER_SCOPE)
        shops = list(self.merchant.shops.values())
        shops = _filter(request, shops, {"shopID": lambda s: s.shop_id}, _archived(request))
        return self._list(
            request, "Shop", shops, lambda s: self._render_shop(s, loaded),
            {"shopID": lambda s: int(s.shop_id)}, headers, "shopID",
        )  # fmt: skip

    async def _shop(self, request: Request, account_id: str, record_id: str) -> Response:
        loaded, extra = self._relations(request, "Shop", single=True)
        headers, _ = await self._admit(request, account_id, 1 + extra, REGISTER_SCOPE)
        shop = self.merchant.shops.get(record_id)
        if shop is None:
            raise _Answer(_error(404, "Shop not found", headers))
        return self._one("Shop", self._render_shop(shop, loaded), headers)

    async def _registers(self, request: Request, account_id: str) -> Response:
        headers, _ = await self._admit(request, account_id, 1, REGISTER_SCOPE)
        registers = _filter(
            request,
            list(self.merchant.registers.values()),
            {"registerID": lambda r: r.register_id, "shopID": lambda r: r.shop_id},
            _archived(request),
        )
        return self._list(
            request, "Register", registers, _render_register,
            {"registerID": lambda r: int(r.register_id)}, headers, "registerID",
        )  # fmt: skip

    async def _register(self, request: Request, account_id: str, record_id: str) -> Response:
        headers, _ = await self._admit(request, account_id, 1, REGISTER_SCOPE)
        register = self.merchant.registers.get(record_id)
        if register is None:
            raise _Answer(_error(404, "Register not found", headers))
        return self._one("Register", _render_register(register), headers)

    async def _employees(self, request: Request, account_id: str) -> Response:
        headers, _ = await self._admit(request, account_id, 1, REGISTER_SCOPE)
        employees = _filter(
            request,
            list(self.merchant.employees.values()),
            {"employeeID": lambda e: e.employee_id},
            _archived(request),
        )
        return self._list(
            request, "Employee", employees, _render_employee,
            {"employeeID": lambda e: int(e.employee_id)}, headers, "employeeID",
        )  # fmt: skip

    async def _employee(self, request: Request, account_id: str, record_id: str) -> Response:
        headers, _ = await self._admit(request, account_id, 1, REGISTER_SCOPE)
        employee = self.merchant.employees.get(record_id)
        if employee is None:
            raise _Answer(_error(404, "Employee not found", headers))
        return self._one("Employee", _render_employee(employee), headers)

    async def _payment_types(self, request: Request, account_id: str) -> Response:
        headers, _ = await self._admit(request, account_id, 1, REGISTER_SCOPE)
        kinds = _filter(
            request,
            list(self.merchant.payment_types.values()),
            {"paymentTypeID": lambda t: t.payment_type_id, "type": lambda t: t.type},
            _archived(request),
        )
        return self._list(
            request, "PaymentType", kinds, _render_payment_type,
            {"paymentTypeID": lambda t: int(t.payment_type_id)}, headers, "paymentTypeID",
        )  # fmt: skip

    async def _payment_type(self, request: Request, account_id: str, record_id: str) -> Response:
        headers, _ = await self._admit(request, account_id, 1, REGISTER_SCOPE)
        kind = self.merchant.payment_types.get(record_id)
        if kind is None:
            raise _Answer(_error(404, "PaymentType not found", headers))
        return self._one("PaymentType", _render_payment_type(kind), headers)

    # gift cards: creditaccount.md, tutorials/gift-cards.md

    async def _credit_accounts(self, request: Request, account_id: str) -> Response:
        params = request.query_params
        lookup = "code" in params
        headers, scopes = await self._admit(
            request, account_id, 1, CUSTOMERS_SCOPE, code_lookup=lookup
        )
        if lookup and query.split_operator(params["code"])[0] != "=":
            raise _Answer(_error(400, "Only the equals operator can be used for lookup", headers))
        if "timeStamp" in params and not self.readings.credit_account_time_filter:
            raise _Answer(_error(400, "Only the equals operator can be used for lookup", headers))
        # "The query giftCard=true must be passed for the results to include ... giftCard".
        cards = list(self.cards.values()) if params.get("giftCard") == "true" else []
        cards = _filter(
            request,
            cards,
            {
                "creditAccountID": lambda c: c.credit_account_id,
                "customerID": lambda c: c.customer_id,
                "code": lambda c: c.code,
            },
            _archived(request),
        )
        if "timeStamp" in params:
            cards = [
                c
                for c in cards
                if query.time_matches(c.time_stamp, params["timeStamp"], self.readings)
            ]
        masked = GIFT_CARD_SCOPE not in scopes
        return self._list(
            request, "CreditAccount", cards,
            lambda c: self.merchant.render_card(c, masked=masked, sign=self.balance_sign),
            {
                "creditAccountID": lambda c: int(c.credit_account_id),
                "timeStamp": lambda c: c.time_stamp,
                "customerID": lambda c: int(c.customer_id),
            },
            headers, "creditAccountID",
        )  # fmt: skip

    async def _credit_account(self, request: Request, account_id: str, record_id: str) -> Response:
        headers, scopes = await self._admit(request, account_id, 1, CUSTOMERS_SCOPE)
        card = self.cards.get(record_id)
        if card is None:
            raise _Answer(_error(404, "CreditAccount not found", headers))
        masked = GIFT_CARD_SCOPE not in scopes
        rendered = self.merchant.render_card(card, masked=masked, sign=self.balance_sign)
        return self._one("CreditAccount", rendered, headers)

    async def _create_credit_account(self, request: Request, account_id: str) -> Response:
        # No Request Cost table on creditaccount.md: the base cost of 1.
        headers, scopes = await self._admit(request, account_id, 1, CUSTOMERS_SCOPE)
        card = self.merchant.create_card(await _json(request))
        if self.faults.draw_lost_answer():
            await self.faults.hang()
        # gift-cards.md: even the create answer shows the code masked without the scope.
        masked = GIFT_CARD_SCOPE not in scopes
        rendered = self.merchant.render_card(card, masked=masked, sign=self.balance_sign)
        return self._one("CreditAccount", rendered, headers)

    async def _archive_credit_account(
        self, request: Request, account_id: str, record_id: str
    ) -> Response:
        headers, scopes = await self._admit(request, account_id, 1, CUSTOMERS_SCOPE)
        card = self.cards.get(record_id)
        if card is None:
            raise _Answer(_error(404, "CreditAccount not found", headers))
        # creditaccount.md: DELETE archives and does not remove the balance.
        if not card.archived:
            card.archived = True
            card.time_stamp = self._now()
        masked = GIFT_CARD_SCOPE not in scopes
        rendered = self.merchant.render_card(card, masked=masked, sign=self.balance_sign)
        return self._one("CreditAccount", rendered, headers)

    # sales: sale.md, salepayment.md

    async def _create_sale(self, request: Request, account_id: str) -> Response:
        body = await _json(request)
        nested = len(as_list((body.get("SalePayments") or {}).get("SalePayment"))) + len(
            as_list((body.get("SaleLines") or {}).get("SaleLine"))
        )
        completed = body.get("completed") is True or str(body.get("completed")).lower() == "true"
        # sale.md: a Sale POST costs 2, +3 with `completed` in the payload; rate-limiting.md:
        # +0.5 per nested relation entity.
        cost = 2 + (3 if "completed" in body and completed else 0) + 0.5 * nested
        headers, _ = await self._admit(request, account_id, cost, REGISTER_SCOPE)
        try:
            sale = self.merchant.apply_sale(body)
        except Refusal as refusal:
            raise _Answer(_error(refusal.status, refusal.message, headers)) from None
        if self.faults.draw_lost_answer():
            await self.faults.hang()
        everything = {"SaleLines", "SalePayments", "SalePayments.SaleAccounts"}
        return self._one("Sale", self.merchant.render_sale(sale, everything), headers)

    async def _sales(self, request: Request, account_id: str) -> Response:
        loaded, extra = self._relations(request, "Sale")
        headers, _ = await self._admit(request, account_id, 1 + extra, REGISTER_SCOPE)
        params = request.query_params
        fields: dict[str, Callable[[Sale], str]] = {
            "saleID": lambda s: s.sale_id,
            "completed": lambda s: "true" if s.completed else "false",
            "shopID": lambda s: s.shop_id,
            "registerID": lambda s: s.register_id,
            "customerID": lambda s: s.customer_id,
        }
        if self.readings.reference_number_filter:
            fields["referenceNumber"] = lambda s: s.reference_number
        sales = _filter(request, list(self.sales.values()), fields, None)
        if "timeStamp" in params:
            sales = [
                s
                for s in sales
                if query.time_matches(s.time_stamp, params["timeStamp"], self.readings)
            ]
        return self._list(
            request, "Sale", sales, lambda s: self.merchant.render_sale(s, loaded),
            {"saleID": lambda s: int(s.sale_id), "timeStamp": lambda s: s.time_stamp,
             "completeTime": lambda s: s.time_stamp, "updatetime": lambda s: s.time_stamp},
            headers, "saleID",
        )  # fmt: skip

    async def _sale(self, request: Request, account_id: str, record_id: str) -> Response:
        loaded, extra = self._relations(request, "Sale", single=True)
        headers, _ = await self._admit(request, account_id, 1 + extra, REGISTER_SCOPE)
        sale = self.sales.get(record_id)
        if sale is None:
            raise _Answer(_error(404, "Sale not found", headers))
        return self._one("Sale", self.merchant.render_sale(sale, loaded), headers)

    async def _sale_payments(self, request: Request, account_id: str) -> Response:
        _, extra = self._relations(request, "SalePayment")
        headers, _ = await self._admit(request, account_id, 1 + extra, REGISTER_SCOPE)
        if "timeStamp" in request.query_params:
            # salepayment.md lists no timeStamp field (only createTime).
            raise _Answer(_error(400, "SalePayment has no field timeStamp", headers))
        payments = _filter(
            request,
            list(self.payments.values()),
            {
                "salePaymentID": lambda p: p.sale_payment_id,
                "saleID": lambda p: p.sale_id,
                "paymentTypeID": lambda p: p.payment_type_id,
                "creditAccountID": lambda p: p.credit_account_id,
                "remoteReference": lambda p: p.remote_reference,
            },
            None,
        )
        return self._list(
            request, "SalePayment", payments, self.merchant.render_payment,
            {"salePaymentID": lambda p: int(p.sale_payment_id), "saleID": lambda p: int(p.sale_id),
             "timeStamp": lambda p: p.time_stamp},
            headers, "salePaymentID",
        )  # fmt: skip

    # customers: customer.md

    async def _customers(self, request: Request, account_id: str) -> Response:
        loaded, extra = self._relations(request, "Customer")
        headers, _ = await self._admit(request, account_id, 1 + extra, CUSTOMERS_SCOPE)
        customers = _filter(
            request, list(self.customers.values()), {"customerID": lambda c: c.customer_id}, None
        )
        return self._list(
            request, "Customer", customers, lambda c: _render_customer(c, loaded),
            {"customerID": lambda c: int(c.customer_id), "timeStamp": lambda c: c.time_stamp},
            headers, "customerID",
        )  # fmt: skip

    async def _customer(self, request: Request, account_id: str, record_id: str) -> Response:
        loaded, extra = self._relations(request, "Customer", single=True)
        headers, _ = await self._admit(request, account_id, 1 + extra, CUSTOMERS_SCOPE)
        customer = self.customers.get(record_id)
        if customer is None:
            raise _Answer(_error(404, "Customer not found", headers))
        return self._one("Customer", _render_customer(customer, loaded), headers)

    def _render_shop(self, shop: Any, loaded: set[str]) -> dict[str, Any]:
        rendered: dict[str, Any] = {
            "shopID": shop.shop_id,
            "name": shop.name,
            "timeZone": shop.time_zone,
            "archived": "true" if shop.archived else "false",
        }
        if "Registers" in loaded:
            registers = [
                _render_register(r)
                for r in self.merchant.registers.values()
                if r.shop_id == shop.shop_id
            ]
            rendered["Registers"] = {"Register": one_or_list(registers)} if registers else ""
        return rendered


# ---- rendering of set-up records (each endpoint page's sample response) ----------------------


def _render_register(register: Any) -> dict[str, str]:
    return {
        "registerID": register.register_id,
        "name": register.name,
        "open": "false",
        "archived": "true" if register.archived else "false",
        "tipEnabled": "false",
        "openEmployeeID": "0",
        "shopID": register.shop_id,
    }


def _render_employee(employee: Any) -> dict[str, str]:
    return {
        "employeeID": employee.employee_id,
        "firstName": employee.first_name,
        "lastName": employee.last_name,
        "lockOut": "true" if employee.lock_out else "false",
        "archived": "true" if employee.archived else "false",
        "limitToShopID": employee.limit_to_shop_id,
    }


def _render_payment_type(kind: Any) -> dict[str, str]:
    return {
        "paymentTypeID": kind.payment_type_id,
        "name": kind.name,
        "requireCustomer": "false",
        "archived": "true" if kind.archived else "false",
        "internalReserved": "true" if kind.internal_reserved else "false",
        "type": kind.type,
        "refundAsPaymentTypeID": kind.refund_as_payment_type_id,
    }


def _render_customer(customer: Customer, loaded: set[str]) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "customerID": customer.customer_id,
        "firstName": customer.first_name,
        "lastName": customer.last_name,
        "archived": "false",
        "timeStamp": iso(customer.time_stamp),
    }
    if "Contact" in loaded:
        emails = {"ContactEmail": {"address": customer.email, "useType": "Primary"}}
        rendered["Contact"] = {"Emails": emails if customer.email else ""}
    return rendered


# ---- helpers -----------------------------------------------------------------------------------


def _filter(
    request: Request,
    records: list[Any],
    fields: dict[str, Callable[[Any], str]],
    archived: Callable[[Any], bool] | None,
) -> list[Any]:
    """query-parameters.md: `field=<op>,<value>` on the endpoint's fields; `archived`."""
    params = request.query_params
    for name, getter in fields.items():
        if name in params:
            records = [r for r in records if query.value_matches(getter(r), params[name])]
    if archived is not None:
        records = [r for r in records if archived(r)]
    return records


def _archived(request: Request) -> Callable[[Any], bool]:
    # query-parameters.md: archived=false (default) hides them, true shows both, only only.
    wanted = request.query_params.get("archived", "false")
    if wanted == "true":
        return lambda _record: True
    if wanted == "only":
        return lambda record: bool(record.archived)
    return lambda record: not record.archived


async def _token_form(request: Request) -> dict[str, str]:
    """refresh-token.md: the token endpoint takes JSON or form data."""
    raw = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return {k: str(v) for k, v in body.items()} if isinstance(body, dict) else {}
    parsed = parse_qs(raw.decode("utf-8", "replace"))
    return {name: values[0] for name, values in parsed.items()}


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refusal(400, "Body must be JSON") from exc
    if not isinstance(body, dict):
        raise Refusal(400, "Body must be a JSON object")
    return body


async def _answer_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Answer)
    return exc.response


async def _refusal_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    return _error(exc.status, exc.message)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # errors.md documents statuses, not bodies: a neutral object (UNCONFIRMED shape).
    return JSONResponse(
        {"httpCode": str(status), "message": message}, status_code=status, headers=headers
    )


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")
