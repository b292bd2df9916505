"""The jobs that carry out a merge: one move, one deactivation, one notification per job.

A move the upstream refuses for good (insufficient funds after a concurrent spend, card gone)
rolls the base back by that move, so the next merge counts the spend it missed, and ends in an
overdraft finding if the money is not there.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from app.clients.errors import UpstreamRejected
from app.clients.shopify import ShopifyInsufficientFunds, ShopifyNotFound
from app.db import sync_base
from app.db.engine import transaction
from app.db.locks import lock_for_transaction
from app.db.records import add_ledger_entry
from app.logging import get_logger
from app.money import from_minor
from app.sync.omni.common import SHOPIFY
from app.sync.omni.flow import OmniSync, enqueue_sync
from app.sync.omni.sync import sync_card
from app.worker import RetryLater

log = get_logger(__name__)


async def run_sync(omni: OmniSync, payload: dict[str, Any]) -> None:
    """Job `omni.sync`: merge the card now."""
    outcome = await sync_card(omni, uuid.UUID(payload["card_id"]))
    if outcome.status == "pending":
        # Earlier moves are still landing; merge again once they have.
        raise RetryLater("moves of this card are still running", timedelta(seconds=1))


async def run_move(omni: OmniSync, payload: dict[str, Any]) -> None:
    """Job `omni.move`: apply one planned move, once; a refusal for good rolls the base back."""
    system = payload["system"]
    external_id = payload["external_id"]
    amount_minor = int(payload["amount_minor"])
    key = payload["key"]
    try:
        if system == SHOPIFY:
            await _shopify_move(omni, external_id, amount_minor, key, payload["currency"])
        else:
            await omni.pos.move(external_id, amount_minor, reference=key)
    except (ShopifyInsufficientFunds, ShopifyNotFound, UpstreamRejected) as exc:
        await _refused(omni, uuid.UUID(payload["card_id"]), system, amount_minor, key, exc)


async def _shopify_move(
    omni: OmniSync, card_id: str, amount_minor: int, key: str, currency: str
) -> None:
    # A job re-run after a crash may follow a move that landed: look before sending.
    recent = await omni.shopify.list_gift_card_transactions(card_id)
    if any(transaction.idempotency_key == key for transaction in recent):
        return
    amount = from_minor(abs(amount_minor))
    note = "giftsync: mirrored from the store"
    if amount_minor > 0:
        await omni.shopify.credit_gift_card(
            card_id, amount, currency, idempotency_key=key, note=note
        )
    else:
        await omni.shopify.debit_gift_card(
            card_id, amount, currency, idempotency_key=key, note=note
        )


async def _refused(
    omni: OmniSync,
    card_id: uuid.UUID,
    system: str,
    amount_minor: int,
    key: str,
    error: Exception,
) -> None:
    log.warning(
        "omni_move_refused",
        card_id=str(card_id),
        system=system,
        amount=amount_minor,
        error=type(error).__name__,
    )
    async with transaction(omni.sessions) as session:
        await lock_for_transaction(session, f"omni-card:{card_id}")
        if not await add_ledger_entry(
            session,
            card_id=card_id,
            system=system,
            amount_minor=-amount_minor,
            key=f"{key}:refused",
            cause="move_refused",
            detail={"error": type(error).__name__, "message": str(error)[:300]},
        ):
            return
        await sync_base.take_back(session, card_id, amount_minor)
        if system == SHOPIFY or omni.pos.live_reads:
            # Merge again on fresh reads. A POS read from a projection would repeat the
            # refused plan; its poller sees the change that caused the refusal and merges.
            await enqueue_sync(session, card_id, "move_refused")


async def run_deactivate(omni: OmniSync, payload: dict[str, Any]) -> None:
    """Job `omni.deactivate`: make one side of the card unusable."""
    system = payload["system"]
    external_id = payload["external_id"]
    if system == SHOPIFY:
        try:
            await omni.shopify.deactivate_gift_card(external_id)
        except ShopifyNotFound:
            return
    else:
        await omni.pos.deactivate(
            external_id, reference=f"deactivate:{payload['card_id']}:{system}"
        )


async def run_notify(omni: OmniSync, payload: dict[str, Any]) -> None:
    """Job `omni.notify`: Shopify emails the card to its customer."""
    await omni.shopify.send_gift_card_notification(payload["shopify_id"])
