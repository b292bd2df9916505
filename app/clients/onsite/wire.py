"""OnSite's XML as giftsync reads and writes it: invoices, customers, products, balance moves.

What the sources show (UPSTREAMS.md "Lightspeed OnSite"; CONFIRMED):
- a list (`GET /api/invoices/?count&offset`) holds **summaries**: `full_render="false"`, an `id`
  and a `uri`, no lines, no payments, no modification date (invoices tutorial);
- a full invoice (GET its `uri`) has `datetime_modified`, the customer at
  `invoice_customer/customer` (`id` attribute), `import_id`, lines under `lineitems/lineitem`
  with `quantity`, `sell_price` and `lineitem_product/code|description`, and its payments only as
  references, `payments/payment` with a `uri` (the OnSite connector's `invoice.xml`);
- filters are `filter=` expressions with quoted values: `datetime_modified > "..."` and
  `code == "15"` (the connector's queries).

What no source shows (UNCONFIRMED; the names accepted are listed below and any of them is
read): where a gift card line's serial is (in the line, or only at the line's own `uri`), the
elements inside a payment (method, amount, card number), where a reference can live on an
invoice (giftsync uses `import_id`) and how an invoice is created (one POST here).
OnSite has no gift card resource: a card is a serial on lines of the merchant's gift card
product (`ONSITE_GIFT_CARD_PRODUCT_CODE`) and on "Gift Card" payments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from urllib.parse import urlparse
from xml.etree.ElementTree import Element, SubElement, tostring

import defusedxml.ElementTree as safe_xml
import httpx
from defusedxml import DefusedXmlException

from app.logging import get_logger, mask_text

log = get_logger(__name__)

# --- CONFIRMED by the sources ---------------------------------------------------------------
SESSION_COOKIE = "LS_SERVER_SESSION_ID"
PRIVATE_ID_HEADER = "X-PAPPID"
LOGOUT_PATH = "/api/sessions/current/logout/"
INVOICES_PATH = "/api/invoices/"
CUSTOMERS_PATH = "/api/customers/"
PRODUCTS_PATH = "/api/products/"
COUNT_PARAM = "count"
OFFSET_PARAM = "offset"
TOTAL_COUNT = "total_count"
FILTER_PARAM = "filter"
MODIFIED_FILTER = 'datetime_modified > "{since}"'
PRODUCT_FILTER = 'code == "{code}"'
INVOICE_TAG = "invoice"
CUSTOMER_TAG = "customer"
PRODUCT_TAG = "product"

# --- UNCONFIRMED: giftsync's choice, or the variants read -------------------------------------
PAYMENT_METHODS_PATH = "/api/payment_methods/"
REFERENCE_FILTER = 'import_id == "{reference}"'
EMAIL_FILTER = 'email == "{email}"'
REFERENCE_NAME = "import_id"
NOTES_NAME = "internal_notes"
SERIAL_NAMES = ("serial", "serial_number", "serialnumber", "sn")
METHOD_NAMES = ("method", "payment_method", "type", "name")
AMOUNT_NAMES = ("amount", "total")
PAYMENT_SERIAL_NAMES = ("serial", "card_number", "serial_number", "gift_card", "reference")
EMAIL_NAMES = ("email", "email_address", "emails", "primary_email")
FIRST_NAME_NAMES = ("first_name", "firstname", "first")
LAST_NAME_NAMES = ("last_name", "lastname", "last")
ERROR_CODE_NAMES = ("code", "error_code")
ERROR_MESSAGE_NAMES = ("message", "description", "detail")

# "Gift Card", "gift-card", "GIFTCARD": the payment method a till redeems a card with.
GIFT_CARD_PATTERN = re.compile(r"gift[\s_-]*card", re.IGNORECASE)
# The sources' datetimes have no zone ("2017-07-11T14:46:11.497143"); which clock is UNCONFIRMED.
NAIVE_TIMEZONE = UTC
# -----------------------------------------------------------------------------------------------

MAX_RESPONSE_BYTES = 32 * 1024 * 1024
_TWO_PLACES = Decimal("0.01")


@dataclass(frozen=True)
class OnSiteGiftCardLine:
    """A card sold or loaded by an invoice (positive; a card paid out online is negative)."""

    serial: str
    amount: Decimal


@dataclass(frozen=True)
class OnSiteGiftCardPayment:
    """Redeemed from the card (positive; a refund onto the card is negative)."""

    serial: str
    amount: Decimal


@dataclass(frozen=True)
class OnSiteInvoice:
    invoice_id: str
    modified_at: datetime
    customer_id: str | None
    reference: str | None
    lines: list[OnSiteGiftCardLine]
    payments: list[OnSiteGiftCardPayment]


@dataclass(frozen=True)
class OnSiteCustomer:
    customer_id: str
    email: str | None
    first_name: str | None
    last_name: str | None


@dataclass(frozen=True)
class LineRef:
    """A gift card line as the invoice shows it; `serial` None when only its `path` has it."""

    serial: str | None
    amount: Decimal
    path: str | None


@dataclass(frozen=True)
class FullInvoice:
    """A full invoice before its payments (references only) and hidden serials are read."""

    invoice_id: str
    modified_at: datetime
    customer_id: str | None
    reference: str | None
    gift_lines: list[LineRef]
    payment_paths: list[str]


class BadXml(Exception):
    pass


# --- XML reading helpers ----------------------------------------------------------------------


def local(tag: object) -> str:
    text = tag if isinstance(tag, str) else ""
    return text.rsplit("}", 1)[-1].lower()


def _children(element: Element, names: Iterable[str]) -> Iterator[Element]:
    wanted = tuple(names)
    for child in element:
        if local(child.tag) in wanted:
            yield child


def first_child(element: Element, names: Iterable[str]) -> Element | None:
    return next(_children(element, names), None)


def _text_of(element: Element) -> str | None:
    """Text of an element, or of its first named child when the value is nested."""
    text = (element.text or "").strip()
    if text:
        return text
    nested = first_child(element, ("name", "description", "value", "address", "email", "code"))
    if nested is not None and nested is not element:
        return _text_of(nested)
    return None


def _text(element: Element, names: Iterable[str]) -> str | None:
    for child in _children(element, names):
        value = _text_of(child)
        if value:
            return value
    return None


def identity(element: Element, names: Iterable[str] = ("id",)) -> str | None:
    """An id given as an attribute (`<customer id="7"/>`) or as a child (`<id>7</id>`)."""
    for attribute in ("id", "ID"):
        value = element.get(attribute)
        if value and value.strip():
            return value.strip()
    return _text(element, names)


def api_path(uri: str | None) -> str | None:
    """The path of a `uri` the server gave (its host may be a name only it knows)."""
    if not uri:
        return None
    path = urlparse(uri).path
    if not path.startswith("/api/") or ".." in path:
        raise BadXml("a uri outside the API")
    return path


def _decimal(raw: str | None, what: str) -> Decimal:
    try:
        value = Decimal((raw or "").replace(",", "").strip())
    except InvalidOperation:
        raise BadXml(f"{what} is not a decimal") from None
    if not value.is_finite():
        raise BadXml(f"{what} is not finite")
    return value


def _timestamp(raw: str | None) -> datetime:
    if not raw:
        raise BadXml("invoice has no datetime_modified")
    try:
        value = datetime.fromisoformat(raw.strip().replace(" ", "T", 1))
    except ValueError:
        raise BadXml("invoice datetime_modified is not ISO 8601") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=NAIVE_TIMEZONE)
    return value


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=NAIVE_TIMEZONE)


def filter_time(moment: datetime) -> str:
    """A `datetime_modified` filter value a second before `moment`, zone-less whole seconds
    like the connector's: with `>` (the operator the sources show) the cursor's own second is
    read again; the overlap is de-duplicated by invoice id."""
    earlier = aware(moment).astimezone(NAIVE_TIMEZONE) - timedelta(seconds=1)
    return earlier.replace(tzinfo=None, microsecond=0).isoformat()


def _collect(element: Element, group: str, item: str) -> list[Element]:
    items: list[Element] = []
    for holder in _children(element, (group,)):
        items.extend(_children(holder, (item,)))
    return items


# --- invoices -------------------------------------------------------------------------------


def invoice_paths(root: Element) -> list[tuple[str, str]]:
    """(id, path) of each summary in a list answer (its `uri`, else the id's own path)."""
    found = []
    for element in root:
        if local(element.tag) != INVOICE_TAG:
            continue
        invoice_id = identity(element)
        if not invoice_id:
            raise BadXml("invoice summary without id")
        found.append((invoice_id, api_path(element.get("uri")) or f"{INVOICES_PATH}{invoice_id}/"))
    return found


def parse_full_invoice(invoice: Element, product_code: str) -> FullInvoice:
    invoice_id = identity(invoice)
    if not invoice_id:
        raise BadXml("invoice without id")
    customer = None
    holder = first_child(invoice, ("invoice_customer",))
    if holder is not None:
        found = first_child(holder, (CUSTOMER_TAG,))
        customer = found.get("id") if found is not None else None
    lines = []
    for line in _collect(invoice, "lineitems", "lineitem"):
        product = first_child(line, ("lineitem_product",))
        code = _text(product, ("code",)) if product is not None else None
        if code is None or code.casefold() != product_code.casefold():
            continue
        quantity_text = _text(line, ("quantity",))
        quantity = _decimal(quantity_text, "line quantity") if quantity_text else Decimal(1)
        price = _decimal(_text(line, ("sell_price",)), "line sell_price")
        lines.append(
            LineRef(_text(line, SERIAL_NAMES), price * quantity, api_path(line.get("uri")))
        )
    payments = [
        path
        for payment in _collect(invoice, "payments", "payment")
        if (path := api_path(payment.get("uri"))) is not None
    ]
    return FullInvoice(
        invoice_id=invoice_id,
        modified_at=_timestamp(_text(invoice, ("datetime_modified",))),
        customer_id=customer or None,
        reference=_text(invoice, (REFERENCE_NAME,)),
        gift_lines=lines,
        payment_paths=payments,
    )


def parse_line_serial(line: Element) -> str | None:
    return _text(line, SERIAL_NAMES)


def parse_payment(payment: Element, invoice_id: str) -> OnSiteGiftCardPayment | None:
    """A payment read at its own `uri`: a gift card one, or None."""
    if not GIFT_CARD_PATTERN.search(_text(payment, METHOD_NAMES) or ""):
        return None
    serial = _text(payment, PAYMENT_SERIAL_NAMES)
    if not serial:
        log.warning("onsite_gift_card_payment_without_serial", invoice_id=invoice_id)
        return None
    return OnSiteGiftCardPayment(
        serial=serial, amount=_decimal(_text(payment, AMOUNT_NAMES), "payment amount")
    )


def parse_customer(customer: Element) -> OnSiteCustomer:
    customer_id = identity(customer, ("id", "customer_id"))
    if not customer_id:
        raise BadXml("customer without id")
    name = first_child(customer, ("name",))
    first = _text(customer, FIRST_NAME_NAMES)
    last = _text(customer, LAST_NAME_NAMES)
    if name is not None and len(name):
        first = first or _text(name, FIRST_NAME_NAMES)
        last = last or _text(name, LAST_NAME_NAMES)
    return OnSiteCustomer(
        customer_id=customer_id,
        email=_text(customer, EMAIL_NAMES),
        first_name=first,
        last_name=last,
    )


def named(root: Element, item_tag: str, names: Iterable[str]) -> list[str]:
    """The text under `names` of each `item_tag` of a list answer (product codes, methods)."""
    return [
        value
        for element in root
        if local(element.tag) == item_tag and (value := _text(element, names))
    ]


def total_count(root: Element) -> int | None:
    raw = root.get(TOTAL_COUNT) or _text(root, (TOTAL_COUNT,))
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadXml("total_count is not an integer") from None


def parse_xml(content: bytes) -> Element:
    if len(content) > MAX_RESPONSE_BYTES:
        raise BadXml("answer too large")
    try:
        root: Element = safe_xml.fromstring(content, forbid_dtd=True)
    except (DefusedXmlException, safe_xml.ParseError, ValueError):
        raise BadXml("answer is not well-formed, safe XML") from None
    return root


def error_detail(response: httpx.Response) -> tuple[str, str]:
    """(code, message) from an XML error body; masked, since servers may echo input."""
    code = f"http_{response.status_code}"
    message = response.reason_phrase or "error"
    try:
        root = parse_xml(response.content)
    except BadXml:
        return code, message
    code = _text(root, ERROR_CODE_NAMES) or code
    message = _text(root, ERROR_MESSAGE_NAMES) or (root.text or "").strip() or message
    return mask_text(code)[:100], mask_text(message)[:300]


# --- XML writing --------------------------------------------------------------------------------


def _add(parent: Element, tag: str, text: str | None = None) -> Element:
    child = SubElement(parent, tag)
    child.text = text
    return child


def _money(amount: Decimal) -> str:
    return str(amount.quantize(_TWO_PLACES))


def build_balance_move(
    serial: str,
    amount: Decimal,
    *,
    reference: str,
    product_code: str,
    payment_method: str,
    customer_id: str | None,
    note: str | None,
) -> bytes:
    """One invoice: a line of the gift card product with the serial (quantity 1 loads,
    -1 takes money off), balanced by a payment of the merchant's `payment_method` (a refund
    when negative), so only the two settings `/readyz` checks are named. The reference goes
    in `import_id`. Element names follow a full invoice (`invoice.xml`); that one POST with
    lines and payments creates it is UNCONFIRMED."""
    invoice = Element(INVOICE_TAG)
    if customer_id:
        holder = SubElement(invoice, "invoice_customer")
        SubElement(holder, CUSTOMER_TAG, {"id": customer_id})
    _add(invoice, REFERENCE_NAME, reference)
    if note:
        _add(invoice, NOTES_NAME, note)
    magnitude = abs(amount)
    line = SubElement(_add(invoice, "lineitems"), "lineitem")
    _add(line, "quantity", "1" if amount > 0 else "-1")
    _add(line, "sell_price", _money(magnitude))
    product = _add(line, "lineitem_product")
    _add(product, "code", product_code)
    _add(line, "serial", serial)
    payment = SubElement(_add(invoice, "payments"), "payment")
    _add(payment, "method", payment_method)
    _add(payment, "amount", _money(amount))
    body: bytes = tostring(invoice, encoding="utf-8", xml_declaration=True)
    return body


def check_amount(amount: Decimal) -> None:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount == 0:
        raise ValueError("amount must be a finite, non-zero Decimal")
    if amount != amount.quantize(_TWO_PLACES):
        raise ValueError("amount must have at most two decimal places")


def quote(value: str) -> str:
    """Keeps a caller's value from ending the filter's string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"')
