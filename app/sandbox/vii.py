"""A stateful stand-in for a Vii stored-value endpoint, speaking the XML of UPSTREAMS.md.

Cards, holds (pre-authorisations) and every processed `viiTranId` live in memory. Each request
is applied by one synchronous method, so no two requests interleave inside a balance check even
under asyncio concurrency. Response codes are this simulator's own (no public list exists):
0 ok, 1 invalid PIN, 2 insufficient funds, 3 card not active, 4 card not found,
5 authentication failed, 6 pre-auth not found, 9 malformed request.
"""

from __future__ import annotations

import asyncio
import secrets

# Building only: requests are parsed with defusedxml.
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Literal

from defusedxml import ElementTree as SafeET
from fastapi import FastAPI, Request
from fastapi.responses import Response

from app.sandbox.faults import Faults, faults_router

DEMO_USERNAME = "giftsync-sandbox"
DEMO_PASSWORD = "sandbox-vii-password"  # noqa: S105 - a demo credential for the simulator only
DEMO_STORE_ID = "SANDBOX-STORE-1"

OK = "0"
INVALID_PIN = "1"
INSUFFICIENT_FUNDS = "2"
CARD_INACTIVE = "3"
UNKNOWN_CARD = "4"
AUTH_FAILED = "5"
HOLD_NOT_FOUND = "6"
MALFORMED = "9"

REVERSED = "Ok - Transaction Reversed"
NOTHING_TO_REVERSE = "Ok - No Transaction to reverse"
STATUS_ACTIVE = "1"
STATUS_INACTIVE = "2"
_WRITES = frozenset({"PreAuthRequest", "Redemption", "PreAuthCancellation", "Undo"})
_CENT = Decimal("0.01")
GARBAGE_ANSWER = b"<html><body>502 Bad Gateway</body></html>"
"""A typical non-XML answer for `garbage_body` (a proxy error page)."""

HoldState = Literal["open", "captured", "cancelled"]


@dataclass
class _Card:
    number: str = field(repr=False)
    pin: str = field(repr=False)
    balance: Decimal
    active: bool
    expires_at: datetime


@dataclass
class _Hold:
    code: str
    card_number: str = field(repr=False)
    amount: Decimal
    state: HoldState = "open"


@dataclass
class _Processed:
    """One viiTranId: its answer (replayed as is) and the effect an Undo would reverse."""

    request_type: str
    card_number: str = field(repr=False)
    answer: bytes = field(repr=False)
    hold_code: str | None = None
    redeemed: Decimal | None = None
    reversed: bool = False


