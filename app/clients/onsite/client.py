"""Lightspeed OnSite: XML REST on the merchant's own server, one session for the client's life.

This client reads invoices since a cursor and writes each balance move as an invoice, tagged
with the caller's reference. A list holds summaries only (invoices tutorial), so each invoice
is read at its own `uri`, and each of its payments at theirs (a full invoice shows payments as
references: the OnSite connector's `invoice.xml`). Writes go through the delivery policy and are
refused before sending while a set-up `error` check fails (`setup`): the reference is looked up
before the first send and after a lost answer. OnSite's reference filter is not documented and
a just-created invoice may not show yet, so not finding it proves nothing: a lost answer ends
as `OnSiteUnknownOutcome`, and the caller retries with the same reference later.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from importlib import metadata
from xml.etree.ElementTree import Element

import httpx
from pydantic import SecretStr

from app.clients.delivery import AnswerLost, Delivery, check_status, new_http_client
from app.clients.onsite.errors import (
    UPSTREAM,
    OnSiteAuthError,
    OnSiteError,
    OnSiteUnavailable,
    OnSiteUnknownOutcome,
)
from app.clients.onsite.session import OnSiteSession, Params
from app.clients.onsite.setup import OnSiteSetupError, read_checks
from app.clients.onsite.wire import (
    COUNT_PARAM,
    CUSTOMER_TAG,
    CUSTOMERS_PATH,
    EMAIL_FILTER,
    FILTER_PARAM,
    INVOICE_TAG,
    INVOICES_PATH,
    MODIFIED_FILTER,
    OFFSET_PARAM,
    PRIVATE_ID_HEADER,
    REFERENCE_FILTER,
    BadXml,
    OnSiteCustomer,
    OnSiteGiftCardLine,
    OnSiteInvoice,
    aware,
    build_balance_move,
    check_amount,
    error_detail,
    filter_time,
    first_child,
    identity,
    invoice_paths,
    local,
    parse_customer,
    parse_full_invoice,
    parse_line_serial,
    parse_payment,
    parse_xml,
    quote,
    total_count,
)
from app.clients.setup_checks import SetupCheck, SetupGate
from app.logging import get_logger
from app.settings import ONSITE_REQUIRED, Settings

log = get_logger(__name__)

PAGE_SIZE = 100


def _client_version() -> str:
    try:
        return metadata.version("giftsync")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class OnSiteClient:
    """One typed method per OnSite operation; owns the session and error mapping."""

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
        gift_card_product_code: str = "GIFTCARD",
        payment_method: str = "giftsync online",
    ) -> None:
        self.gift_card_product_code = gift_card_product_code
        self.payment_method = payment_method
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.verify_tls = verify_tls
        self.timeout = timeout
        self._password = SecretStr(password)
        self._private_id = SecretStr(private_id) if private_id else None
        headers = {"User-Agent": f"{app_id}/{_client_version()}", "Accept": "application/xml"}
        if private_id:
            headers[PRIVATE_ID_HEADER] = private_id
        self._http = new_http_client(
            timeout=timeout,
            transport=transport,
            headers=headers,
            base_url=self.base_url,
            auth=httpx.BasicAuth(username, password),
            # OnSite servers often run on the shop's own certificate (UPSTREAMS.md).
            verify=verify_tls,
        )
        self._session = OnSiteSession(self._http, timeout=timeout)
        self._reads = Delivery(
            UPSTREAM,
            OnSiteUnavailable,
            OnSiteUnknownOutcome,
            attempts=max(1, read_attempts),
            backoff=retry_base_delay,
        )
        self._writes = replace(self._reads, attempts=max(1, write_attempts))
        self.setup = SetupGate(self._read_setup, OnSiteSetupError)

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
            gift_card_product_code=settings.onsite_gift_card_product_code,
            payment_method=settings.onsite_payment_method,
        )

    @property
    def has_session(self) -> bool:
        return self._session.active

    async def aclose(self) -> None:
        """Log out so the session's seat is freed now rather than at the next server restart."""
        await self._session.close()

    # --- requests ------------------------------------------------------------------------------

    def _raise_refusal(self, response: httpx.Response) -> None:
        code, message = error_detail(response)
        if response.status_code in (401, 403):
            raise OnSiteAuthError(
                f"OnSite refused the credentials ({response.status_code}): {message}", code=code
            )
        raise OnSiteError(
            f"OnSite refused the request ({response.status_code}): {message}", code=code
        )

    async def _read(self, path: str, params: Params | None = None) -> Element | None:
        """A GET, sent again after any failure; None on 404."""

        async def attempt() -> Element | None:
            response = await self._session.request("GET", path, params=params)
            check_status(response)
            if response.status_code == 404:
                return None
            if response.status_code >= 400:
                self._raise_refusal(response)
            try:
                return parse_xml(response.content)
            except BadXml as exc:
                raise AnswerLost(f"bad XML ({exc})") from None

        return await self._reads.call(attempt, what=f"OnSite GET {path}")

    async def _list_pages(self, path: str, item_tag: str, params: Params) -> AsyncIterator[Element]:
        """Each page of a list (`count`/`offset`, `total_count` on the root)."""
        offset = 0
        while True:
            page_params: Params = {**params, COUNT_PARAM: PAGE_SIZE, OFFSET_PARAM: offset}
            root = await self._read(path, page_params)
            if root is None:
                return
            try:
                total = total_count(root)
            except BadXml as exc:
                raise OnSiteUnavailable(f"OnSite list {path}: {exc}") from None
            yield root
            size = sum(1 for element in root if local(element.tag) == item_tag)
            offset += size
            if not size or (total is not None and offset >= total):
                return
            if total is None and size < PAGE_SIZE:
                return

    async def _pages(self, path: str, item_tag: str, params: Params) -> AsyncIterator[Element]:
        async for root in self._list_pages(path, item_tag, params):
            for element in root:
                if local(element.tag) == item_tag:
                    yield element

    # --- reads ---------------------------------------------------------------------------------

    async def setup_checks(self, *, fresh: bool = False) -> list[SetupCheck]:
        """The set-up read back from the server (cached a minute unless `fresh`)."""
        return await self.setup.checks(fresh=fresh)

    async def _read_setup(self) -> list[SetupCheck]:
        return await read_checks(self._read, self.gift_card_product_code, self.payment_method)

    async def iter_invoices_since(self, since: datetime | None) -> AsyncIterator[OnSiteInvoice]:
        """Every invoice modified at or after `since` (inclusive: at-least-once for a cursor).

        The server is asked for `datetime_modified >` a second before the cursor (the operator
        the sources show); each summary is then read whole at its `uri`, and invoices older
        than `since` are skipped here, so correctness never depends on the filter. No order is
        documented: callers must not assume one. Each invoice is read once per call.
        """
        cutoff = aware(since) if since is not None else None
        params: Params = {}
        if cutoff is not None:
            params[FILTER_PARAM] = MODIFIED_FILTER.format(since=filter_time(cutoff))
        async for invoice in self._invoices(params):
            if cutoff is not None and invoice.modified_at < cutoff:
                continue
            yield invoice

    async def find_invoice_by_reference(self, reference: str) -> OnSiteInvoice | None:
        params: Params = {FILTER_PARAM: REFERENCE_FILTER.format(reference=quote(reference))}
        async for invoice in self._invoices(params):
            if invoice.reference == reference:
                return invoice
        return None

    async def _invoices(self, params: Params) -> AsyncIterator[OnSiteInvoice]:
        seen: set[str] = set()
        async for page in self._list_pages(INVOICES_PATH, INVOICE_TAG, params):
            try:
                listed = invoice_paths(page)
            except BadXml as exc:
                raise OnSiteUnavailable(f"OnSite invoice list unreadable: {exc}") from None
            for invoice_id, path in listed:
                # Offset paging over a list that changes meanwhile can show one twice.
                if invoice_id in seen:
                    continue
                seen.add(invoice_id)
                invoice = await self._invoice(path)
                if invoice is not None:
                    yield invoice

    async def _invoice(self, path: str) -> OnSiteInvoice | None:
        """One invoice at its `uri`, with its gift card lines' serials and its payments."""
        root = await self._read(path)
        if root is None:
            return None  # gone since it was listed
        try:
            full = parse_full_invoice(root, self.gift_card_product_code)
            lines = []
            for line in full.gift_lines:
                serial = line.serial
                if serial is None and line.path is not None:
                    # Lines render `full_render="false"`: the serial may be at the line's uri.
                    detail = await self._read(line.path)
                    serial = parse_line_serial(detail) if detail is not None else None
                if serial is None:
                    log.warning("onsite_gift_card_line_without_serial", invoice_id=full.invoice_id)
                    continue
                lines.append(OnSiteGiftCardLine(serial, line.amount))
            payments = []
            for payment_path in full.payment_paths:
                detail = await self._read(payment_path)
                found = parse_payment(detail, full.invoice_id) if detail is not None else None
                if found is not None:
                    payments.append(found)
        except BadXml as exc:
            raise OnSiteUnavailable(f"OnSite invoice unreadable: {exc}") from None
        return OnSiteInvoice(
            invoice_id=full.invoice_id,
            modified_at=full.modified_at,
            customer_id=full.customer_id,
            reference=full.reference,
            lines=lines,
            payments=payments,
        )

    async def find_customer_by_email(self, email: str) -> OnSiteCustomer | None:
        wanted = email.strip().casefold()
        params: Params = {FILTER_PARAM: EMAIL_FILTER.format(email=quote(email))}
        async for element in self._pages(CUSTOMERS_PATH, CUSTOMER_TAG, params):
            customer = _customer(element)
            if customer.email is not None and customer.email.strip().casefold() == wanted:
                return customer
        return None

    async def get_customer(self, customer_id: str) -> OnSiteCustomer | None:
        root = await self._read(f"{CUSTOMERS_PATH}{_path_part(customer_id)}/")
        return _customer(root) if root is not None else None

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

        The reference is looked up before sending, so a re-send never applies twice. An answer
        lost after sending is resolved by one more look-up; if that cannot tell,
        OnSiteUnknownOutcome is raised and the caller retries later with the same reference.
        """
        check_amount(amount)
        await self.setup.require()
        if not serial.strip():
            raise ValueError("serial must not be empty")
        if not reference.strip():
            raise ValueError("reference must not be empty")
        body = build_balance_move(
            serial,
            amount,
            reference=reference,
            product_code=self.gift_card_product_code,
            payment_method=self.payment_method,
            customer_id=customer_id,
            note=note,
        )

        async def send() -> str:
            response = await self._session.request("POST", INVOICES_PATH, content=body)
            check_status(response)
            if response.status_code >= 400:
                self._raise_refusal(response)
            invoice_id = _created_id(response)
            if invoice_id is None:
                raise AnswerLost("answer without an invoice id")
            log.info("onsite_balance_move_applied", invoice_id=invoice_id, amount=str(amount))
            return invoice_id

        existing = await self.find_invoice_by_reference(reference)
        if existing is not None:
            log.info("onsite_balance_move_already_applied", invoice_id=existing.invoice_id)
            return existing.invoice_id
        return await self._writes.write(
            send,
            what="OnSite balance move",
            reference=reference,
            look_up=lambda: self._applied(reference),
            absence_is_proof=False,
        )

    async def _applied(self, reference: str) -> str | None:
        """After a lost answer: the invoice written under `reference`, if it shows yet. A
        refused look-up tells nothing either way."""
        try:
            existing = await self.find_invoice_by_reference(reference)
        except OnSiteError as exc:
            raise OnSiteUnavailable(f"OnSite reference look-up refused: {exc}") from exc
        return existing.invoice_id if existing is not None else None


def _created_id(response: httpx.Response) -> str | None:
    try:
        root = parse_xml(response.content)
    except BadXml:
        root = None
    if root is not None:
        found = identity(root, ("id", "invoice_id"))
        if found:
            return found
        nested = first_child(root, (INVOICE_TAG,))
        if nested is not None and (found := identity(nested, ("id", "invoice_id"))):
            return found
    location = response.headers.get("Location", "").rstrip("/")
    return location.rsplit("/", 1)[-1] or None if location else None


def _customer(element: Element) -> OnSiteCustomer:
    try:
        return parse_customer(element)
    except BadXml as exc:
        raise OnSiteUnavailable(f"OnSite customer unreadable: {exc}") from None


def _path_part(value: str) -> str:
    if not value or not re.fullmatch(r"[A-Za-z0-9_.:-]+", value):
        raise ValueError("identifier has characters OnSite ids never have")
    return value
