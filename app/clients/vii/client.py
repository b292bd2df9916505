"""Vii stored-value gift cards: one method per Vii request type.

Money-moving requests (`PreAuthRequest`, `Redemption`) follow the stored-value rule: sent again
only when they were not sent; once sent, a lost answer is `ViiUnknownOutcome` naming the
`viiTranId`, so the caller can `Undo` it and try again with a new id (Vii has no look-up). The
PIN and the full card number only ever travel in the request body.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from decimal import Decimal

import httpx
from pydantic import SecretStr

from app.clients.delivery import (
    AnswerLost,
    Delivery,
    Undelivered,
    check_status,
    new_http_client,
    transmit,
)
from app.clients.vii.errors import (
    UPSTREAM,
    ViiAuthFailed,
    ViiError,
    ViiInsufficientFunds,
    ViiUnavailable,
    ViiUnknownOutcome,
    refusal_class,
)
from app.clients.vii.protocol import (
    CHECK_BALANCE,
    PRE_AUTH,
    PRE_AUTH_CANCELLATION,
    REDEMPTION,
    UNDO,
    Garbage,
    ViiBalance,
    ViiPreAuth,
    ViiRedemption,
    build_request,
    expiry,
    format_amount,
    is_success,
    last4,
    money,
    nothing_to_reverse,
    over_balance,
    parse_response,
    scrub,
)
from app.logging import get_logger
from app.settings import VII_REQUIRED, Settings

log = get_logger(__name__)


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
        self._delivery = Delivery(
            UPSTREAM, ViiUnavailable, ViiUnknownOutcome, attempts=max(1, attempts), backoff=backoff
        )
        self._http = new_http_client(
            timeout=timeout,
            transport=transport,
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
            available = money(fields, "AvailableBalance", fallback="CurrentBalance")
            current = money(fields, "CurrentBalance", fallback="AvailableBalance")
        except Garbage as exc:
            raise ViiUnavailable(
                f"Vii {CHECK_BALANCE} for card ••••{last4(card_number)}: {exc}"
            ) from None
        return ViiBalance(
            card_last4=last4(card_number),
            available=available,
            current=current,
            status_id=fields.get("CardStatusId") or None,
            expires_at=expiry(fields.get("ExpiryDate")),
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
                ("Amount", format_amount(amount)),
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
                f"Vii {PRE_AUTH} for card ••••{last4(card_number)} (viiTranId {tran_id}) "
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
            ("Amount", format_amount(amount)),
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
        return not nothing_to_reverse(fields.get("ResponseMessage", ""))

    # --- delivery --------------------------------------------------------------------------

    async def _safe(
        self,
        request_type: str,
        body: Sequence[tuple[str, str]],
        card_number: str,
        pin: str | None,
    ) -> dict[str, str]:
        """Requests that change nothing or are idempotent: sent again after any failure."""
        return await self._delivery.call(
            # A fresh viiTranId per attempt: each attempt is its own request to Vii.
            lambda: self._exchange(request_type, body, card_number, pin, self.new_tran_id()),
            what=f"Vii {request_type} for card ••••{last4(card_number)}",
        )

    async def _unsafe(
        self,
        request_type: str,
        body: Sequence[tuple[str, str]],
        card_number: str,
        pin: str,
        tran_id: str,
    ) -> dict[str, str]:
        """Money moves: sent again only when not sent, under the same viiTranId."""
        return await self._delivery.write(
            lambda: self._exchange(request_type, body, card_number, pin, tran_id),
            what=f"Vii {request_type} for card ••••{last4(card_number)} (viiTranId {tran_id})",
            reference=tran_id,
        )

    async def _exchange(
        self,
        request_type: str,
        body: Sequence[tuple[str, str]],
        card_number: str,
        pin: str | None,
        tran_id: str,
    ) -> dict[str, str]:
        """One request: its fields on success, a typed decline, or what became of it."""
        what = f"Vii {request_type} for card ••••{last4(card_number)} (viiTranId {tran_id})"
        started = time.perf_counter()
        try:
            response = await transmit(
                self._http.post(self._base_url, content=self._build(request_type, tran_id, body)),
                deadline=self._timeout,
            )
            check_status(response)
            fields = _fields(response, what)
        except Undelivered as failure:
            log.warning(
                "vii_attempt_failed",
                request_type=request_type,
                tran_id=tran_id,
                card_last4=last4(card_number),
                reason=str(failure),
            )
            raise
        code = fields["ResponseCode"].strip()
        message = scrub(fields.get("ResponseMessage", ""), card_number, pin)
        log.info(
            "vii_response",
            request_type=request_type,
            tran_id=tran_id,
            card_last4=last4(card_number),
            response_code=code,
            response_message=message,
            http_status=response.status_code,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        if is_success(code) or (request_type == UNDO and nothing_to_reverse(message)):
            return fields
        error = refusal_class(code, message)
        text = f"{what} declined: {message or 'no message'} (code {code})"
        if error is ViiInsufficientFunds or (error is None and over_balance(fields)):
            raise ViiInsufficientFunds(
                text, code=code, available=money(fields, "AvailableBalance", default=Decimal(0))
            )
        raise (error or ViiError)(text, code=code)

    def _build(self, request_type: str, tran_id: str, body: Sequence[tuple[str, str]]) -> bytes:
        header = (
            ("RequestType", request_type),
            ("viiUserName", self._username),
            ("viiPassword", self._password.get_secret_value()),
            ("viiTranId", tran_id),
            ("StoreId", self._store_id),
        )
        return build_request(header, body)


def _fields(response: httpx.Response, what: str) -> dict[str, str]:
    """The answer's fields; an unreadable 2xx may hide an applied request, so it is lost."""
    try:
        return parse_response(response.content)
    except Garbage as exc:
        status = response.status_code
        if status in (401, 403):
            raise ViiAuthFailed(f"{what}: HTTP {status}", code=str(status)) from None
        if 200 <= status < 300:
            raise AnswerLost(f"unreadable answer ({exc})") from None
        # Refused by whatever answered (a proxy's error page): Vii never took it.
        raise ViiUnavailable(f"{what}: unreadable answer (HTTP {status}, {exc})") from None


def _available_after_write(
    fields: dict[str, str], request_type: str, card_number: str, tran_id: str
) -> Decimal:
    """An approved write whose answer cannot be read is handled like a lost answer."""
    try:
        return money(fields, "AvailableBalance", fallback="CurrentBalance")
    except Garbage as exc:
        raise ViiUnknownOutcome(
            f"Vii {request_type} for card ••••{last4(card_number)} (viiTranId {tran_id}): {exc}",
            reference=tran_id,
        ) from None