class _Declined(Exception):
    def __init__(self, code: str, message: str, **extra: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


class ViiSimulator:
    def __init__(
        self,
        faults: Faults | None = None,
        *,
        username: str = DEMO_USERNAME,
        password: str = DEMO_PASSWORD,
        store_id: str = DEMO_STORE_ID,
    ) -> None:
        self.faults = faults or Faults()
        self.username = username
        self._password = password
        self.store_id = store_id
        self.garbage_body: bytes | None = None
        """When set, every answer is replaced by these bytes (after the request is applied)."""
        self.request_count = 0
        self.capture_frees_rest = True
        """No source says whether a capture with PreAuthCode frees what it did not take. True:
        the hold closes (the rest is free again). False: the rest stays held until cancelled."""
        self.undo_restores_hold = False
        """UPSTREAMS (Vii: `Undo` "reverses a transaction", from the Magento module) does not
        say where an Undo of a capture (a Redemption with PreAuthCode) puts the money. False:
        back on the card, free to spend (the harsher reading). True: back into the hold it was
        taken from, which opens again unless it was cancelled since."""
        self.barrier: asyncio.Event | None = None
        """When set, requests for `barrier_cards` (all, if empty) wait here, counted in
        `waiting`, until a test releases them: concurrency without timing."""
        self.barrier_cards: set[str] = set()
        self.waiting = 0
        self._cards: dict[str, _Card] = {}
        self._holds: dict[str, _Hold] = {}
        self._processed: dict[str, _Processed] = {}
        self.app = self._build_app()

    def __repr__(self) -> str:
        return f"ViiSimulator(cards={len(self._cards)}, holds={len(self._holds)})"

    # --- helpers for tests and the sandbox ---------------------------------------------------

    def add_card(
        self,
        number: str,
        pin: str,
        balance: Decimal,
        active: bool = True,
        *,
        expires_at: datetime | None = None,
    ) -> None:
        self._cards[number] = _Card(
            number=number,
            pin=pin,
            balance=Decimal(balance),
            active=active,
            expires_at=expires_at or datetime.now().replace(microsecond=0) + timedelta(days=1095),
        )

    def spend(self, number: str, amount: Decimal) -> Decimal:
        """Spending elsewhere (another shop's till): only what is not held. Returns the balance."""
        card = self._cards[number]
        if amount > self._available(card):
            raise ValueError("spend exceeds the available balance")
        card.balance -= amount
        return card.balance

    def balance(self, number: str) -> Decimal:
        return self._cards[number].balance

    def available(self, number: str) -> Decimal:
        return self._available(self._cards[number])

    def open_holds(self, number: str) -> dict[str, Decimal]:
        """PreAuthCode -> amount of every open hold on the card."""
        return {
            hold.code: hold.amount
            for hold in self._holds.values()
            if hold.card_number == number and hold.state == "open"
        }

    def hold_state(self, pre_auth_code: str) -> HoldState:
        return self._holds[pre_auth_code].state

    def deactivate(self, number: str) -> None:
        self._cards[number].active = False

    def activate(self, number: str) -> None:
        self._cards[number].active = True

    def seed_demo(self) -> list[str]:
        demo = (
            ("6280001234567890", "1234", Decimal("50.00")),
            ("6280002345678901", "2345", Decimal("120.00")),
            ("6280003456789012", "3456", Decimal("500.00")),
        )
        lines = [f"Vii simulator: user {self.username}, store {self.store_id} (demo cards)"]
        for number, pin, balance in demo:
            if number not in self._cards:
                self.add_card(number, pin, balance)
            lines.append(f"  Vii card {number} PIN {pin} balance {balance}")
        return lines

    # --- HTTP ----------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Vii simulator", openapi_url=None, docs_url=None, redoc_url=None)
        app.include_router(faults_router(self.faults))

        @app.post("/{path:path}")
        async def endpoint(request: Request, path: str) -> Response:
            return await self._handle(await request.body())

        return app

    async def _handle(self, body: bytes) -> Response:
        self.request_count += 1
        if self.barrier is not None and self._held_back(body):
            self.waiting += 1
            try:
                await self.barrier.wait()
            finally:
                self.waiting -= 1
        if self.faults.force_throttle:
            return Response("Too many requests", status_code=429, headers={"Retry-After": "1"})
        await self.faults.delay()
        if self.faults.draw_error():
            return Response("Service unavailable", status_code=503)
        fields = _parse(body)
        if fields is None:
            return _xml(_answer(MALFORMED, "Malformed request"), status_code=400)
        # Synchronous from here to the answer: one request's check and change cannot interleave.
        answer = self._apply(fields)
        if fields.get("RequestType") in _WRITES and self.faults.draw_lost_answer():
            await self.faults.hang()
        if self.garbage_body is not None:
            return Response(self.garbage_body, media_type="text/xml")
        return _xml(answer)

    def _held_back(self, body: bytes) -> bool:
        if not self.barrier_cards:
            return True
        fields = _parse(body) or {}
        return fields.get("CardNumber") in self.barrier_cards

    # --- Vii semantics -------------------------------------------------------------------------

    def _apply(self, fields: dict[str, str]) -> bytes:
        request_type = fields.get("RequestType", "")
        tran_id = fields.get("viiTranId", "")
        if (
            fields.get("viiUserName") != self.username
            or fields.get("viiPassword") != self._password
            or fields.get("StoreId") != self.store_id
        ):
            return _answer(AUTH_FAILED, "Authentication failed: invalid user credentials")
        if not tran_id:
            return _answer(MALFORMED, "Missing viiTranId")
        seen = self._processed.get(tran_id)
        if seen is not None:
            return seen.answer  # a replay is answered again, never applied again
        card_number = fields.get("CardNumber", "")
        record = _Processed(request_type=request_type, card_number=card_number, answer=b"")
        handlers = {
            "CheckBalance": self._check_balance,
            "PreAuthRequest": self._pre_auth,
            "Redemption": self._redeem,
            "PreAuthCancellation": self._cancel,
            "Undo": self._undo,
        }
        handler = handlers.get(request_type)
        try:
            if handler is None:
                raise _Declined(MALFORMED, "Unknown RequestType")
            answer = handler(fields, record)
        except _Declined as declined:
            card = self._cards.get(card_number)
            extra = self._card_fields(card) if card is not None else {}
            extra.update(declined.extra)
            answer = _answer(declined.code, declined.message, **extra)
        record.answer = answer
        self._processed[tran_id] = record
        return answer

    def _check_balance(self, fields: dict[str, str], _record: _Processed) -> bytes:
        card = self._card(fields, pin=True)
        return _answer(OK, "Approved", **self._card_fields(card))

    def _pre_auth(self, fields: dict[str, str], record: _Processed) -> bytes:
        card = self._card(fields, pin=True, usable=True)
        amount = _amount(fields)
        available = self._available(card)
        if amount > available:
            raise _Declined(INSUFFICIENT_FUNDS, "Insufficient funds", Amount=_money(amount))
        code = self._new_hold_code()
        self._holds[code] = _Hold(code=code, card_number=card.number, amount=amount)
        record.hold_code = code
        return _answer(
            OK, "Approved", **self._card_fields(card), Amount=_money(amount), PreAuthCode=code
        )

    def _redeem(self, fields: dict[str, str], record: _Processed) -> bytes:
        card = self._card(fields, pin=True, usable=True)
        amount = _amount(fields)
        hold_code = fields.get("PreAuthCode", "")
        if hold_code:
            hold = self._holds.get(hold_code)
            if hold is None or hold.card_number != card.number or hold.state != "open":
                raise _Declined(HOLD_NOT_FOUND, "Pre-auth not found or no longer open")
            if amount > hold.amount:
                raise _Declined(
                    INSUFFICIENT_FUNDS,
                    "Insufficient funds: amount exceeds the pre-authorised amount",
                    Amount=_money(amount),
                )
            if self.capture_frees_rest or amount == hold.amount:
                hold.state = "captured"
            else:
                hold.amount -= amount
        elif amount > self._available(card):
            raise _Declined(INSUFFICIENT_FUNDS, "Insufficient funds", Amount=_money(amount))
        card.balance -= amount
        record.redeemed = amount
        record.hold_code = hold_code or None
        extra = {"PreAuthCode": hold_code} if hold_code else {}
        return _answer(OK, "Approved", **self._card_fields(card), Amount=_money(amount), **extra)

    def _cancel(self, fields: dict[str, str], _record: _Processed) -> bytes:
        card = self._card(fields)
        hold = self._holds.get(fields.get("PreAuthCode", ""))
        if hold is None or hold.card_number != card.number:
            raise _Declined(HOLD_NOT_FOUND, "Pre-auth not found")
        if hold.state == "captured":
            raise _Declined(HOLD_NOT_FOUND, "Pre-auth already redeemed")
        # Cancelling a cancelled hold succeeds: a retried cancellation must not look like an error.
        hold.state = "cancelled"
        return _answer(OK, "Pre-auth cancelled", **self._card_fields(card), PreAuthCode=hold.code)

    def _undo(self, fields: dict[str, str], _record: _Processed) -> bytes:
        card = self._card(fields)
        target = self._processed.get(fields.get("viiTranIdToUndo", ""))
        if target is None or target.reversed or target.card_number != card.number:
            return _answer(OK, NOTHING_TO_REVERSE, **self._card_fields(card))
        if target.request_type == "Redemption" and target.redeemed is not None:
            card.balance += target.redeemed
            if self.undo_restores_hold and target.hold_code is not None:
                self._restore_hold(target.hold_code, target.redeemed)
        elif target.request_type == "PreAuthRequest" and target.hold_code is not None:
            hold = self._holds[target.hold_code]
            if hold.state != "open":
                return _answer(OK, NOTHING_TO_REVERSE, **self._card_fields(card))
            hold.state = "cancelled"
        else:
            return _answer(OK, NOTHING_TO_REVERSE, **self._card_fields(card))
        target.reversed = True
        return _answer(OK, REVERSED, **self._card_fields(card))

    def _restore_hold(self, code: str, amount: Decimal) -> None:
        hold = self._holds[code]
        if hold.state == "cancelled":
            return
        hold.amount = amount if hold.state == "captured" else hold.amount + amount
        hold.state = "open"

    def _card(self, fields: dict[str, str], *, pin: bool = False, usable: bool = False) -> _Card:
        card = self._cards.get(fields.get("CardNumber", ""))
        if card is None:
            raise _Declined(UNKNOWN_CARD, "Card not found")
        if pin and not secrets.compare_digest(fields.get("PIN", ""), card.pin):
            raise _Declined(INVALID_PIN, "Invalid PIN")
        if usable or pin:
            if not card.active:
                raise _Declined(CARD_INACTIVE, "Card is not active")
            if card.expires_at <= datetime.now():
                raise _Declined(CARD_INACTIVE, "Card expired")
        return card

    def _available(self, card: _Card) -> Decimal:
        held = sum(
            (
                hold.amount
                for hold in self._holds.values()
                if hold.card_number == card.number and hold.state == "open"
            ),
            Decimal(0),
        )
        return card.balance - held

    def _card_fields(self, card: _Card) -> dict[str, str]:
        return {
            "CardNumber": card.number,
            "AvailableBalance": _money(self._available(card)),
            "CurrentBalance": _money(card.balance),
            "ExpiryDate": card.expires_at.strftime("%d/%m/%Y %I:%M:%S %p"),
            "CardStatusId": STATUS_ACTIVE if card.active else STATUS_INACTIVE,
        }

    def _new_hold_code(self) -> str:
        while True:
            code = f"{secrets.randbelow(10**10):010d}"
            if code not in self._holds:
                return code


def _parse(body: bytes) -> dict[str, str] | None:
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (ET.ParseError, ValueError):
        return None
    if root.tag != "Request":
        return None
    return {child.tag: (child.text or "").strip() for child in root}


def _amount(fields: dict[str, str]) -> Decimal:
    try:
        amount = Decimal(fields.get("Amount", ""))
    except InvalidOperation:
        raise _Declined(MALFORMED, "Invalid Amount") from None
    if not amount.is_finite() or amount <= 0 or amount != amount.quantize(_CENT):
        raise _Declined(MALFORMED, "Invalid Amount")
    return amount


def _money(value: Decimal) -> str:
    return f"{value.quantize(_CENT):f}"


def _answer(code: str, message: str, **extra: str) -> bytes:
    root = ET.Element("Response")
    ET.SubElement(root, "ResponseCode").text = code
    ET.SubElement(root, "ResponseMessage").text = message
    for name, value in extra.items():
        ET.SubElement(root, name).text = value
    content: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return content


def _xml(content: bytes, status_code: int = 200) -> Response:
    return Response(content, status_code=status_code, media_type="text/xml")
