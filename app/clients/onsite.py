"""Lightspeed OnSite: XML REST on the merchant's own server, one session for the client's life.

OnSite documents no gift card resource: a card is sold as a "Gift Card" product line carrying
the card serial and redeemed by a "Gift Card" payment. So this client reads invoices since a
cursor and writes each balance move as an invoice, tagged with the caller's reference so a
re-send can be recognised.

The element names of OnSite's XML are not publicly documented; every name this module assumes
is in the constants block below, and the parser accepts the common variants of each.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from importlib import metadata
from xml.etree.ElementTree import Element, SubElement, tostring

import defusedxml.ElementTree as safe_xml
import httpx
from defusedxml import DefusedXmlException
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from app.clients.errors import (
    UnknownOutcome,
    UpstreamRejected,
    UpstreamUnavailable,
)
from app.clients.transport import AiohttpTransport
from app.logging import get_logger, mask_text
from app.settings import ONSITE_REQUIRED, Settings

log = get_logger(__name__)

UPSTREAM = "onsite"

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

PAGE_SIZE = 100
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
_TWO_PLACES = Decimal("0.01")


class OnSiteError(UpstreamRejected):
    upstream = UPSTREAM


class OnSiteAuthError(OnSiteError):
    """Credentials, private app id or seat refused; retrying will not help."""


class OnSiteUnavailable(UpstreamUnavailable):
    upstream = UPSTREAM


class OnSiteUnknownOutcome(UnknownOutcome):
    upstream = UPSTREAM


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


class _Transient(Exception):
    """A read failure worth another try: 5xx, 429, network, timeout."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class _BadXml(Exception):
    pass


def _client_version() -> str:
    try:
        return metadata.version("giftsync")
    except metadata.PackageNotFoundError:
        return "0.0.0"


# --- XML reading helpers ----------------------------------------------------------------------


def _local(tag: object) -> str:
    text = tag if isinstance(tag, str) else ""
    return text.rsplit("}", 1)[-1].lower()


def _children(element: Element, names: Iterable[str]) -> Iterator[Element]:
    wanted = tuple(names)
    for child in element:
        if _local(child.tag) in wanted:
            yield child


def _child(element: Element, names: Iterable[str]) -> Element | None:
    return next(_children(element, names), None)


def _text_of(element: Element) -> str | None:
    """Text of an element, or of its first named child when the value is nested."""
    text = (element.text or "").strip()
    if text:
        return text
    nested = _child(element, ("name", "description", "value", "address", "email", "code"))
    if nested is not None and nested is not element:
        return _text_of(nested)
    return None


def _text(element: Element, names: Iterable[str]) -> str | None:
    for child in _children(element, names):
        value = _text_of(child)
        if value:
            return value
    return None


def _identity(element: Element, names: Iterable[str] = ("id",)) -> str | None:
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
        raise _BadXml(f"{what} is not a decimal") from None
    if not value.is_finite():
        raise _BadXml(f"{what} is not finite")
    return value


def _timestamp(raw: str | None) -> datetime:
    if not raw:
        raise _BadXml("invoice has no modification date")
    try:
        value = datetime.fromisoformat(raw.strip().replace(" ", "T", 1))
    except ValueError:
        raise _BadXml("invoice modification date is not ISO 8601") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=NAIVE_TIMEZONE)
    return value


def _aware(moment: datetime) -> datetime:
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
    product = _child(line, (PRODUCT_NAME,))
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
    reference = _child(invoice, CUSTOMER_REF_NAMES)
    if reference is not None:
        found = _identity(reference)
        if found:
            return found
    return _text(invoice, CUSTOMER_ID_NAMES)


def parse_invoice(invoice: Element) -> OnSiteInvoice:
    invoice_id = _identity(invoice, ("id", "invoice_id"))
    if not invoice_id:
        raise _BadXml("invoice without id")
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
    customer_id = _identity(customer, ("id", "customer_id"))
    if not customer_id:
        raise _BadXml("customer without id")
    name = _child(customer, (NAME_NAME,))
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


