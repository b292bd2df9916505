"""Vii's XML protocol (UPSTREAMS.md "Vii gift cards"): building requests, reading answers.

The de-facto protocol is what a published Magento integration sends and reads; it is kept in
this package alone.
"""

from __future__ import annotations

import re

# Building only: every answer is parsed with defusedxml.
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from defusedxml import ElementTree as SafeET

from app.logging import mask_text

CHECK_BALANCE = "CheckBalance"
PRE_AUTH = "PreAuthRequest"
REDEMPTION = "Redemption"
PRE_AUTH_CANCELLATION = "PreAuthCancellation"
UNDO = "Undo"

# `d/m/Y h:i:s A` per the de-facto protocol; the Magento integration parses `d/m/Y H:i:s A`,
# so a 24-hour clock with a redundant AM/PM is accepted too.
_EXPIRY_FORMATS = ("%d/%m/%Y %I:%M:%S %p", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y")
_MAX_RESPONSE_BYTES = 256 * 1024
_CENT = Decimal("0.01")


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


class Garbage(Exception):
    """The answer is not a Vii `<Response>` we can read."""


def build_request(header: Sequence[tuple[str, str]], body: Sequence[tuple[str, str]]) -> bytes:
    root = ET.Element("Request")
    for name, value in (*header, *body):
        ET.SubElement(root, name).text = value
    content: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return content


def parse_response(content: bytes) -> dict[str, str]:
    """The `<Response>` children as name -> text; namespaces and wrapping elements ignored."""
    if len(content) > _MAX_RESPONSE_BYTES:
        raise Garbage("answer too large")
    if not content.strip():
        raise Garbage("empty answer")
    try:
        root: Any = SafeET.fromstring(content, forbid_dtd=True)
    except (ET.ParseError, ValueError) as exc:
        # defusedxml raises ValueError subclasses for DTDs and entities (entity bombs included).
        raise Garbage(type(exc).__name__) from None
    response = root if _local(root.tag) == "Response" else None
    if response is None:
        response = next((el for el in root.iter() if _local(el.tag) == "Response"), None)
    if response is None:
        raise Garbage("no <Response> element")
    fields = {_local(child.tag): (child.text or "").strip() for child in response}
    if not fields.get("ResponseCode"):
        raise Garbage("no ResponseCode")
    return fields


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1]


def is_success(code: str) -> bool:
    return code.isdigit() and int(code) == 0


def nothing_to_reverse(message: str) -> bool:
    return "no transaction" in message.lower()


def over_balance(fields: dict[str, str]) -> bool:
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


def money(
    fields: dict[str, str],
    name: str,
    *,
    fallback: str | None = None,
    default: Decimal | None = None,
) -> Decimal:
    """`name` (else `fallback`) as Decimal; `default` when absent, or Garbage without one.

    A balance with more than 2 decimals is cut down to whole cents: never more than Vii holds.
    """
    value = _decimal(fields.get(name))
    if value is None and fallback is not None:
        value = _decimal(fields.get(fallback))
    if value is not None:
        return value.quantize(_CENT, rounding=ROUND_DOWN)
    if default is None:
        raise Garbage(f"no readable {name}")
    return default


def expiry(raw: str | None) -> datetime | None:
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


def format_amount(amount: Decimal) -> str:
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError("amount must be a finite Decimal")
    if amount <= 0:
        raise ValueError("amount must be positive")
    if amount != amount.quantize(_CENT):
        raise ValueError("amount must have at most 2 decimal places")
    return f"{amount.quantize(_CENT):f}"


def last4(card_number: str) -> str:
    digits = re.sub(r"\D", "", card_number)
    return digits[-4:] if digits else "????"


def scrub(message: str, card_number: str, pin: str | None) -> str:
    """Vii may echo what it was sent; none of it may reach a log or an exception."""
    text = message[:300]
    if card_number:
        text = text.replace(card_number, f"••••{last4(card_number)}")
    if pin:
        text = re.sub(rf"(?<!\d){re.escape(pin)}(?!\d)", "[redacted]", text)
    return mask_text(text)
