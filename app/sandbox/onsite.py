"""Lightspeed OnSite simulator: XML REST, Basic auth plus private app id, seat-holding sessions.

Gift cards exist only as invoice lines (sold/loaded, with the serial) and invoice payments
(redeemed, serial as the payment reference), as on a real OnSite server; balances are derived
from the invoices and a payment above the balance is refused. No `/api/giftcards/` extension is
offered, so clients must work from invoices exactly as they would against the real thing.

The filter syntax (`filter=(date_modified >= "...") AND (reference == "...")`) and the element
names are this project's design (OnSite does not publish them); `ignore_filters=True` plays a
server that ignores the filter so clients can prove they do not depend on it.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from xml.etree.ElementTree import Element, SubElement, tostring

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException
from fastapi import FastAPI, Request
from fastapi.responses import Response

from app.sandbox.faults import Faults, faults_router

SESSION_COOKIE = "LS_SERVER_SESSION_ID"
PRIVATE_ID_HEADER = "X-PAPPID"
MAX_BODY_BYTES = 1024 * 1024
MAX_PAGE = 250
GIFT_CARD_CODE = "GIFTCARD"
GIFT_CARD_LABEL = "Gift Card"
_GIFT_CARD = re.compile(r"gift[\s_-]*card", re.IGNORECASE)
_FILTER_TERM = re.compile(
    r'\(\s*(?P<field>\w+)\s*(?P<op>==|!=|>=|<=|>|<)\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*\)'
)
_CENT = Decimal("0.01")

Clock = Callable[[], datetime]


@dataclass
class SimLine:
    code: str
    description: str
    serial: str | None
    price: Decimal
    quantity: Decimal = Decimal(1)

    @property
    def is_gift_card(self) -> bool:
        return bool(_GIFT_CARD.search(self.code) or _GIFT_CARD.search(self.description))


@dataclass
class SimPayment:
    method: str
    amount: Decimal
    reference: str | None

    @property
    def is_gift_card(self) -> bool:
        return bool(_GIFT_CARD.search(self.method))


@dataclass
class SimInvoice:
    invoice_id: str
    created_at: datetime
    modified_at: datetime
    customer_id: str | None
    reference: str | None
    notes: str | None
    lines: list[SimLine] = field(default_factory=list)
    payments: list[SimPayment] = field(default_factory=list)


@dataclass
class SimCustomer:
    customer_id: str
    first_name: str
    last_name: str
    email: str
    modified_at: datetime


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _money(value: Decimal) -> str:
    return str(value.quantize(_CENT))


def _add(parent: Element, tag: str, text: str | None) -> None:
    child = SubElement(parent, tag)
    child.text = text


def _xml(element: Element, status: int = 200) -> Response:
    body = tostring(element, encoding="utf-8", xml_declaration=True)
    return Response(body, status_code=status, media_type="application/xml")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    root = Element("error")
    _add(root, "code", code)
    _add(root, "message", message)
    response = _xml(root, status)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _child_text(element: Element, *names: str) -> str | None:
    for child in element:
        if child.tag.lower() in names:
            text = (child.text or "").strip()
            if text:
                return text
    return None


def _decimal(raw: str | None, what: str) -> Decimal:
    try:
        value = Decimal((raw or "").strip())
    except InvalidOperation:
        raise _Refused(400, "invalid_invoice", f"{what} is not a number") from None
    if not value.is_finite() or value != value.quantize(_CENT):
        raise _Refused(400, "invalid_invoice", f"{what} must have at most two decimals")
    return value


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
        clock: Clock | None = None,
    ) -> None:
        self.faults = faults or Faults()
        self.username = username
        self._password = password
        self._private_id = private_id
        self.seats = seats
        self.ignore_filters = ignore_filters
        self._clock: Clock = clock or (lambda: datetime.now(UTC))
        self._last_stamp = datetime(1970, 1, 1, tzinfo=UTC)
        self._sessions: dict[str, datetime] = {}
        self.sessions_opened = 0
        self.logouts = 0
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

    def expire_sessions(self) -> None:
        """What a server restart or session timeout does: every cookie becomes unknown."""
        self._sessions.clear()

    # --- helpers acting behind giftsync's back -------------------------------------------------

    def _stamp(self, at: datetime | None = None) -> datetime:
        if at is not None:
            return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        # Strictly increasing, so "modified since" is well defined even within one clock tick.
        now = max(self._clock(), self._last_stamp + timedelta(microseconds=1))
        self._last_stamp = now
        return now

    def add_customer(self, first: str, last: str, email: str) -> str:
        customer_id = str(self._next_customer)
        self._next_customer += 1
        self.customers[customer_id] = SimCustomer(customer_id, first, last, email, self._stamp())
        return customer_id

    def sell_gift_card_in_store(
        self,
        serial: str,
        amount: Decimal,
        customer_id: str | None = None,
        *,
        at: datetime | None = None,
    ) -> str:
        """A till sells (or reloads) a card: a Gift Card line with the serial, paid in cash."""
        invoice = self._new_invoice(customer_id, None, "Sold in store", at)
        invoice.lines.append(SimLine(GIFT_CARD_CODE, GIFT_CARD_LABEL, serial, amount))
        invoice.payments.append(SimPayment("Cash", amount, None))
        self._apply(invoice)
        return invoice.invoice_id

    def redeem_in_store(self, serial: str, amount: Decimal, *, at: datetime | None = None) -> str:
        """A till takes the card as payment for goods."""
        invoice = self._new_invoice(None, None, "Redeemed in store", at)
        invoice.lines.append(SimLine("MERCH", "Merchandise", None, amount))
        invoice.payments.append(SimPayment(GIFT_CARD_LABEL, amount, serial))
        try:
            self._apply(invoice)
        except _Refused as exc:
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
            f"OnSite: gift card ONSITE0001 balance {_money(self.balance('ONSITE0001'))} "
            "(Ada Lovelace, ada@example.com)",
            f"OnSite: gift card ONSITE0002 balance {_money(self.balance('ONSITE0002'))} "
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
            if line.is_gift_card and line.serial:
                balances[line.serial] = (
                    balances.get(line.serial, Decimal(0)) + line.price * line.quantity
                )
        for payment in invoice.payments:
            if payment.is_gift_card and payment.reference:
                balances[payment.reference] = (
                    balances.get(payment.reference, Decimal(0)) - payment.amount
                )

    def _apply(self, invoice: SimInvoice) -> None:
        """Stores the invoice unless it would take a gift card below zero."""
        for line in invoice.lines:
            if line.is_gift_card and not line.serial:
                raise _Refused(400, "serial_required", "a gift card line needs a serial")
        for payment in invoice.payments:
            if payment.is_gift_card and not payment.reference:
                raise _Refused(400, "serial_required", "a gift card payment needs the serial")
        if invoice.customer_id is not None and invoice.customer_id not in self.customers:
            raise _Refused(400, "unknown_customer", "no such customer")
        balances = self._balances()
        before = dict(balances)
        self._fold(balances, invoice)
        for serial, balance in balances.items():
            if balance < 0 and balance < before.get(serial, Decimal(0)):
                raise _Refused(409, "insufficient_balance", "gift card balance too low")
        self.invoices[invoice.invoice_id] = invoice

    # --- XML out -------------------------------------------------------------------------------

    def _invoice_xml(self, invoice: SimInvoice, parent: Element | None = None) -> Element:
        root = (
            Element("invoice", {"id": invoice.invoice_id})
            if parent is None
            else SubElement(parent, "invoice", {"id": invoice.invoice_id})
        )
        _add(root, "date_created", invoice.created_at.isoformat())
        _add(root, "date_modified", invoice.modified_at.isoformat())
        if invoice.customer_id is not None:
            SubElement(root, "customer", {"id": invoice.customer_id})
        _add(root, "reference", invoice.reference)
        _add(root, "notes", invoice.notes)
        lines = SubElement(root, "lineitems")
        for number, line in enumerate(invoice.lines, start=1):
            item = SubElement(lines, "lineitem", {"id": f"{invoice.invoice_id}-{number}"})
            product = SubElement(item, "product", {"id": "1" if line.is_gift_card else "2"})
            _add(product, "code", line.code)
            _add(item, "description", line.description)
            if line.serial:
                _add(item, "serial", line.serial)
            _add(item, "price", _money(line.price))
            _add(item, "quantity", str(line.quantity.normalize()))
        payments = SubElement(root, "payments")
        for number, payment in enumerate(invoice.payments, start=1):
            item = SubElement(payments, "payment", {"id": f"{invoice.invoice_id}-{number}"})
            _add(item, "method", payment.method)
            _add(item, "amount", _money(payment.amount))
            if payment.reference:
                _add(item, "reference", payment.reference)
        return root

    @staticmethod
    def _customer_xml(customer: SimCustomer, parent: Element | None = None) -> Element:
        attrs = {"id": customer.customer_id}
        root = (
            Element("customer", attrs) if parent is None else SubElement(parent, "customer", attrs)
        )
        _add(root, "first_name", customer.first_name)
        _add(root, "last_name", customer.last_name)
        _add(root, "email", customer.email)
        _add(root, "date_modified", customer.modified_at.isoformat())
        return root

    # --- XML in --------------------------------------------------------------------------------

    def _invoice_from_xml(self, body: bytes) -> SimInvoice:
        if len(body) > MAX_BODY_BYTES:
            raise _Refused(413, "too_large", "body too large")
        try:
            root: Element = safe_xml.fromstring(body, forbid_dtd=True)
        except (DefusedXmlException, safe_xml.ParseError, ValueError):
            raise _Refused(400, "invalid_xml", "body is not well-formed XML") from None
        if root.tag != "invoice":
            raise _Refused(400, "invalid_invoice", "expected an <invoice>")
        customer = root.find("customer")
        customer_id = customer.get("id") if customer is not None else None
        invoice = self._new_invoice(
            customer_id, _child_text(root, "reference"), _child_text(root, "notes")
        )
        for item in root.findall("lineitems/lineitem"):
            product = item.find("product")
            code = (_child_text(product, "code") if product is not None else None) or ""
            quantity = _child_text(item, "quantity")
            invoice.lines.append(
                SimLine(
                    code=code,
                    description=_child_text(item, "description") or "",
                    serial=_child_text(item, "serial"),
                    price=_decimal(_child_text(item, "price"), "price"),
                    quantity=_decimal(quantity, "quantity") if quantity else Decimal(1),
                )
            )
        for item in root.findall("payments/payment"):
            amount = _decimal(_child_text(item, "amount"), "amount")
            if amount <= 0:
                raise _Refused(400, "invalid_invoice", "payment amounts must be positive")
            invoice.payments.append(
                SimPayment(
                    _child_text(item, "method") or "", amount, _child_text(item, "reference")
                )
            )
        if not invoice.lines and not invoice.payments:
            raise _Refused(400, "invalid_invoice", "an invoice needs lines or payments")
        return invoice

    def _filters(self, raw: str | None, allowed: set[str]) -> list[tuple[str, str, str]]:
        if not raw or self.ignore_filters:
            return []
        terms: list[tuple[str, str, str]] = []
        rest = raw
        while rest.strip():
            match = _FILTER_TERM.match(rest.strip())
            if match is None or match.group("field") not in allowed:
                raise _Refused(400, "invalid_filter", "filter not understood")
            value = re.sub(r"\\(.)", r"\1", match.group("value"))
            terms.append((match.group("field"), match.group("op"), value))
            rest = rest.strip()[match.end() :]
            rest = re.sub(r"^\s*AND\s+", "", rest, flags=re.IGNORECASE)
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
                    raise _Refused(400, "invalid_filter", "date not ISO 8601") from None
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
        app.add_api_route("/api/sessions/current/logout/", self._logout, methods=["POST"])
        app.add_api_route("/api/invoices/", self._list_invoices, methods=["GET"])
        app.add_api_route("/api/invoices/", self._create_invoice, methods=["POST"])
        app.add_api_route("/api/invoices/{invoice_id}/", self._get_invoice, methods=["GET"])
        app.add_api_route("/api/customers/", self._list_customers, methods=["GET"])
        app.add_api_route("/api/customers/{customer_id}/", self._get_customer, methods=["GET"])
        app.add_api_route("/api/products/", self._list_products, methods=["GET"])
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
        if self._private_id is not None:
            given = request.headers.get(PRIVATE_ID_HEADER, "")
            if not secrets.compare_digest(given.encode(), self._private_id.encode()):
                return _error(403, "invalid_private_app_id", "unknown private app id")
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is not None:
            if cookie in self._sessions:
                return cookie, False
            return _error(401, "session_expired", "session expired, log in again")
        if not self._basic_ok(request.headers.get("Authorization")):
            return _error(
                401, "unauthorized", "bad credentials", {"WWW-Authenticate": 'Basic realm="OnSite"'}
            )
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

    def _page(self, request: Request) -> tuple[int, int]:
        try:
            count = int(request.query_params.get("count", "50"))
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            raise _Refused(400, "invalid_paging", "count and offset are integers") from None
        if count < 1 or offset < 0:
            raise _Refused(400, "invalid_paging", "count >= 1 and offset >= 0")
        return min(count, MAX_PAGE), offset

    async def _logout(self, request: Request) -> Response:
        entered = await self._enter(request)
        if isinstance(entered, Response):
            return entered
        self._sessions.pop(entered[0], None)
        self.logouts += 1
        response = _xml(Element("logout"))
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def _list_invoices(self, request: Request) -> Response:
        entered = await self._enter(request)
        if isinstance(entered, Response):
            return entered
        try:
            count, offset = self._page(request)
            terms = self._filters(
                request.query_params.get("filter"), {"date_modified", "reference", "customer_id"}
            )
            found = [
                invoice
                for invoice in self.invoices.values()
                if self._matches(
                    {
                        "date_modified": invoice.modified_at,
                        "reference": invoice.reference,
                        "customer_id": invoice.customer_id,
                    },
                    terms,
                )
            ]
        except _Refused as exc:
            return self._with_session(_error(exc.status, exc.code, exc.message), entered)
        if request.query_params.get("order_by") == "date_modified" and not self.ignore_filters:
            found.sort(key=lambda invoice: (invoice.modified_at, int(invoice.invoice_id)))
        root = Element("invoices", {"total_count": str(len(found))})
        for invoice in found[offset : offset + count]:
            self._invoice_xml(invoice, root)
        return self._with_session(_xml(root), entered)

    async def _get_invoice(self, request: Request, invoice_id: str) -> Response:
        entered = await self._enter(request)
        if isinstance(entered, Response):
            return entered
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            return self._with_session(_error(404, "not_found", "no such invoice"), entered)
        return self._with_session(_xml(self._invoice_xml(invoice)), entered)

    async def _create_invoice(self, request: Request) -> Response:
        entered = await self._enter(request)
        if isinstance(entered, Response):
            return entered
        try:
            invoice = self._invoice_from_xml(await request.body())
            self._apply(invoice)
        except _Refused as exc:
            return self._with_session(_error(exc.status, exc.code, exc.message), entered)
        if self.faults.draw_lost_answer():
            await self.faults.hang()
        response = _xml(self._invoice_xml(invoice), 201)
        response.headers["Location"] = f"/api/invoices/{invoice.invoice_id}/"
        return self._with_session(response, entered)

    async def _list_customers(self, request: Request) -> Response:
        entered = await self._enter(request)
        if isinstance(entered, Response):
            return entered
        try:
            count, offset = self._page(request)
            terms = self._filters(request.query_params.get("filter"), {"email"})
            found = [c for c in self.customers.values() if self._matches({"email": c.email}, terms)]
        except _Refused as exc:
            return self._with_session(_error(exc.status, exc.code, exc.message), entered)
        root = Element("customers", {"total_count": str(len(found))})
        for customer in found[offset : offset + count]:
            self._customer_xml(customer, root)
        return self._with_session(_xml(root), entered)

    async def _get_customer(self, request: Request, customer_id: str) -> Response:
        entered = await self._enter(request)
        if isinstance(entered, Response):
            return entered
        customer = self.customers.get(customer_id)
        if customer is None:
            return self._with_session(_error(404, "not_found", "no such customer"), entered)
        return self._with_session(_xml(self._customer_xml(customer)), entered)

    async def _list_products(self, request: Request) -> Response:
        entered = await self._enter(request)
        if isinstance(entered, Response):
            return entered
        root = Element("products", {"total_count": "2"})
        for product_id, code, description in (
            ("1", GIFT_CARD_CODE, GIFT_CARD_LABEL),
            ("2", "MERCH", "Merchandise"),
        ):
            product = SubElement(root, "product", {"id": product_id})
            _add(product, "code", code)
            _add(product, "description", description)
        return self._with_session(_xml(root), entered)
