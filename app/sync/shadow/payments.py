"""Gift card payments on Shopify orders, from webhook payloads (REST) or the GraphQL order.

A payment is a charge only when it succeeded: a failed or pending gift card sale never moved
money, so nothing may be captured for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from app.clients.shopify import OrderTransaction

GIFT_CARD_GATEWAY = "gift_card"
CHARGE_KINDS = frozenset({"sale", "capture"})


@dataclass(frozen=True)
class GiftCardPayment:
    """One gift card transaction on an order, normalised from REST payloads or GraphQL."""

    order_id: str
    txn_id: str
    kind: str
    status: str
    amount: Decimal
    gift_card_id: str | None
    """As a `gid://shopify/GiftCard/{id}`, the form stored on shadow cards."""
    last_characters: str | None

    @property
    def subject(self) -> str:
        return f"order:{self.order_id}:txn:{self.txn_id}"

    @property
    def is_charge(self) -> bool:
        return self.kind in CHARGE_KINDS and self.status == "success"

    @property
    def is_refund(self) -> bool:
        return self.kind == "refund" and self.status == "success"


def legacy_id(value: object) -> str:
    """`gid://shopify/Order/12` and `12` name the same thing; keys use the bare number."""
    return str(value).rsplit("/", 1)[-1]


def _card_gid(value: object) -> str | None:
    if value in (None, ""):
        return None
    return f"gid://shopify/GiftCard/{legacy_id(value)}"


def _amount(value: object) -> Decimal | None:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount > 0 else None


def payment_from_rest(payload: dict[str, Any], order_id: object = None) -> GiftCardPayment | None:
    """A REST transaction (webhook payload) paid by gift card, or None for anything else."""
    if str(payload.get("gateway") or "") != GIFT_CARD_GATEWAY:
        return None
    amount = _amount(payload.get("amount"))
    txn_id = payload.get("id")
    order = payload.get("order_id") or order_id
    if amount is None or txn_id in (None, "") or order in (None, ""):
        return None
    receipt = payload.get("receipt")
    receipt = receipt if isinstance(receipt, dict) else {}
    last = receipt.get("gift_card_last_characters")
    return GiftCardPayment(
        order_id=legacy_id(order),
        txn_id=legacy_id(txn_id),
        kind=str(payload.get("kind") or "").lower(),
        status=str(payload.get("status") or "").lower(),
        amount=amount,
        gift_card_id=_card_gid(receipt.get("gift_card_id")),
        last_characters=str(last).lower() if last else None,
    )


def payment_from_order_transaction(order_id: str, txn: OrderTransaction) -> GiftCardPayment | None:
    """An `OrderTransaction` from the Shopify client's `get_order`, or None if not a gift card."""
    if txn.gateway != GIFT_CARD_GATEWAY or txn.amount <= 0:
        return None
    return GiftCardPayment(
        order_id=legacy_id(order_id),
        txn_id=legacy_id(txn.id),
        kind=txn.kind.lower(),
        status=txn.status.lower(),
        amount=txn.amount,
        gift_card_id=_card_gid(txn.gift_card_id),
        last_characters=(
            txn.gift_card_last_characters.lower() if txn.gift_card_last_characters else None
        ),
    )