def _total_count(root: Element) -> int | None:
    raw = root.get(TOTAL_COUNT) or _text(root, (TOTAL_COUNT,))
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise _BadXml("total_count is not an integer") from None


def _parse_xml(content: bytes) -> Element:
    if len(content) > MAX_RESPONSE_BYTES:
        raise _BadXml("answer too large")
    try:
        root: Element = safe_xml.fromstring(content, forbid_dtd=True)
    except (DefusedXmlException, safe_xml.ParseError, ValueError):
        raise _BadXml("answer is not well-formed, safe XML") from None
    return root


def _error_detail(response: httpx.Response) -> tuple[str, str]:
    """(code, message) from an XML error body; masked, since servers may echo input."""
    code = f"http_{response.status_code}"
    message = response.reason_phrase or "error"
    try:
        root = _parse_xml(response.content)
    except _BadXml:
        return code, message
    code = _text(root, ERROR_CODE_NAMES) or code
    message = _text(root, ERROR_MESSAGE_NAMES) or (root.text or "").strip() or message
    return mask_text(code)[:100], mask_text(message)[:300]


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


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


def _check_amount(amount: Decimal) -> None:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount == 0:
        raise ValueError("amount must be a finite, non-zero Decimal")
    if amount != amount.quantize(_TWO_PLACES):
        raise ValueError("amount must have at most two decimal places")


