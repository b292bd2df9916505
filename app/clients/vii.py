"""Vii stored-value gift cards over their XML protocol (see UPSTREAMS.md "Vii gift cards").

Thin: one method per Vii request type, plus retries and error mapping. Money-moving requests
(`PreAuthRequest`, `Redemption`) are never retried here: once sent, a lost answer is reported
as `ViiUnknownOutcome` naming the `viiTranId`, so the caller can `Undo` it and try again with a
new id. The PIN and the full card number only ever travel in the request body.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid

# Building only: every answer is parsed with defusedxml.
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from defusedxml import ElementTree as SafeET
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from app.clients.errors import UnknownOutcome, UpstreamRejected, UpstreamUnavailable
from app.clients.transport import AiohttpTransport
from app.logging import get_logger, mask_text
from app.settings import VII_REQUIRED, Settings

log = get_logger(__name__)

UPSTREAM = "vii"
CHECK_BALANCE = "CheckBalance"
PRE_AUTH = "PreAuthRequest"
REDEMPTION = "Redemption"
PRE_AUTH_CANCELLATION = "PreAuthCancellation"
UNDO = "Undo"

# No public code list exists; these are the codes our simulator uses. Messages are matched too
# (see `_classify`) so a real Vii with other codes still maps to the right error.
CODE_INVALID_PIN = "1"
CODE_INSUFFICIENT_FUNDS = "2"
CODE_CARD_INACTIVE = "3"
CODE_UNKNOWN_CARD = "4"
CODE_AUTH_FAILED = "5"
CODE_HOLD_NOT_FOUND = "6"

# `d/m/Y h:i:s A` per the de-facto protocol; the Magento integration parses `d/m/Y H:i:s A`,
# so a 24-hour clock with a redundant AM/PM is accepted too.
_EXPIRY_FORMATS = ("%d/%m/%Y %I:%M:%S %p", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y")
_MAX_RESPONSE_BYTES = 256 * 1024
_CENT = Decimal("0.01")


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViiBalance:
    card_last4: str
    available: Decimal
    current: Decimal
    status_id: str | None
    expires_at: datetime | None
    """As Vii sent it: naive, in the Vii server's local time."""


@dataclass(frozen=True)
class ViiPreAuth:
    pre_auth_code: str
    amount: Decimal
    available: Decimal
    tran_id: str


@dataclass(frozen=True)
class ViiRedemption:
    amount: Decimal
    available: Decimal
    tran_id: str


# --- errors --------------------------------------------------------------------------------


class ViiError(UpstreamRejected):
    """Vii answered with a non-zero ResponseCode."""

    upstream = UPSTREAM


class ViiInvalidPin(ViiError):
    pass


class ViiInsufficientFunds(ViiError):
    def __init__(self, message: str, *, code: str, available: Decimal) -> None:
        super().__init__(message, code=code)
        self.available = available


class ViiCardInactive(ViiError):
    pass


class ViiUnknownCard(ViiError):
    pass


class ViiAuthFailed(ViiError):
    pass


class ViiHoldNotFound(ViiError):
    """Cancel or capture of a pre-authorisation Vii does not know (or no longer holds open)."""


class ViiUnavailable(UpstreamUnavailable):
    upstream = UPSTREAM


class ViiUnknownOutcome(UnknownOutcome):
    """A PreAuthRequest or Redemption was sent and its answer lost; `reference` is its viiTranId."""

    upstream = UPSTREAM


_CODE_TABLE: dict[str, type[ViiError]] = {
    CODE_INVALID_PIN: ViiInvalidPin,
    CODE_INSUFFICIENT_FUNDS: ViiInsufficientFunds,
    CODE_CARD_INACTIVE: ViiCardInactive,
    CODE_UNKNOWN_CARD: ViiUnknownCard,
    CODE_AUTH_FAILED: ViiAuthFailed,
    CODE_HOLD_NOT_FOUND: ViiHoldNotFound,
}

# Checked in order: the more specific words first ("Invalid PIN" must not read as an invalid
# card, "Pre-auth not found" not as an unknown card, "Preauth exceeds balance" as funds).
_KEYWORDS: tuple[tuple[re.Pattern[str], type[ViiError]], ...] = (
    (
        re.compile(r"insufficient|\bfunds?\b|exceeds?.*balance|balance.*exceed"),
        ViiInsufficientFunds,
    ),
    (re.compile(r"\bpin\b"), ViiInvalidPin),
    (re.compile(r"pre-?auth"), ViiHoldNotFound),
    (re.compile(r"inactive|not active|blocked|expired|suspended|cancelled card"), ViiCardInactive),
    (re.compile(r"not found|invalid card|unknown card|no such card"), ViiUnknownCard),
    (re.compile(r"auth|login|credential|\buser"), ViiAuthFailed),
    (re.compile(r"balance"), ViiInsufficientFunds),
)


