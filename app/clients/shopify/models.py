"""What the Shopify client returns, and how Shopify's JSON becomes it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from app.clients.shopify.errors import ShopifyUnavailable

_MARKER = re.compile(r"\[giftsync:([^\]]+)\]")


@dataclass(frozen=True)
class ShopifyGiftCard:
    id: str
    last_characters: str
    balance: Decimal
    currency: str
    initial_value: Decimal
    enabled: bool
    expires_on: date | None
    deactivated_at: datetime | None
    created_at: datetime
    updated_at: datetime
    note: str | None
    customer_id: str | None
    order_id: str | None


@dataclass(frozen=True)
class CreatedGiftCard:
    card: ShopifyGiftCard
    code: str = field(repr=False)
    """The full code; Shopify returns it only at creation."""


@dataclass(frozen=True)
class GiftCardMove:
    transaction_id: str
    amount: Decimal
    """What was credited or debited, as a positive amount."""
    balance_after: Decimal | None
    """The card's balance right after the move; None when recovered after a lost answer."""


@dataclass(frozen=True)
class GiftCardTransaction:
    id: str
    amount: Decimal
    """Signed: positive for a credit, negative for a debit."""
    currency: str
    note: str | None
    processed_at: datetime | None
    idempotency_key: str | None


@dataclass(frozen=True)
class OrderTransaction:
    id: str
    kind: str
    status: str
    gateway: str
    amount: Decimal
    currency: str
    gift_card_id: str | None
    gift_card_last_characters: str | None
    parent_id: str | None


@dataclass(frozen=True)
class OrderGiftCardLine:
    line_item_id: str
    title: str
    quantity: int
    amount: Decimal
    """Value of each card bought on this line (the unit price, shop currency)."""


@dataclass(frozen=True)
class ShopifyOrder:
    id: str
    name: str
    transactions: list[OrderTransaction]
    gift_card_lines: list[OrderGiftCardLine]
    shipping_name: str | None
    customer_email: str | None


# --- helpers ------------------------------------------------------------------------------


def idempotency_note(key: str, note: str | None = None) -> str:
    """The transaction note that tags a credit/debit so a lost answer can be looked up."""
    marker = f"[giftsync:{key}]"
    return f"{note} {marker}" if note else marker


def idempotency_key_from_note(note: str | None) -> str | None:
    """The key giftsync wrote into a transaction note, or None for a move made elsewhere."""
    if not note:
        return None
    match = _MARKER.search(note)
    return match.group(1) if match else None


def masked_code(code: str) -> str:
    return f"…{code[-4:]}"


def gid(kind: str, value: str | int) -> str:
    text = str(value)
    return text if text.startswith("gid://") else f"gid://shopify/{kind}/{text}"


def decimal_text(value: Decimal) -> str:
    if not isinstance(value, Decimal):
        raise TypeError("money must be a Decimal")
    return format(value, "f")


def money(node: Any) -> tuple[Decimal, str]:
    try:
        return Decimal(str(node["amount"])), str(node["currencyCode"])
    except (KeyError, TypeError, InvalidOperation) as exc:
        raise ShopifyUnavailable("Shopify answered a malformed money value") from exc


def _datetime(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def _required_datetime(value: Any) -> datetime:
    parsed = _datetime(value)
    if parsed is None:
        raise ShopifyUnavailable("Shopify answered a card without a timestamp")
    return parsed


def _id_of(node: Any) -> str | None:
    return str(node["id"]) if isinstance(node, dict) and node.get("id") else None


def parse_gift_card(node: dict[str, Any]) -> ShopifyGiftCard:
    balance, currency = money(node["balance"])
    initial_value, _ = money(node["initialValue"])
    expires_on = node.get("expiresOn")
    return ShopifyGiftCard(
        id=str(node["id"]),
        last_characters=str(node["lastCharacters"]),
        balance=balance,
        currency=currency,
        initial_value=initial_value,
        enabled=bool(node["enabled"]),
        expires_on=date.fromisoformat(str(expires_on)) if expires_on else None,
        deactivated_at=_datetime(node.get("deactivatedAt")),
        created_at=_required_datetime(node.get("createdAt")),
        updated_at=_required_datetime(node.get("updatedAt")),
        note=node.get("note"),
        customer_id=_id_of(node.get("customer")),
        order_id=_id_of(node.get("order")),
    )


def _receipt(value: Any) -> dict[str, Any]:
    """Shopify's `receiptJson` arrives as a JSON string; some tools hand an object instead."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def parse_order_transaction(node: dict[str, Any]) -> OrderTransaction:
    amount, currency = money(node["amountSet"]["shopMoney"])
    receipt = _receipt(node.get("receiptJson"))
    card_id = receipt.get("gift_card_id")
    last_characters = receipt.get("gift_card_last_characters")
    return OrderTransaction(
        id=str(node["id"]),
        kind=str(node["kind"]),
        status=str(node["status"]),
        gateway=str(node.get("gateway") or ""),
        amount=amount,
        currency=currency,
        gift_card_id=gid("GiftCard", card_id) if card_id not in (None, "") else None,
        gift_card_last_characters=str(last_characters) if last_characters else None,
        parent_id=_id_of(node.get("parentTransaction")),
    )


def parse_order(node: dict[str, Any]) -> ShopifyOrder:
    lines: list[OrderGiftCardLine] = []
    for item in node["lineItems"]["nodes"]:
        if item.get("isGiftCard"):
            amount, _ = money(item["originalUnitPriceSet"]["shopMoney"])
            lines.append(
                OrderGiftCardLine(
                    line_item_id=str(item["id"]),
                    title=str(item["title"]),
                    quantity=int(item["quantity"]),
                    amount=amount,
                )
            )
    customer = node.get("customer") or {}
    shipping = node.get("shippingAddress") or {}
    customer_email = (customer.get("defaultEmailAddress") or {}).get("emailAddress")
    return ShopifyOrder(
        id=str(node["id"]),
        name=str(node["name"]),
        transactions=[parse_order_transaction(t) for t in node["transactions"]],
        gift_card_lines=lines,
        shipping_name=shipping.get("name"),
        customer_email=node.get("email") or customer_email,
    )


def parse_transaction(node: dict[str, Any]) -> GiftCardTransaction:
    amount, currency = money(node["amount"])
    # Debits are reported negative by Shopify, but the sign is forced from the type to be sure.
    if node.get("__typename") == "GiftCardDebitTransaction":
        amount = -abs(amount)
    elif node.get("__typename") == "GiftCardCreditTransaction":
        amount = abs(amount)
    return GiftCardTransaction(
        id=str(node["id"]),
        amount=amount,
        currency=currency,
        note=node.get("note"),
        processed_at=_datetime(node.get("processedAt")),
        idempotency_key=idempotency_key_from_note(node.get("note")),
    )
