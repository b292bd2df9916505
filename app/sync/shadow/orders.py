"""What Shopify's order webhooks mean for shadow cards.

A successful gift card charge on an order closes the shadow card it was paid with (the close
then captures what the card really spent, whichever orders spent it, so one code on several
orders and duplicated or reordered deliveries need nothing special). A cancelled order closes
the card too. A refund is noted for the close (or, after it, for staff).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

import app.sync.shadow.lifecycle as lifecycle
from app.db import shadow_cards as rows
from app.logging import get_logger
from app.sync.inbox import Delivery
from app.sync.shadow.deps import ShadowDeps
from app.sync.shadow.payments import (
    GiftCardPayment,
    legacy_id,
    payment_from_order_transaction,
    payment_from_rest,
)
from app.sync.shadow.refunds import note_refund

log = get_logger(__name__)


async def on_order_paid(deps: ShadowDeps, payload: dict[str, Any], delivery: Delivery) -> None:
    """`orders/paid` carries no transactions: read them from Shopify."""
    await _close_paid_with(deps, await _order_payments(deps, payload), "captured")


async def on_order_cancelled(deps: ShadowDeps, payload: dict[str, Any], delivery: Delivery) -> None:
    """Shopify gives a cancelled order's gift card money back to the card; closing nets it."""
    await _close_paid_with(deps, await _order_payments(deps, payload), "released")


async def on_transaction(deps: ShadowDeps, payload: dict[str, Any], delivery: Delivery) -> None:
    payment = payment_from_rest(payload)
    if payment is None:
        return
    if payment.is_charge:
        await _close_paid_with(deps, [payment], "captured")
    elif payment.is_refund:
        await _note_refunds(deps, [payment])


async def on_refund(deps: ShadowDeps, payload: dict[str, Any], delivery: Delivery) -> None:
    order_id = payload.get("order_id")
    payments = [
        payment_from_rest(txn, order_id)
        for txn in payload.get("transactions") or []
        if isinstance(txn, dict)
    ]
    await _note_refunds(deps, [p for p in payments if p is not None and p.is_refund])


async def _close_paid_with(
    deps: ShadowDeps, payments: Iterable[GiftCardPayment], reason: str
) -> None:
    async with deps.sessions() as session, session.begin():
        for payment in payments:
            if not payment.is_charge:
                continue
            row = await _match(deps, session, payment)
            if row is not None and await lifecycle.request_close(session, row.id, reason):
                log.info(
                    "shadow_card_closing",
                    shadow_id=str(row.id),
                    subject=payment.subject,
                    reason=reason,
                )


async def _note_refunds(deps: ShadowDeps, payments: Iterable[GiftCardPayment]) -> None:
    async with deps.sessions() as session, session.begin():
        for payment in payments:
            row = await _match(deps, session, payment)
            if row is not None:
                await note_refund(session, await rows.get(session, row.id, lock=True), payment)


async def _order_payments(deps: ShadowDeps, payload: dict[str, Any]) -> list[GiftCardPayment]:
    order_id = payload.get("id") or payload.get("admin_graphql_api_id")
    if order_id in (None, ""):
        return []
    order = await deps.shopify.get_order(legacy_id(order_id))
    if order is None:
        log.warning("shadow_order_not_found", order_id=legacy_id(order_id))
        return []
    payments = (payment_from_order_transaction(legacy_id(order_id), t) for t in order.transactions)
    return [p for p in payments if p is not None]


async def _match(deps: ShadowDeps, session: AsyncSession, payment: GiftCardPayment) -> Any:
    """The shadow card paid with: by Shopify card id, else (no id) by its last characters."""
    if payment.gift_card_id is not None:
        return await rows.by_shopify_id(session, payment.gift_card_id)
    if not payment.last_characters:
        return None
    candidates = await rows.applied_by_code_last4(session, payment.last_characters[-4:])
    if len(candidates) != 1:
        if candidates:
            log.warning("shadow_match_ambiguous", subject=payment.subject, matches=len(candidates))
        return None
    # A shadow code ends in the Vii card's last 4, so an ordinary card can share them: only
    # when Shopify knows no other card ending so is the payment surely this one.
    same_ending = await deps.shopify.find_gift_cards_by_last_characters(
        payment.last_characters[-4:]
    )
    if [card.id for card in same_ending] != [candidates[0].shopify_gift_card_id]:
        log.warning("shadow_match_ambiguous", subject=payment.subject, matches=len(same_ending))
        return None
    return candidates[0]