def _classify(code: str, message: str) -> type[ViiError] | None:
    """The message wins over the code: codes differ between Vii set-ups, words do not."""
    lowered = message.lower()
    for pattern, error in _KEYWORDS:
        if pattern.search(lowered):
            return error
    return _CODE_TABLE.get(code)


class _Garbage(Exception):
    """The answer is not a Vii `<Response>` we can read."""


# --- the client ----------------------------------------------------------------------------


class ViiClient:
    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        store_id: str,
        *,
        timeout: float = 8.0,
        transport: httpx.AsyncBaseTransport | None = None,
        attempts: int = 3,
        backoff: float = 0.2,
    ) -> None:
        self._base_url = base_url
        self._username = username
        self._password = SecretStr(password)
        self._store_id = store_id
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._http = httpx.AsyncClient(
            transport=transport or AiohttpTransport(),
            timeout=httpx.Timeout(timeout),
            # Exactly what the de-facto integration sends; the XML declaration names utf-8.
            headers={"Content-Type": "text/xml", "Accept": "text/xml"},
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> ViiClient:
        missing = settings.missing(*VII_REQUIRED)
        if missing:
            raise ValueError(f"Vii is not configured: {', '.join(missing)} missing")
        assert settings.vii_base_url is not None
        assert settings.vii_username is not None
        assert settings.vii_password is not None
        assert settings.vii_store_id is not None
        return cls(
            settings.vii_base_url,
            settings.vii_username,
            settings.vii_password.get_secret_value(),
            settings.vii_store_id,
            transport=transport,
        )

    def __repr__(self) -> str:
        return (
            f"ViiClient(base_url={self._base_url!r}, username={self._username!r}, "
            f"store_id={self._store_id!r})"
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    @staticmethod
    def new_tran_id() -> str:
        return uuid.uuid4().hex

    # --- operations ------------------------------------------------------------------------

    async def check_balance(self, card_number: str, pin: str) -> ViiBalance:
        fields = await self._safe(
            CHECK_BALANCE, [("CardNumber", card_number), ("PIN", pin)], card_number, pin
        )
        try:
            available = _money(fields, "AvailableBalance", fallback="CurrentBalance")
            current = _money(fields, "CurrentBalance", fallback="AvailableBalance")
        except _Garbage as exc:
            raise ViiUnavailable(
                f"Vii {CHECK_BALANCE} for card ••••{_last4(card_number)}: {exc}"
            ) from None
        return ViiBalance(
            card_last4=_last4(card_number),
            available=available,
            current=current,
            status_id=fields.get("CardStatusId") or None,
            expires_at=_expiry(fields.get("ExpiryDate")),
        )

    async def pre_auth(
        self,
        card_number: str,
        pin: str,
        amount: Decimal,
        external_reference: str,
        *,
        tran_id: str | None = None,
    ) -> ViiPreAuth:
        tran_id = tran_id or self.new_tran_id()
        fields = await self._unsafe(
            PRE_AUTH,
            [
                ("CardNumber", card_number),
                ("PIN", pin),
                ("Amount", _format_amount(amount)),
                ("ExternalReference", external_reference),
            ],
            card_number,
            pin,
            tran_id,
        )
        code = fields.get("PreAuthCode", "").strip()
        # Without the code the hold can be neither captured nor cancelled: the caller undoes.
        available = _available_after_write(fields, PRE_AUTH, card_number, tran_id)
        if not code:
            raise ViiUnknownOutcome(
                f"Vii {PRE_AUTH} for card ••••{_last4(card_number)} (viiTranId {tran_id}) "
                "succeeded without a PreAuthCode",
                reference=tran_id,
            )
        # No partial pre-authorisation exists, and integrations disagree on what `Amount`
        # means in this answer, so the hold is what was asked for.
        return ViiPreAuth(pre_auth_code=code, amount=amount, available=available, tran_id=tran_id)

    async def redeem(
        self,
        card_number: str,
        pin: str,
        amount: Decimal,
        external_reference: str,
        *,
        pre_auth_code: str | None = None,
        tran_id: str | None = None,
    ) -> ViiRedemption:
        tran_id = tran_id or self.new_tran_id()
        body: list[tuple[str, str]] = [
            ("CardNumber", card_number),
            ("PIN", pin),
            ("Amount", _format_amount(amount)),
            ("ExternalReference", external_reference),
        ]
        if pre_auth_code:
            body.append(("PreAuthCode", pre_auth_code))
        fields = await self._unsafe(REDEMPTION, body, card_number, pin, tran_id)
        available = _available_after_write(fields, REDEMPTION, card_number, tran_id)
        return ViiRedemption(amount=amount, available=available, tran_id=tran_id)

    async def cancel_pre_auth(
        self, card_number: str, pre_auth_code: str, external_reference: str
    ) -> None:
        await self._safe(
            PRE_AUTH_CANCELLATION,
            [
                ("CardNumber", card_number),
                ("ExternalReference", external_reference),
                ("PreAuthCode", pre_auth_code),
            ],
            card_number,
            None,
        )

    async def undo(self, card_number: str, tran_id_to_undo: str) -> bool:
        """True when Vii reversed the transaction, False when it had nothing to reverse."""
        fields = await self._safe(
            UNDO,
            [("CardNumber", card_number), ("viiTranIdToUndo", tran_id_to_undo)],
            card_number,
            None,
        )
        return not _nothing_to_reverse(fields.get("ResponseMessage", ""))

    # --- plumbing --------------------------------------------------------------------------

    async def _safe(
        self,
        request_type: str,
        body: Sequence[tuple[str, str]],
        card_number: str,
        pin: str | None,
    ) -> dict[str, str]:
        """Requests that change nothing or are idempotent: retried with backoff and jitter."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            # Full jitter, so many callers retrying at once do not arrive together.
            wait=wait_random_exponential(multiplier=self._backoff, max=self._backoff * 8),
            retry=retry_if_exception_type(ViiUnavailable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                # A fresh viiTranId per attempt: each attempt is its own request to Vii.
                return await self._exchange(
                    request_type, body, card_number, pin, self.new_tran_id(), unsafe=False
                )
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _unsafe(
        self,
        request_type: str,
        body: Sequence[tuple[str, str]],
        card_number: str,
        pin: str,
        tran_id: str,
    ) -> dict[str, str]:
        return await self._exchange(request_type, body, card_number, pin, tran_id, unsafe=True)

    async def _exchange(
        self,
        request_type: str,
        body: Sequence[tuple[str, str]],
        card_number: str,
        pin: str | None,
        tran_id: str,
        *,
        unsafe: bool,
    ) -> dict[str, str]:
        last4 = _last4(card_number)
        what = f"Vii {request_type} for card ••••{last4} (viiTranId {tran_id})"
        content = self._build(request_type, tran_id, body)
        started = time.perf_counter()

        def lost(reason: str) -> Exception:
            log.warning(
                "vii_answer_lost",
                request_type=request_type,
                tran_id=tran_id,
                card_last4=last4,
                reason=reason,
                unsafe=unsafe,
            )
            if unsafe:
                return ViiUnknownOutcome(f"{what}: {reason}; outcome unknown", reference=tran_id)
            return ViiUnavailable(f"{what}: {reason}")

        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http.post(self._base_url, content=content)
        except (
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.PoolTimeout,
            httpx.UnsupportedProtocol,
        ) as exc:
            # Nothing reached Vii: safe to report as down, even for money-moving requests.
            log.warning(
                "vii_unreachable",
                request_type=request_type,
                card_last4=last4,
                error=type(exc).__name__,
            )
            raise ViiUnavailable(f"{what}: could not connect ({type(exc).__name__})") from None
        except (TimeoutError, httpx.TimeoutException):
            raise lost("timed out") from None
        except httpx.TransportError as exc:
            raise lost(f"connection failed ({type(exc).__name__})") from None

        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        status = response.status_code
        if status == 429:
            # A throttled request was refused before processing, whatever its type.
            raise ViiUnavailable(
                f"{what}: throttled (HTTP 429)", retry_after=_retry_after(response)
            )
        if status >= 500:
            if unsafe:
                raise lost(f"HTTP {status}")
            raise ViiUnavailable(f"{what}: HTTP {status}", retry_after=_retry_after(response))
        try:
            fields = _parse(response.content)
        except _Garbage as exc:
            if status in (401, 403):
                raise ViiAuthFailed(f"{what}: HTTP {status}", code=str(status)) from None
            if unsafe and 200 <= status < 300:
                raise lost(f"unreadable answer ({exc})") from None
            raise ViiUnavailable(f"{what}: unreadable answer (HTTP {status}, {exc})") from None

        code = fields["ResponseCode"].strip()
        message = _scrub(fields.get("ResponseMessage", ""), card_number, pin)
        log.info(
            "vii_response",
            request_type=request_type,
            tran_id=tran_id,
            card_last4=last4,
            response_code=code,
            response_message=message,
            http_status=status,
            elapsed_ms=elapsed_ms,
        )
        if _is_success(code):
            return fields
        if request_type == UNDO and _nothing_to_reverse(message):
            return fields
        error = _classify(code, message)
        text = f"{what} declined: {message or 'no message'} (code {code})"
        if error is ViiInsufficientFunds or (error is None and _over_balance(fields)):
            raise ViiInsufficientFunds(
                text, code=code, available=_money(fields, "AvailableBalance", default=Decimal(0))
            )
        raise (error or ViiError)(text, code=code)

    def _build(self, request_type: str, tran_id: str, body: Sequence[tuple[str, str]]) -> bytes:
        root = ET.Element("Request")
        header = (
            ("RequestType", request_type),
            ("viiUserName", self._username),
            ("viiPassword", self._password.get_secret_value()),
            ("viiTranId", tran_id),
            ("StoreId", self._store_id),
        )
        for name, value in (*header, *body):
            ET.SubElement(root, name).text = value
        content: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        return content


# --- helpers -------------------------------------------------------------------------------


def _parse(content: bytes) -> dict[str, str]:
    """The `<Response>` children as name -> text; namespaces and wrapping elements ignored."""
    if len(content) > _MAX_RESPONSE_BYTES:
        raise _Garbage("answer too large")
    if not content.strip():
        raise _Garbage("empty answer")
    try:
        root: Any = SafeET.fromstring(content, forbid_dtd=True)
    except (ET.ParseError, ValueError) as exc:
        # defusedxml raises ValueError subclasses for DTDs and entities (entity bombs included).
        raise _Garbage(type(exc).__name__) from None
    response = root if _local(root.tag) == "Response" else None
    if response is None:
        response = next((el for el in root.iter() if _local(el.tag) == "Response"), None)
    if response is None:
        raise _Garbage("no <Response> element")
    fields = {_local(child.tag): (child.text or "").strip() for child in response}
    if not fields.get("ResponseCode"):
        raise _Garbage("no ResponseCode")
    return fields


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1]


def _is_success(code: str) -> bool:
    return code.isdigit() and int(code) == 0


def _nothing_to_reverse(message: str) -> bool:
    return "no transaction" in message.lower()


def _over_balance(fields: dict[str, str]) -> bool:
    """What the Magento integration relies on: no hold given and Amount above the balance."""
    if fields.get("PreAuthCode"):
        return False
    amount = _decimal(fields.get("Amount"))
    available = _decimal(fields.get("AvailableBalance"))
    return amount is not None and available is not None and amount > available


def _decimal(raw: str | None) -> Decimal | None:
    if raw is None:
        return None
    text = re.sub(r"[\s,$]", "", raw)
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _money(
    fields: dict[str, str],
    name: str,
    *,
    fallback: str | None = None,
    default: Decimal | None = None,
) -> Decimal:
    """`name` (else `fallback`) as Decimal; `default` when absent, or _Garbage without one."""
    value = _decimal(fields.get(name))
    if value is None and fallback is not None:
        value = _decimal(fields.get(fallback))
    if value is not None:
        return value
    if default is None:
        raise _Garbage(f"no readable {name}")
    return default


def _available_after_write(
    fields: dict[str, str], request_type: str, card_number: str, tran_id: str
) -> Decimal:
    """An approved write whose answer cannot be read is handled like a lost answer."""
    try:
        return _money(fields, "AvailableBalance", fallback="CurrentBalance")
    except _Garbage as exc:
        raise ViiUnknownOutcome(
            f"Vii {request_type} for card ••••{_last4(card_number)} (viiTranId {tran_id}): {exc}",
            reference=tran_id,
        ) from None


def _expiry(raw: str | None) -> datetime | None:
    if not raw:
        return None
    text = raw.strip()
    for fmt in _EXPIRY_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    # A 24-hour clock followed by a redundant AM/PM ("13:00:00 PM").
    stripped = re.sub(r"\s*[AaPp][Mm]$", "", text)
    try:
        return datetime.strptime(stripped, "%d/%m/%Y %H:%M:%S")
    except ValueError:
        return None


def _format_amount(amount: Decimal) -> str:
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError("amount must be a finite Decimal")
    if amount <= 0:
        raise ValueError("amount must be positive")
    if amount != amount.quantize(_CENT):
        raise ValueError("amount must have at most 2 decimal places")
    return f"{amount.quantize(_CENT):f}"


def _last4(card_number: str) -> str:
    digits = re.sub(r"\D", "", card_number)
    return digits[-4:] if digits else "????"


def _scrub(message: str, card_number: str, pin: str | None) -> str:
    """Vii may echo what it was sent; none of it may reach a log or an exception."""
    text = message[:300]
    if card_number:
        text = text.replace(card_number, f"••••{_last4(card_number)}")
    if pin:
        text = re.sub(rf"(?<!\d){re.escape(pin)}(?!\d)", "[redacted]", text)
    return mask_text(text)


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None