def _quote(value: str) -> str:
    """Keeps a caller's value from ending the filter's string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


# --- the client ---------------------------------------------------------------------------------


class OnSiteClient:
    """One typed method per OnSite operation; owns retries, session and error mapping."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        app_id: str,
        private_id: str | None,
        *,
        verify_tls: bool = True,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        read_attempts: int = 4,
        retry_base_delay: float = 0.5,
        write_attempts: int = 3,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.verify_tls = verify_tls
        self.timeout = timeout
        self._password = SecretStr(password)
        self._private_id = SecretStr(private_id) if private_id else None
        self._read_attempts = max(1, read_attempts)
        self._write_attempts = max(1, write_attempts)
        self._retry_base_delay = retry_base_delay
        headers = {"User-Agent": f"{app_id}/{_client_version()}", "Accept": "application/xml"}
        if private_id:
            headers[PRIVATE_ID_HEADER] = private_id
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=httpx.BasicAuth(username, password),
            headers=headers,
            timeout=httpx.Timeout(timeout),
            transport=transport or AiohttpTransport(verify=verify_tls),
        )
        # Until the first answer sets the cookie, requests go one at a time: each request
        # without a session opens a new one, and every session holds a seat until a restart.
        self._login_lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"OnSiteClient(base_url={self.base_url!r}, username={self.username!r})"

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> OnSiteClient:
        missing = settings.missing(*ONSITE_REQUIRED)
        if missing:
            raise ValueError(f"OnSite is not configured: {', '.join(missing)} missing")
        assert settings.onsite_base_url is not None
        assert settings.onsite_username is not None
        assert settings.onsite_password is not None
        assert settings.onsite_app_id is not None
        private_id = settings.onsite_private_id
        return cls(
            settings.onsite_base_url,
            settings.onsite_username,
            settings.onsite_password.get_secret_value(),
            settings.onsite_app_id,
            private_id.get_secret_value() if private_id is not None else None,
            verify_tls=settings.onsite_verify_tls,
            transport=transport,
        )

    # --- session -------------------------------------------------------------------------------

    @property
    def has_session(self) -> bool:
        return self._session_value() is not None

    def _session_value(self) -> str | None:
        for cookie in self._http.cookies.jar:
            if cookie.name == SESSION_COOKIE:
                return cookie.value
        return None

    def _forget_session(self, refused: str | None = None) -> None:
        """Drops the cookie; with `refused`, only if no concurrent call has replaced it yet."""
        for cookie in list(self._http.cookies.jar):
            if cookie.name == SESSION_COOKIE and refused in (None, cookie.value):
                self._http.cookies.jar.clear(cookie.domain, cookie.path, cookie.name)

    async def aclose(self) -> None:
        """Log out so the session's seat is freed now rather than at the next server restart."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.has_session:
                try:
                    async with asyncio.timeout(self.timeout):
                        response = await self._http.post(LOGOUT_PATH)
                    if response.status_code >= 400:
                        log.warning("onsite_logout_refused", status=response.status_code)
                except (httpx.HTTPError, TimeoutError) as exc:
                    log.warning("onsite_logout_failed", error=type(exc).__name__)
                self._forget_session()
        finally:
            await self._http.aclose()

    # --- one exchange --------------------------------------------------------------------------

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str | int] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """One request; transport errors and the deadline propagate to the caller to classify."""
        headers = {"Content-Type": "application/xml"} if content is not None else None
        if self.has_session:
            return await self._send(method, path, params, content, headers)
        async with self._login_lock:
            return await self._send(method, path, params, content, headers)

    async def _send(
        self,
        method: str,
        path: str,
        params: dict[str, str | int] | None,
        content: bytes | None,
        headers: dict[str, str] | None,
    ) -> httpx.Response:
        # ASGI transports ignore httpx timeouts; the deadline makes a hung answer a timeout.
        async with asyncio.timeout(self.timeout):
            response = await self._http.request(
                method, path, params=params, content=content, headers=headers
            )
        log.debug("onsite_request", method=method, path=path, status=response.status_code)
        return response

    async def _authenticated(
        self, method: str, path: str, *, params: dict[str, str | int] | None = None
    ) -> httpx.Response:
        """A read, with one re-login when the server has forgotten our session."""
        sent_session = self._session_value()
        response = await self._exchange(method, path, params=params)
        if response.status_code == 401 and sent_session is not None:
            log.info("onsite_session_expired_relogin")
            self._forget_session(sent_session)
            response = await self._exchange(method, path, params=params)
        return response

    def _raise_refusal(self, response: httpx.Response) -> None:
        code, message = _error_detail(response)
        if response.status_code in (401, 403):
            raise OnSiteAuthError(
                f"OnSite refused the credentials ({response.status_code}): {message}", code=code
            )
        raise OnSiteError(
            f"OnSite refused the request ({response.status_code}): {message}", code=code
        )

    async def _read(self, path: str, params: dict[str, str | int] | None = None) -> Element | None:
        """GET with retries on 5xx, 429 and network; None on 404."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(self._read_attempts),
            wait=wait_random_exponential(multiplier=self._retry_base_delay, max=10),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._read_once(path, params)
        except _Transient as exc:
            raise OnSiteUnavailable(
                f"OnSite unavailable: {exc}", retry_after=exc.retry_after
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_once(self, path: str, params: dict[str, str | int] | None) -> Element | None:
        try:
            response = await self._authenticated("GET", path, params=params)
        except TimeoutError:
            raise _Transient(f"GET {path} timed out") from None
        except httpx.TransportError as exc:
            raise _Transient(f"GET {path} failed: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise _Transient(f"GET {path} answered {response.status_code}", _retry_after(response))
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            self._raise_refusal(response)
        try:
            return _parse_xml(response.content)
        except _BadXml as exc:
            raise OnSiteUnavailable(f"OnSite answered GET {path} with bad XML: {exc}") from None

    async def _pages(
        self, path: str, item_tag: str, params: dict[str, str | int]
    ) -> AsyncIterator[Element]:
        offset = 0
        while True:
            page_params: dict[str, str | int] = {
                **params,
                COUNT_PARAM: PAGE_SIZE,
                OFFSET_PARAM: offset,
            }
            root = await self._read(path, page_params)
            if root is None:
                return
            try:
                total = _total_count(root)
            except _BadXml as exc:
                raise OnSiteUnavailable(f"OnSite list {path}: {exc}") from None
            items = [child for child in root if _local(child.tag) == item_tag]
            for item in items:
                yield item
            offset += len(items)
            if not items or (total is not None and offset >= total):
                return
            if total is None and len(items) < PAGE_SIZE:
                return

    # --- reads ---------------------------------------------------------------------------------

    async def iter_invoices_since(self, since: datetime | None) -> AsyncIterator[OnSiteInvoice]:
        """Every invoice modified at or after `since` (inclusive: at-least-once for a cursor).

        The server is asked to filter and sort; a server that ignores either is tolerated by
        skipping older invoices here, so correctness never depends on the filter.
        """
        cutoff = _aware(since) if since is not None else None
        params: dict[str, str | int] = {ORDER_PARAM: ORDER_BY_MODIFIED}
        if cutoff is not None:
            stamp = cutoff.astimezone(UTC).isoformat()
            params[FILTER_PARAM] = MODIFIED_FILTER.format(since=stamp)
        async for element in self._pages(INVOICES_PATH, INVOICE_TAG, params):
            try:
                invoice = parse_invoice(element)
            except _BadXml as exc:
                raise OnSiteUnavailable(f"OnSite invoice unreadable: {exc}") from None
            if cutoff is not None and invoice.modified_at < cutoff:
                continue
            yield invoice

    async def find_invoice_by_reference(self, reference: str) -> OnSiteInvoice | None:
        params: dict[str, str | int] = {
            FILTER_PARAM: REFERENCE_FILTER.format(reference=_quote(reference))
        }
        async for element in self._pages(INVOICES_PATH, INVOICE_TAG, params):
            try:
                invoice = parse_invoice(element)
            except _BadXml as exc:
                raise OnSiteUnavailable(f"OnSite invoice unreadable: {exc}") from None
            if invoice.reference == reference:
                return invoice
        return None

    async def find_customer_by_email(self, email: str) -> OnSiteCustomer | None:
        wanted = email.strip().casefold()
        params: dict[str, str | int] = {FILTER_PARAM: EMAIL_FILTER.format(email=_quote(email))}
        async for element in self._pages(CUSTOMERS_PATH, CUSTOMER_TAG, params):
            try:
                customer = parse_customer(element)
            except _BadXml as exc:
                raise OnSiteUnavailable(f"OnSite customer unreadable: {exc}") from None
            if customer.email is not None and customer.email.strip().casefold() == wanted:
                return customer
        return None

    async def get_customer(self, customer_id: str) -> OnSiteCustomer | None:
        root = await self._read(f"{CUSTOMERS_PATH}{_path_part(customer_id)}/")
        if root is None:
            return None
        try:
            return parse_customer(root)
        except _BadXml as exc:
            raise OnSiteUnavailable(f"OnSite customer unreadable: {exc}") from None

    async def gift_card_balance(self, serial: str) -> Decimal | None:
        """Balance computed from every invoice: loads minus redemptions; None if never seen.

        OnSite exposes no gift card resource, so this reads the whole invoice history. Meant for
        reconcile and operator look-ups, not for a hot path.
        """
        balance = Decimal(0)
        seen = False
        async for invoice in self.iter_invoices_since(None):
            for line in invoice.lines:
                if line.serial == serial:
                    balance += line.amount
                    seen = True
            for payment in invoice.payments:
                if payment.serial == serial:
                    balance -= payment.amount
                    seen = True
        return balance if seen else None

    # --- writes --------------------------------------------------------------------------------

    async def post_balance_move(
        self,
        serial: str,
        amount: Decimal,
        *,
        reference: str,
        customer_id: str | None = None,
        note: str | None = None,
    ) -> str:
        """Load (amount > 0) or redeem (amount < 0) as an invoice tagged with `reference`.

        The reference is looked up before every send, so a re-send never applies twice. An
        answer lost after sending is resolved by one more look-up; if that cannot tell,
        OnSiteUnknownOutcome is raised and the caller retries later with the same reference.
        """
        _check_amount(amount)
        if not serial.strip():
            raise ValueError("serial must not be empty")
        if not reference.strip():
            raise ValueError("reference must not be empty")
        body = build_balance_move(
            serial, amount, reference=reference, customer_id=customer_id, note=note
        )
        relogged = False
        last_problem = "no attempt made"
        retry_after: float | None = None
        for attempt in range(self._write_attempts):
            if attempt:
                await asyncio.sleep(
                    min(10.0, self._retry_base_delay * 2**attempt) * (0.5 + random.random())
                )
            existing = await self.find_invoice_by_reference(reference)
            if existing is not None:
                log.info("onsite_balance_move_already_applied", invoice_id=existing.invoice_id)
                return existing.invoice_id
            sent_session = self._session_value()
            try:
                response = await self._exchange("POST", INVOICES_PATH, content=body)
            except httpx.ConnectError:
                # Never reached the server: safe to send again after the look-up.
                last_problem = "could not connect"
                continue
            except (TimeoutError, httpx.TransportError) as exc:
                return await self._resolve_lost(reference, type(exc).__name__)
            status = response.status_code
            if status == 401 and sent_session is not None and not relogged:
                self._forget_session(sent_session)
                relogged = True
                last_problem = "session expired"
                continue
            if status in (429, 503):
                # Refused before anything was applied.
                last_problem = f"answered {status}"
                retry_after = _retry_after(response)
                continue
            if status >= 500:
                return await self._resolve_lost(reference, f"answered {status}")
            if status >= 400:
                self._raise_refusal(response)
            invoice_id = self._created_id(response)
            if invoice_id is None:
                return await self._resolve_lost(reference, "answer without an invoice id")
            log.info("onsite_balance_move_applied", invoice_id=invoice_id, amount=str(amount))
            return invoice_id
        raise OnSiteUnavailable(
            f"OnSite balance move not sent: {last_problem}", retry_after=retry_after
        )

    def _created_id(self, response: httpx.Response) -> str | None:
        try:
            root = _parse_xml(response.content)
        except _BadXml:
            root = None
        if root is not None:
            found = _identity(root, ("id", "invoice_id"))
            if found:
                return found
            nested = _child(root, (INVOICE_TAG,))
            if nested is not None and (found := _identity(nested, ("id", "invoice_id"))):
                return found
        location = response.headers.get("Location", "").rstrip("/")
        return location.rsplit("/", 1)[-1] or None if location else None

    async def _resolve_lost(self, reference: str, why: str) -> str:
        """The write may or may not have happened: ask once, and never re-send blindly."""
        log.warning("onsite_balance_move_answer_lost", reason=why)
        try:
            existing = await self.find_invoice_by_reference(reference)
        except (OnSiteUnavailable, OnSiteError):
            existing = None
        if existing is not None:
            return existing.invoice_id
        raise OnSiteUnknownOutcome(
            f"OnSite balance move answer lost ({why}); look up or retry with the same reference",
            reference=reference,
        )


def _path_part(value: str) -> str:
    if not value or not re.fullmatch(r"[A-Za-z0-9_.:-]+", value):
        raise ValueError("identifier has characters OnSite ids never have")
    return value


__all__: list[str] = [
    "OnSiteAuthError",
    "OnSiteClient",
    "OnSiteCustomer",
    "OnSiteError",
    "OnSiteGiftCardLine",
    "OnSiteGiftCardPayment",
    "OnSiteInvoice",
    "OnSiteUnavailable",
    "OnSiteUnknownOutcome",
    "build_balance_move",
    "parse_customer",
    "parse_invoice",
]
