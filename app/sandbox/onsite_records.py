"""One OnSite server's records as the simulator holds them, and their XML.

Sources (UPSTREAMS.md "Lightspeed OnSite"; lightspeed_facts part B): the invoices tutorial
(onsite-docs.lightspeedhq.com `external_api/tutorials/invoices.html`) for the list of
summaries, and commercetools/sphere-lightspeed-onsite-connector's fixture
`src/test/resources/invoice.xml` for a full invoice. Where no source shows an element (a gift
card serial on a line, the inside of a payment, a payment-methods resource) `OnSiteReadings`
says which reading is played; clients must work under each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from xml.etree.ElementTree import Element, SubElement

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException

GIFT_CARD_METHOD = "Gift Card"
_GIFT_CARD = re.compile(r"gift[\s_-]*card", re.IGNORECASE)
_CENT = Decimal("0.01")
MAX_BODY_BYTES = 1024 * 1024


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class OnSiteReadings:
    serial_on_line: str = "line_uri"
    """Where a gift card line's serial shows: `inline` in the invoice's `lineitem`, or only at
    the line's own `uri` (the fixture's lines are `full_render="false"`)."""
    payment_names: str = "flat"
    """The inside of a payment (no source shows one): `flat` is `method`/`amount`/`serial`,
    `nested` is `payment_method/name`/`total`/`card_number`."""
    payment_methods_resource: bool = False
    """Whether `/api/payment_methods/` exists (no source shows one)."""
    range_operators: bool = False
    """Whether a filter takes `>=`/`<=` (sources show only `>` and `==`)."""

    @classmethod
    def strict(cls) -> OnSiteReadings:
        return cls()

    @classmethod
    def lenient(cls) -> OnSiteReadings:
        return cls(
            serial_on_line="inline",
            payment_names="nested",
            payment_methods_resource=True,
            range_operators=True,
        )


@dataclass
class SimProduct:
    product_id: str
    code: str
    description: str
    sell_price: Decimal


@dataclass
class SimLine:
    code: str
    description: str
    serial: str | None
    price: Decimal
    quantity: Decimal = Decimal(1)
    product_id: str = "0"


@dataclass
class SimPayment:
    method: str
    amount: Decimal
    serial: str | None

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
    """`import_id`: where giftsync puts its reference (the fixture has the element, empty)."""
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


def realistic_products() -> dict[str, SimProduct]:
    return {
        "1": SimProduct("1", "GIFTCARD", "Gift Card", Decimal(0)),
        # The fixture's product: code 15, a plush toy.
        "2": SimProduct("2", "15", "Lightning Bird Plush Toy", Decimal("10.00")),
        "3": SimProduct("3", "MUG-01", "Store Mug", Decimal("12.50")),
    }


PAYMENT_METHODS = ("Cash", "Credit Card", "EFTPOS", GIFT_CARD_METHOD, "Shopify")
CORRECT_SET_UP = {"gift_card_product_code": "GIFTCARD", "payment_method": "Shopify"}


# ---- XML out -----------------------------------------------------------------------------------


def add(parent: Element, tag: str, text: str | None = None, **attributes: str) -> Element:
    child = SubElement(parent, tag, attributes)
    child.text = text
    return child


def naive(moment: datetime) -> str:
    # The tutorial's and fixture's datetimes: microseconds, no zone (read here as UTC).
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def money(value: Decimal, places: str = "0.01") -> str:
    return str(value.quantize(Decimal(places)))


def invoice_summary(
    parent: Element, invoice: SimInvoice, base: str, customers: dict[str, SimCustomer]
) -> None:
    """invoices.html: a list item is `full_render="false"` with a `uri`, creation time, number,
    customer, flags and totals: no lines, no payments, no modification date."""
    item = add(
        parent,
        "invoice",
        full_render="false",
        id=invoice.invoice_id,
        uri=f"{base}/api/invoices/{invoice.invoice_id}/",
    )
    add(item, "datetime_created", naive(invoice.created_at))
    add(item, "invoice_id", f"I-{invoice.invoice_id}")
    _invoice_customer(item, invoice, base, customers)
    flags = add(item, "flags")
    add(flags, "posted", "false")
    totals = add(item, "totals")
    add(totals, "total", money(_total(invoice)))


def invoice_full(
    invoice: SimInvoice, base: str, customers: dict[str, SimCustomer], readings: OnSiteReadings
) -> Element:
    """The fixture's full invoice: dates, `invoice_customer`, `import_id`, totals, payments as
    references only, lines `full_render="false"` with `lineitem_product`."""
    uri = f"{base}/api/invoices/{invoice.invoice_id}/"
    root = Element("invoice", {"uri": uri, "id": invoice.invoice_id, "full_render": "true"})
    add(root, "document_id", invoice.invoice_id)
    add(root, "date_created", invoice.created_at.date().isoformat())
    add(root, "datetime_created", naive(invoice.created_at))
    add(root, "date_modified", invoice.modified_at.date().isoformat())
    add(root, "datetime_modified", naive(invoice.modified_at))
    add(root, "invoice_id", f"I-{invoice.invoice_id}")
    _invoice_customer(root, invoice, base, customers)
    add(root, "internal_notes", invoice.notes)
    add(root, "import_id", invoice.reference)
    add(root, "invoice_status", "Paid")
    totals = add(root, "totals")
    add(totals, "total", money(_total(invoice)))
    payments = add(root, "payments")
    for number, _payment in enumerate(invoice.payments, start=1):
        add(payments, "payment", uri=f"{uri}payments/{number}/", id=str(number))
    lines = add(root, "lineitems")
    for number, line in enumerate(invoice.lines, start=1):
        _line(
            lines,
            line,
            f"{uri}lineitems/{number}/",
            str(number),
            full=readings.serial_on_line == "inline",
            base=base,
        )
    return root


def line_full(line: SimLine, uri: str, number: str, base: str) -> Element:
    holder = Element("holder")
    _line(holder, line, uri, number, full=True, base=base)
    element = holder[0]
    element.set("full_render", "true")
    return element


def _line(parent: Element, line: SimLine, uri: str, number: str, *, full: bool, base: str) -> None:
    item = add(parent, "lineitem", uri=uri, id=number, full_render="false")
    add(item, "quantity", money(line.quantity, "0.001"))
    add(item, "sell_price", money(line.price, "0.001"))
    sells = add(item, "sells")
    add(sells, "total", money(line.price * line.quantity))
    product = add(item, "lineitem_product")
    add(product, "product", uri=f"{base}/api/products/{line.product_id}/", id=line.product_id)
    add(product, "code", line.code)
    add(product, "description", line.description)
    if full and line.serial:
        add(item, "serial", line.serial)


def payment_full(payment: SimPayment, uri: str, number: str, readings: OnSiteReadings) -> Element:
    root = Element("payment", {"uri": uri, "id": number, "full_render": "true"})
    if readings.payment_names == "nested":
        method = add(root, "payment_method")
        add(method, "name", payment.method)
        add(root, "total", money(payment.amount))
        if payment.serial:
            add(root, "card_number", payment.serial)
    else:
        add(root, "method", payment.method)
        add(root, "amount", money(payment.amount))
        if payment.serial:
            add(root, "serial", payment.serial)
    return root


def _invoice_customer(
    parent: Element, invoice: SimInvoice, base: str, customers: dict[str, SimCustomer]
) -> None:
    holder = add(parent, "invoice_customer")
    customer = customers.get(invoice.customer_id or "")
    if customer is None:
        add(holder, "customer")
        add(holder, "mainname")
        return
    add(
        holder,
        "customer",
        uri=f"{base}/api/customers/{customer.customer_id}/",
        id=customer.customer_id,
    )
    add(holder, "mainname", f"{customer.first_name} {customer.last_name}".strip())


def _total(invoice: SimInvoice) -> Decimal:
    return sum((line.price * line.quantity for line in invoice.lines), Decimal(0))


# ---- XML in: what a POST may carry (no source shows an invoice POST; variants accepted) --------


def _text(element: Element | None, *names: str) -> str | None:
    if element is None:
        return None
    for name in names:
        found = element.find(name)
        if found is not None:
            text = (found.text or "").strip()
            if text:
                return text
            nested = found.find("name")
            if nested is not None and (nested.text or "").strip():
                return (nested.text or "").strip()
    return None


def decimal(raw: str | None, what: str) -> Decimal:
    try:
        value = Decimal((raw or "").strip())
    except InvalidOperation:
        raise Refused(400, "invalid_invoice", f"{what} is not a number") from None
    if not value.is_finite():
        raise Refused(400, "invalid_invoice", f"{what} is not a number")
    return value


def parse_body(body: bytes) -> Element:
    if len(body) > MAX_BODY_BYTES:
        raise Refused(413, "too_large", "body too large")
    try:
        root: Element = safe_xml.fromstring(body, forbid_dtd=True)
    except (DefusedXmlException, safe_xml.ParseError, ValueError):
        raise Refused(400, "invalid_xml", "body is not well-formed XML") from None
    if root.tag != "invoice":
        raise Refused(400, "invalid_invoice", "expected an <invoice>")
    return root


def lines_in(root: Element) -> list[tuple[str, Decimal, Decimal, str | None]]:
    """(product code, sell_price, quantity, serial) of each posted line."""
    found = []
    for item in root.findall("lineitems/lineitem"):
        code = _text(item.find("lineitem_product"), "code") or ""
        quantity = _text(item, "quantity")
        found.append(
            (
                code,
                decimal(_text(item, "sell_price"), "sell_price"),
                decimal(quantity, "quantity") if quantity else Decimal(1),
                _text(item, "serial", "serial_number"),
            )
        )
    return found


def payments_in(root: Element) -> list[tuple[str, Decimal, str | None]]:
    found = []
    for item in root.findall("payments/payment"):
        method = _text(item, "method", "payment_method") or ""
        amount = decimal(_text(item, "amount", "total"), "amount")
        found.append((method, amount, _text(item, "serial", "card_number", "reference")))
    return found


def customer_in(root: Element) -> str | None:
    holder = root.find("invoice_customer")
    customer = holder.find("customer") if holder is not None else None
    return customer.get("id") if customer is not None else None


def reference_in(root: Element) -> str | None:
    return _text(root, "import_id")


def notes_in(root: Element) -> str | None:
    return _text(root, "internal_notes")
