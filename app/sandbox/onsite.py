"""Lightspeed OnSite simulator: XML REST on the merchant's server, written from the sources.

Sources (each rule below names one): onsite-docs.lightspeedhq.com `external_api/getting_started`
(headers, Basic auth, the `LS_SERVER_SESSION_ID` cookie, seats) and `tutorials/invoices.html`
(the list of summaries, `count`/`offset`, logout answering 204); the Java OnSite connector
commercetools/sphere-lightspeed-onsite-connector (a full invoice, `filter=` expressions such as
`datetime_modified > "..."` and `code == "15"`). No gift card resource exists: a card is a
serial on gift card product lines (sold, loaded) and "Gift Card" payments (redeemed); a payment
above the balance is refused. The records and their XML live in `onsite_records`; what no
source shows is played per `OnSiteReadings`.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from xml.etree.ElementTree import Element, tostring

from fastapi import FastAPI, Request
from fastapi.responses import Response

from app.sandbox.faults import Faults, faults_router
from app.sandbox.onsite_records import (
    CORRECT_SET_UP,
    GIFT_CARD_METHOD,
    PAYMENT_METHODS,
    OnSiteReadings,
    Refused,
    SimCustomer,
    SimInvoice,
    SimLine,
    SimPayment,
    add,
    customer_in,
    invoice_full,
    invoice_summary,
    line_full,
    lines_in,
    money,
    naive,
    notes_in,
    parse_body,
    payment_full,
    payments_in,
    realistic_products,
    reference_in,
)

SESSION_COOKIE = "LS_SERVER_SESSION_ID"
PRIVATE_ID_HEADER = "X-PAPPID"
MAX_PAGE = 250
GIFT_CARD_CODE = "GIFTCARD"
# CTC's filters: `field op "value"`, optionally in parentheses, joined by AND (UPSTREAMS).
_FILTER_TERM = re.compile(
    r'\(?\s*(?P<field>\w+)\s*(?P<op>==|!=|>=|<=|>|<)\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*\)?'
)
_RANGE = {">=", "<="}

Clock = Callable[[], datetime]

__all__ = [
    "SESSION_COOKIE",
    "OnSiteReadings",
    "OnSiteSimulator",
    "SimInvoice",
    "SimLine",
    "SimPayment",
]


def _xml(element: Element, status: int = 200) -> Response:
    body = tostring(element, encoding="utf-8", xml_declaration=True)
    return Response(body, status_code=status, media_type="application/xml")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    # No source shows an OnSite error body: a neutral one (clients read the status).
    root = Element("error")
    add(root, "code", code)
    add(root, "message", message)
    response = _xml(root, status)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


class OnSiteSimulator:
    """All state in memory; `.app` is the FastAPI app tests drive through ASGITransport."""

    def __init__(
        self,
        faults: Faults | None = None,
        username: str = "onsite",
        # Demo credentials of an in-memory sandbox; never a real secret.
        password: str = "onsite-sandbox",  # noqa: S107
        private_id: str | None = "giftsync-sandbox-pappid",
        *,
        seats: int | None = None,
        ignore_filters: bool = False,
        readings: OnSiteReadings | None = None,
        clock: Clock | None = None,
        base_url: str = "https://onsite.sim:9630",
    ) -> None:
        self.faults = faults or Faults()
        self.username = username
        self._password = password
        self._private_id = private_id
        self.seats = seats
        self.ignore_filters = ignore_filters
        self.readings = readings or OnSiteReadings.strict()
        self.base_url = base_url.rstrip("/")
        self._clock: Clock = clock or (lambda: datetime.now(UTC))
        self._last_stamp = datetime(1970, 1, 1, tzinfo=UTC)
        self._sessions: dict[str, datetime] = {}
        self.sessions_opened = 0
        self.logouts = 0
        self.products = realistic_products()
        self.payment_methods = list(PAYMENT_METHODS)
        self.invoices: dict[str, SimInvoice] = {}
        self.customers: dict[str, SimCustomer] = {}
        self.request_log: list[tuple[str, str]] = []
        self._next_invoice = 1000
        self._next_customer = 1
        self.app = self._build_app()

    def __repr__(self) -> str:
        return f"OnSiteSimulator(username={self.username!r}, invoices={len(self.invoices)})"

    @property
    def sessions_open(self) -> int:
        return len(self._sessions)

    def correct_set_up(self) -> dict[str, str]:
        """`ONSITE_GIFT_CARD_PRODUCT_CODE` and `ONSITE_PAYMENT_METHOD` that exist here."""
        return dict(CORRECT_SET_UP)

    def expire_sessions(self) -> None:
        """What a server restart or session timeout does: every cookie becomes unknown."""
        self._sessions.clear()

    # --- helpers acting behind giftsync's back -------------------------------------------------

    def _stamp(self, at: datetime | None = None) -> datetime:
        if at is not None:
            return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        # Microseconds, as in the sources' datetimes; strictly increasing.
        now = max(self._clock(), self._last_stamp + timedelta(microseconds=1))
        self._last_stamp = now
        return now

    def add_customer(self, first: str, last: str, email: str) -> str:
        customer_id = str(self._next_customer)
        self._next_customer += 1
        self.customers[customer_id] = SimCustomer(customer_id, first, last, email, self._stamp())
        return customer_id

    def _gift_line(self, serial: str, price: Decimal, quantity: Decimal = Decimal(1)) -> SimLine:
        product = next(p for p in self.products.values() if p.code == GIFT_CARD_CODE)
        return SimLine(
            product.code, product.description, serial, price, quantity, product.product_id
        )

    def sell_gift_card_in_store(
        self,
        serial: str,
        amount: Decimal,
        customer_id: str | None = None,
        *,
        at: datetime | None = None,
    ) -> str:
        """A till sells (or reloads) a card: a gift card line with the serial, paid in cash."""
        invoice = self._new_invoice(customer_id, None, "Sold in store", at)
        invoice.lines.append(self._gift_line(serial, Decimal(amount)))
        invoice.payments.append(SimPayment("Cash", Decimal(amount), None))
        self._apply(invoice)
        return invoice.invoice_id

    def redeem_in_store(self, serial: str, amount: Decimal, *, at: datetime | None = None) -> str:
        """A till takes the card as payment for goods."""
        invoice = self._new_invoice(None, None, "Redeemed in store", at)
        product = self.products["3"]
        invoice.lines.append(
            SimLine(product.code, product.description, None, Decimal(amount), Decimal(1), "3")
        )
        invoice.payments.append(SimPayment(GIFT_CARD_METHOD, Decimal(amount), serial))
        try:
            self._apply(invoice)
        except Refused as exc:
            raise ValueError(exc.message) from None
        return invoice.invoice_id

    def balance(self, serial: str) -> Decimal:
        return self._balances().get(serial, Decimal(0))

    def invoices_with_reference(self, reference: str) -> list[SimInvoice]:
        return [inv for inv in self.invoices.values() if inv.reference == reference]

    def seed_demo(self) -> list[str]:
        ada = self.add_customer("Ada", "Lovelace", "ada@example.com")
        grace = self.add_customer("Grace", "Hopper", "grace@example.com")
        self.sell_gift_card_in_store("ONSITE0001", Decimal("50.00"), ada)
        self.sell_gift_card_in_store("ONSITE0002", Decimal("100.00"), grace)
        self.redeem_in_store("ONSITE0002", Decimal("30.00"))
        return [
            f"OnSite: user {self.username!r}, private app id set: {self._private_id is not None}",
            f"OnSite: gift card product {GIFT_CARD_CODE}, payment methods "
            f"{', '.join(self.payment_methods)} (giftsync uses Shopify)",
            f"OnSite: gift card ONSITE0001 balance {money(self.balance('ONSITE0001'))} "
            "(Ada Lovelace, ada@example.com)",
            f"OnSite: gift card ONSITE0002 balance {money(self.balance('ONSITE0002'))} "
            "(Grace Hopper, grace@example.com)",
        ]

    # --- state ---------------------------------------------------------------------------------

    def _new_invoice(
        self,
        customer_id: str | None,
        reference: str | None,
        notes: str | None,
        at: datetime | None = None,
    ) -> SimInvoice:
        stamp = self._stamp(at)
        invoice_id = str(self._next_invoice)
        self._next_invoice += 1
        return SimInvoice(invoice_id, stamp, stamp, customer_id, reference, notes)

    def _balances(self) -> dict[str, Decimal]:
        balances: dict[str, Decimal] = {}
        for invoice in self.invoices.values():
            self._fold(balances, invoice)
        return balances

    @staticmethod
    def _fold(balances: dict[str, Decimal], invoice: SimInvoice) -> None:
        for line in invoice.lines:
            if line.code == GIFT_CARD_CODE and line.serial:
                balances[line.serial] = (
                    balances.get(line.serial, Decimal(0)) + line.price * line.quantity
                )
        for payment in invoice.payments:
            if payment.is_gift_card and payment.serial:
                balances[payment.serial] = balances.get(payment.serial, Decimal(0)) - payment.amount

    def _apply(self, invoice: SimInvoice) -> None:
        """Stores the invoice unless it would take a gift card below zero."""
        for line in invoice.lines:
            if line.code == GIFT_CARD_CODE and not line.serial:
                raise Refused(400, "serial_required", "a gift card line needs a serial")
        for payment in invoice.payments:
            if payment.is_gift_card and not payment.serial:
                raise Refused(400, "serial_required", "a gift card payment needs the serial")
        if invoice.customer_id is not None and invoice.customer_id not in self.customers:
            raise Refused(400, "unknown_customer", "no such customer")
        balances = self._balances()
        before = dict(balances)
        self._fold(balances, invoice)
        for serial, balance in balances.items():
            if balance < 0 and balance < before.get(serial, Decimal(0)):
                raise Refused(409, "insufficient_balance", "gift card balance too low")
        self.invoices[invoice.invoice_id] = invoice

    def _posted(self, body: bytes) -> SimInvoice:
        root = parse_body(body)
        invoice = self._new_invoice(customer_in(root), reference_in(root), notes_in(root))
        codes = {product.code: product for product in self.products.values()}
        for code, price, quantity, serial in lines_in(root):
            product = codes.get(code)
            if product is None:
                raise Refused(400, "unknown_product", f"no product with code {code!r}")
            invoice.lines.append(
                SimLine(code, product.description, serial, price, quantity, product.product_id)
            )
        for method, amount, serial in payments_in(root):
            if method not in self.payment_methods:
                raise Refused(400, "unknown_payment_method", f"no payment method {method!r}")
            invoice.payments.append(SimPayment(method, amount, serial))
        if not invoice.lines and not invoice.payments:
            raise Refused(400, "invalid_invoice", "an invoice needs lines or payments")
        total = sum((line.price * line.quantity for line in invoice.lines), Decimal(0))
        if sum((p.amount for p in invoice.payments), Decimal(0)) != total:
            raise Refused(400, "unbalanced", "payments must equal the invoice total")
        return invoice

    # --- filters (CTC: `datetime_modified > "..."`, `code == "15"`) --------------------------------

    def _filters(self, raw: str | None, allowed: set[str]) -> list[tuple[str, str, str]]:
        if not raw or self.ignore_filters:
            return []
        terms: list[tuple[str, str, str]] = []
        rest = raw.strip()
        while rest:
            match = _FILTER_TERM.match(rest)
            if match is None or match.group("field") not in allowed:
                raise Refused(400, "invalid_filter", "filter not understood")
            if match.group("op") in _RANGE and not self.readings.range_operators:
                raise Refused(400, "invalid_filter", "operator not supported")
            value = re.sub(r"\\(.)", r"\1", match.group("value"))
            terms.append((match.group("field"), match.group("op"), value))
            rest = re.sub(r"^\s*AND\s+", "", rest[match.end() :].strip(), flags=re.IGNORECASE)
        return terms

    @staticmethod
    def _matches(values: dict[str, object], terms: list[tuple[str, str, str]]) -> bool:
        for name, op, raw in terms:
            actual = values[name]
            expected: object = raw
            if isinstance(actual, datetime):
                try:
                    parsed = datetime.fromisoformat(raw)
                except ValueError:
                    raise Refused(400, "invalid_filter", "date not ISO 8601") from None
                expected = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            elif isinstance(actual, str):
                actual, expected = actual.casefold(), raw.casefold()
            else:
                actual = "" if actual is None else actual
            ok = {
                "==": lambda a, b: a == b,
                "!=": lambda a, b: a != b,
                ">=": lambda a, b: a >= b,
                "<=": lambda a, b: a <= b,
                ">": lambda a, b: a > b,
                "<": lambda a, b: a < b,
            }[op](actual, expected)
            if not ok:
                return False
        return True

    # --- HTTP ----------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Lightspeed OnSite simulator", docs_url=None, redoc_url=None)
        app.include_router(faults_router(self.faults))
        routes: list[tuple[str, Callable[..., Any], str]] = [
            ("/api/", self._root, "GET"),
            ("/api/sessions/current/logout/", self._logout, "POST"),
            ("/api/invoices/", self._list_invoices, "GET"),
            ("/api/invoices/", self._create_invoice, "POST"),
            ("/api/invoices/{invoice_id}/", self._get_invoice, "GET"),
            ("/api/invoices/{invoice_id}/lineitems/{number}/", self._get_line, "GET"),
            ("/api/invoices/{invoice_id}/payments/{number}/", self._get_payment, "GET"),
            ("/api/customers/", self._list_customers, "GET"),
            ("/api/customers/{customer_id}/", self._get_customer, "GET"),
            ("/api/products/", self._list_products, "GET"),
            ("/api/payment_methods/", self._list_payment_methods, "GET"),
        ]
        for path, handler, method in routes:
            app.add_api_route(path, handler, methods=[method])
        return app

    def _basic_ok(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, given = decoded.partition(":")
        return secrets.compare_digest(user.encode(), self.username.encode()) & (
            secrets.compare_digest(given.encode(), self._password.encode())
        )

    async def _enter(self, request: Request) -> tuple[str, bool] | Response:
        """Faults, private app id, then the session: (session id, newly opened) or a refusal."""
        self.request_log.append((request.method, request.url.path))
        await self.faults.delay()
        if self.faults.force_throttle:
            return _error(429, "too_many_requests", "slow down", {"Retry-After": "1"})
        if self.faults.draw_error():
            return _error(503, "unavailable", "server busy")
        # getting_started: `X-PAPPID` carries the private id.
        if self._private_id is not None:
            given = request.headers.get(PRIVATE_ID_HEADER, "")
            if not secrets.compare_digest(given.encode(), self._private_id.encode()):
                return _error(403, "invalid_private_app_id", "unknown private app id")
        # getting_started: the cookie keeps one session; without it each request opens another.
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is not None:
            if cookie in self._sessions:
                return cookie, False
            return _error(401, "session_expired", "session expired, log in again")
        if not self._basic_ok(request.headers.get("Authorization")):
            return _error(
                401, "unauthorized", "bad credentials", {"WWW-Authenticate": 'Basic realm="OnSite"'}
            )
        # Read/write apps hold at most as many sessions as the licence has seats.
        if self.seats is not None and len(self._sessions) >= self.seats:
            return _error(403, "no_seats_available", "all licence seats are in use")
        session = secrets.token_hex(16)
        self._sessions[session] = self._clock()
        self.sessions_opened += 1
        return session, True

    @staticmethod
    def _with_session(response: Response, entered: tuple[str, bool]) -> Response:
        session, is_new = entered
        if is_new:
            response.set_cookie(SESSION_COOKIE, session, httponly=True, path="/")
        return response

    async def _answer(
        self, request: Request, build: Callable[[tuple[str, bool]], Response]
    ) -> Response:
        entered = await self._enter(request)
        if isinstance(entered, Response):
            return entered
        try:
            response = build(entered)
        except Refused as exc:
            response = _error(exc.status, exc.code, exc.message)
        return self._with_session(response, entered)

    def _page(self, request: Request) -> tuple[int, int]:
        try:
            count = int(request.query_params.get("count", "50"))
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            raise Refused(400, "invalid_paging", "count and offset are integers") from None
        if count < 1 or offset < 0:
            raise Refused(400, "invalid_paging", "count >= 1 and offset >= 0")
        return min(count, MAX_PAGE), offset

    async def _root(self, request: Request) -> Response:
        # getting_started: `GET /api/` answers `<resources/>`.
        return await self._answer(request, lambda _entered: _xml(Element("resources")))

    async def _logout(self, request: Request) -> Response:
        entered = await self._enter(request)
        if isinstance(entered, Response):
            return entered
        self._sessions.pop(entered[0], None)
        self.logouts += 1
        # invoices.html: logout answers 204.
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def _list_invoices(self, request: Request) -> Response:
        def build(_entered: tuple[str, bool]) -> Response:
            count, offset = self._page(request)
            terms = self._filters(
                request.query_params.get("filter"), {"datetime_modified", "import_id"}
            )
            found = [
                invoice
                for invoice in self.invoices.values()
                if self._matches(
                    {"datetime_modified": invoice.modified_at, "import_id": invoice.reference},
                    terms,
                )
            ]
            # invoices.html: `total_count` on the list; no documented order (by id here).
            root = Element("invoices", {"total_count": str(len(found))})
            for invoice in found[offset : offset + count]:
                invoice_summary(root, invoice, self.base_url, self.customers)
            return _xml(root)

        return await self._answer(request, build)

    async def _get_invoice(self, request: Request, invoice_id: str) -> Response:
        def build(_entered: tuple[str, bool]) -> Response:
            invoice = self.invoices.get(invoice_id)
            if invoice is None:
                raise Refused(404, "not_found", "no such invoice")
            return _xml(invoice_full(invoice, self.base_url, self.customers, self.readings))

        return await self._answer(request, build)

    async def _get_line(self, request: Request, invoice_id: str, number: str) -> Response:
        def build(_entered: tuple[str, bool]) -> Response:
            invoice = self.invoices.get(invoice_id)
            index = int(number) - 1 if number.isdigit() else -1
            if invoice is None or not 0 <= index < len(invoice.lines):
                raise Refused(404, "not_found", "no such line")
            uri = f"{self.base_url}/api/invoices/{invoice_id}/lineitems/{number}/"
            return _xml(line_full(invoice.lines[index], uri, number, self.base_url))

        return await self._answer(request, build)

    async def _get_payment(self, request: Request, invoice_id: str, number: str) -> Response:
        def build(_entered: tuple[str, bool]) -> Response:
            invoice = self.invoices.get(invoice_id)
            index = int(number) - 1 if number.isdigit() else -1
            if invoice is None or not 0 <= index < len(invoice.payments):
                raise Refused(404, "not_found", "no such payment")
            uri = f"{self.base_url}/api/invoices/{invoice_id}/payments/{number}/"
            return _xml(payment_full(invoice.payments[index], uri, number, self.readings))

        return await self._answer(request, build)

    async def _create_invoice(self, request: Request) -> Response:
        entered = await self._enter(request)
        if isinstance(entered, Response):
            return entered
        try:
            invoice = self._posted(await request.body())
            self._apply(invoice)
        except Refused as exc:
            return self._with_session(_error(exc.status, exc.code, exc.message), entered)
        if self.faults.draw_lost_answer():
            await self.faults.hang()
        response = _xml(invoice_full(invoice, self.base_url, self.customers, self.readings), 201)
        response.headers["Location"] = f"{self.base_url}/api/invoices/{invoice.invoice_id}/"
        return self._with_session(response, entered)

    async def _list_customers(self, request: Request) -> Response:
        def build(_entered: tuple[str, bool]) -> Response:
            count, offset = self._page(request)
            terms = self._filters(request.query_params.get("filter"), {"email"})
            found = [c for c in self.customers.values() if self._matches({"email": c.email}, terms)]
            root = Element("customers", {"total_count": str(len(found))})
            for customer in found[offset : offset + count]:
                self._customer_xml(customer, root)
            return _xml(root)

        return await self._answer(request, build)

    async def _get_customer(self, request: Request, customer_id: str) -> Response:
        def build(_entered: tuple[str, bool]) -> Response:
            customer = self.customers.get(customer_id)
            if customer is None:
                raise Refused(404, "not_found", "no such customer")
            return _xml(self._customer_xml(customer))

        return await self._answer(request, build)

    def _customer_xml(self, customer: SimCustomer, parent: Element | None = None) -> Element:
        attrs = {
            "id": customer.customer_id,
            "uri": f"{self.base_url}/api/customers/{customer.customer_id}/",
        }
        root = Element("customer", attrs) if parent is None else add(parent, "customer", **attrs)
        add(root, "first_name", customer.first_name)
        add(root, "last_name", customer.last_name)
        add(root, "email", customer.email)
        add(root, "datetime_modified", naive(customer.modified_at))
        return root

    async def _list_products(self, request: Request) -> Response:
        def build(_entered: tuple[str, bool]) -> Response:
            count, offset = self._page(request)
            terms = self._filters(request.query_params.get("filter"), {"code"})
            found = [p for p in self.products.values() if self._matches({"code": p.code}, terms)]
            root = Element("products", {"total_count": str(len(found))})
            for product in found[offset : offset + count]:
                uri = f"{self.base_url}/api/products/{product.product_id}/"
                item = add(root, "product", full_render="false", id=product.product_id, uri=uri)
                add(item, "code", product.code)
                add(item, "description", product.description)
                add(item, "sell_price", money(product.sell_price, "0.001"))
            return _xml(root)

        return await self._answer(request, build)

    async def _list_payment_methods(self, request: Request) -> Response:
        def build(_entered: tuple[str, bool]) -> Response:
            if not self.readings.payment_methods_resource:
                raise Refused(404, "not_found", "no such resource")
            root = Element("payment_methods", {"total_count": str(len(self.payment_methods))})
            for number, name in enumerate(self.payment_methods, start=1):
                item = add(root, "payment_method", id=str(number))
                add(item, "name", name)
            return _xml(root)

        return await self._answer(request, build)
