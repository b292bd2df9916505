"""What the Lightspeed client returns, and how Lightspeed's string-typed JSON becomes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from app.clients.lightspeed.errors import LightspeedUnavailable
from app.settings import BalanceSign


@dataclass(frozen=True)
class LsGiftCard:
    credit_account_id: str
    code: str
    balance: Decimal
    """Money on the card, positive, whatever sign the account renders it with."""
    name: str | None
    description: str | None
    customer_id: str | None
    archived: bool
    time_stamp: datetime

    @property
    def code_masked(self) -> bool:
        """creditaccount.md: without the scope the code reads like `**********8904`."""
        return "*" in self.code


@dataclass(frozen=True)
class LsGiftCardPayment:
    sale_payment_id: str
    sale_id: str
    credit_account_id: str
    amount: Decimal
    """Positive = redeemed from the card, negative = loaded onto it (Lightspeed's own sign)."""
    remote_reference: str | None
    """The sale's `referenceNumber`: the reference giftsync tagged its own sale with."""
    time_stamp: datetime
    """The sale's `timeStamp`: when it was completed (or last modified)."""
    completed: bool


@dataclass(frozen=True)
class LsCustomer:
    customer_id: str
    email: str | None
    """The primary contact email, else the first one; None when the customer has none."""
    first_name: str | None
    last_name: str | None


# ---- the string-typed wire format ---------------------------------------------------------


def as_list(value: Any) -> list[dict[str, Any]]:
    """Lightspeed sends a one-item collection as a bare object and an empty one not at all."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    if isinstance(value, dict):
        return [value]
    return []


def card_money(raw_balance: str, sign: BalanceSign) -> Decimal:
    """The one place the contradictory balance sign is resolved: money on the card, positive."""
    balance = _decimal(raw_balance)
    money = -balance if sign is BalanceSign.NEGATIVE else balance
    return money + Decimal(0)  # turns -0 into 0


def _decimal(raw: Any) -> Decimal:
    try:
        value = Decimal(str(raw).strip() or "0")
    except InvalidOperation as exc:
        raise LightspeedUnavailable(f"Lightspeed sent a malformed amount {raw!r}") from exc
    if not value.is_finite():
        raise LightspeedUnavailable("Lightspeed sent a non-finite amount")
    return value


def as_bool(raw: Any) -> bool:
    return str(raw).strip().lower() in {"true", "1"}


def _optional(raw: Any) -> str | None:
    text = str(raw).strip() if raw is not None else ""
    return text or None


def optional_id(raw: Any) -> str | None:
    text = _optional(raw)
    return None if text in (None, "0") else text


def parse_time(raw: Any) -> datetime:
    text = str(raw or "").strip()
    if not text:
        return datetime.fromtimestamp(0, UTC)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cursor_text(moment: datetime) -> str:
    """A `timeStamp` filter value: whole seconds with an offset, as query-parameters.md shows
    (`YYYY-MM-DDTHH:MM:SS-00:00`). Rounded down, so with `>=` the second already seen is read
    again: several changes can share one second, and the overlap is de-duplicated by id."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(microsecond=0).isoformat()


def money_text(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('0.01')):f}"


def parse_gift_card(item: Mapping[str, Any], sign: BalanceSign) -> LsGiftCard:
    return LsGiftCard(
        credit_account_id=str(item["creditAccountID"]),
        code=str(item.get("code") or ""),
        balance=card_money(str(item.get("balance", "0")), sign),
        name=_optional(item.get("name")),
        description=_optional(item.get("description")),
        customer_id=optional_id(item.get("customerID")),
        archived=as_bool(item.get("archived")),
        time_stamp=parse_time(item.get("timeStamp")),
    )


def parse_customer(item: Mapping[str, Any]) -> LsCustomer:
    contact = item.get("Contact")
    emails = contact.get("Emails") if isinstance(contact, dict) else None
    listed = as_list(emails.get("ContactEmail") if isinstance(emails, dict) else None)
    # Primary first; any other use type (secondary, work...) only when there is no primary.
    listed.sort(key=lambda entry: str(entry.get("useType", "")).strip().lower() != "primary")
    addresses = [address for entry in listed if (address := _optional(entry.get("address")))]
    return LsCustomer(
        customer_id=str(item["customerID"]),
        email=addresses[0] if addresses else None,
        first_name=_optional(item.get("firstName")),
        last_name=_optional(item.get("lastName")),
    )
