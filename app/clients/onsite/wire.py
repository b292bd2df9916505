"""OnSite's XML as giftsync reads and writes it: invoices, customers, balance moves.

OnSite documents no gift card resource: a card is sold as a "Gift Card" product line carrying
the card serial and redeemed by a "Gift Card" payment. The element names of OnSite's XML are
not publicly documented; every name this module assumes is in the constants block below, and
the parser accepts the common variants of each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from xml.etree.ElementTree import Element, SubElement, tostring

import defusedxml.ElementTree as safe_xml
import httpx
from defusedxml import DefusedXmlException

from app.logging import get_logger, mask_text

log = get_logger(__name__)

# --- Wire assumptions (documented by UPSTREAMS.md) -------------------------------------------
SESSION_COOKIE = "LS_SERVER_SESSION_ID"
PRIVATE_ID_HEADER = "X-PAPPID"
LOGOUT_PATH = "/api/sessions/current/logout/"
INVOICES_PATH = "/api/invoices/"
CUSTOMERS_PATH = "/api/customers/"
COUNT_PARAM = "count"
OFFSET_PARAM = "offset"
TOTAL_COUNT = "total_count"

# --- Wire assumptions (not publicly documented: designed here, variants accepted) ------------
FILTER_PARAM = "filter"
ORDER_PARAM = "order_by"
MODIFIED_FILTER = '(date_modified >= "{since}")'
REFERENCE_FILTER = '(reference == "{reference}")'
EMAIL_FILTER = '(email == "{email}")'
ORDER_BY_MODIFIED = "date_modified"

INVOICE_TAG = "invoice"
CUSTOMER_TAG = "customer"
MODIFIED_NAMES = ("date_modified", "datetime_modified", "modified", "updated_at", "date_updated")
CUSTOMER_REF_NAMES = ("customer",)
CUSTOMER_ID_NAMES = ("customer_id",)
REFERENCE_NAMES = ("reference", "po", "po_number", "external_reference")
NOTES_NAME = "notes"
LINES_NAMES = ("lineitems", "line_items", "lines")
LINE_NAMES = ("lineitem", "line_item", "line")
PRODUCT_NAME = "product"
PRODUCT_CODE_NAMES = ("code", "product_code", "sku")
PRODUCT_TEXT_NAMES = ("code", "product_code", "sku", "name", "description")
LINE_TEXT_NAMES = ("description", "name", "product_code", "code")
SERIAL_NAMES = ("serial", "serial_number", "serialnumber", "sn")
PRICE_NAMES = ("price", "sell_price", "unit_price", "amount")
QUANTITY_NAMES = ("quantity", "qty")
PAYMENTS_NAMES = ("payments",)
PAYMENT_NAMES = ("payment",)
METHOD_NAMES = ("method", "payment_method", "type", "name")
AMOUNT_NAMES = ("amount", "total")
PAYMENT_SERIAL_NAMES = ("reference", "serial", "serial_number", "card_number", "gift_card")
EMAIL_NAMES = ("email", "email_address", "emails", "primary_email")
NAME_NAME = "name"
FIRST_NAME_NAMES = ("first_name", "firstname", "first")
LAST_NAME_NAMES = ("last_name", "lastname", "last")
ERROR_CODE_NAMES = ("code", "error_code")
ERROR_MESSAGE_NAMES = ("message", "description", "detail")

# What giftsync writes: a gift card line (load) or a gift card payment (redeem), balanced by an
# offsetting entry so the invoice nets to zero as a real till would require.
GIFT_CARD_PRODUCT_CODE = "GIFTCARD"
GIFT_CARD_LABEL = "Gift Card"
OFFSET_PAYMENT_METHOD = "giftsync online"
OFFSET_PRODUCT_CODE = "GIFTSYNC-ONLINE"
OFFSET_LINE_DESCRIPTION = "Spent online (giftsync)"

# "Gift Card", "gift-card", "GIFTCARD", "Gift Card Reload": all name a gift card.
GIFT_CARD_PATTERN = re.compile(r"gift[\s_-]*card", re.IGNORECASE)
# OnSite servers report their local time; a timestamp without an offset is read as UTC.
NAIVE_TIMEZONE = UTC
# -----------------------------------------------------------------------------------------------

MAX_RESPONSE_BYTES = 32 * 1024 * 1024
_TWO_PLACES = Decimal("0.01")


@dataclass(frozen=True)
class OnSiteGiftCardLine:
    """A card sold or loaded by an invoice (positive; a returned card is negative)."""

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
        raise BadXml("invoice has no modification date")
    try:
        value = datetime.fromisoformat(raw.strip().replace(" ", "T", 1))
    except ValueError:
        raise BadXml("invoice modification date is not ISO 8601") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=NAIVE_TIMEZONE)
    return value


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=NAIVE_TIMEZONE)


def _is_gift_card(*labels: str | None) -> bool:
    return any(label is not None and GIFT_CARD_PATTERN.search(label) for label in labels)


def _collect(
    element: Element, group_names: Iterable[str], item_names: Iterable[str]
) -> list[Element]:
    items: list[Element] = []
    for group in _children(element, group_names):
        items.extend(_children(group, item_names))
    return items


def _parse_line(line: Element, invoice_id: str) -> OnSiteGiftCardLine | None:
    product = first_child(line, (PRODUCT_NAME,))
    labels = [_text(line, LINE_TEXT_NAMES)]
    if product is not None:
        labels.extend(_text(product, (name,)) for name in PRODUCT_TEXT_NAMES)
    if not _is_gift_card(*labels):
        return None
    serial = _text(line, SERIAL_NAMES)
    if not serial:
        log.warning("onsite_gift_card_line_without_serial", invoice_id=invoice_id)
        return None
    price = _decimal(_text(line, PRICE_NAMES), "line price")
    quantity_text = _text(line, QUANTITY_NAMES)
    quantity = _decimal(quantity_text, "line quantity") if quantity_text else Decimal(1)
    return OnSiteGiftCardLine(serial=serial, amount=price * quantity)


def _parse_payment(payment: Element, invoice_id: str) -> OnSiteGiftCardPayment | None:
    if not _is_gift_card(_text(payment, METHOD_NAMES)):
        return None
    serial = _text(payment, PAYMENT_SERIAL_NAMES)
    if not serial:
        log.warning("onsite_gift_card_payment_without_serial", invoice_id=invoice_id)
        return None
    return OnSiteGiftCardPayment(
        serial=serial, amount=_decimal(_text(payment, AMOUNT_NAMES), "payment amount")
    )


def _invoice_customer(invoice: Element) -> str | None:
    reference = first_child(invoice, CUSTOMER_REF_NAMES)
    if reference is not None:
        found = identity(reference)
        if found:
            return found
    return _text(invoice, CUSTOMER_ID_NAMES)


def parse_invoice(invoice: Element) -> OnSiteInvoice:
    invoice_id = identity(invoice, ("id", "invoice_id"))
    if not invoice_id:
        raise BadXml("invoice without id")
    lines = [
        loaded
        for line in _collect(invoice, LINES_NAMES, LINE_NAMES)
        if (loaded := _parse_line(line, invoice_id)) is not None
    ]
    payments = [
        redeemed
        for payment in _collect(invoice, PAYMENTS_NAMES, PAYMENT_NAMES)
        if (redeemed := _parse_payment(payment, invoice_id)) is not None
    ]
    return OnSiteInvoice(
        invoice_id=invoice_id,
        modified_at=_timestamp(_text(invoice, MODIFIED_NAMES)),
        customer_id=_invoice_customer(invoice),
        reference=_text(invoice, REFERENCE_NAMES),
        lines=lines,
        payments=payments,
    )


def parse_customer(customer: Element) -> OnSiteCustomer:
    customer_id = identity(customer, ("id", "customer_id"))
    if not customer_id:
        raise BadXml("customer without id")
    name = first_child(customer, (NAME_NAME,))
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


def _add(parent: Element, tag: str, text: str | None) -> Element:
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
    customer_id: str | None,
    note: str | None,
) -> bytes:
    invoice = Element(INVOICE_TAG)
    if customer_id:
        SubElement(invoice, CUSTOMER_TAG, {"id": customer_id})
    _add(invoice, REFERENCE_NAMES[0], reference)
    if note:
        _add(invoice, NOTES_NAME, note)
    magnitude = _money(abs(amount))
    lines = SubElement(invoice, LINES_NAMES[0])
    payments = SubElement(invoice, PAYMENTS_NAMES[0])
    line = SubElement(lines, LINE_NAMES[0])
    product = SubElement(line, PRODUCT_NAME)
    payment = SubElement(payments, PAYMENT_NAMES[0])
    if amount > 0:
        _add(product, PRODUCT_CODE_NAMES[0], GIFT_CARD_PRODUCT_CODE)
        _add(line, LINE_TEXT_NAMES[0], GIFT_CARD_LABEL)
        _add(line, SERIAL_NAMES[0], serial)
        _add(payment, METHOD_NAMES[0], OFFSET_PAYMENT_METHOD)
        _add(payment, AMOUNT_NAMES[0], magnitude)
        _add(payment, PAYMENT_SERIAL_NAMES[0], reference)
    else:
        _add(product, PRODUCT_CODE_NAMES[0], OFFSET_PRODUCT_CODE)
        _add(line, LINE_TEXT_NAMES[0], OFFSET_LINE_DESCRIPTION)
        _add(payment, METHOD_NAMES[0], GIFT_CARD_LABEL)
        _add(payment, AMOUNT_NAMES[0], magnitude)
        _add(payment, PAYMENT_SERIAL_NAMES[0], serial)
    _add(line, PRICE_NAMES[0], magnitude)
    _add(line, QUANTITY_NAMES[0], "1")
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
