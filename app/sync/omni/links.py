"""A card new to giftsync crosses to the other side once, and both sides are linked.

Sold in store (`import_pos_card`): the Shopify card is created with the POS serial as its code.
Sold online (`export_shopify_card`): the POS card is created with a serial derived from the
Shopify card id. Either way the identity is deterministic, so a create retried after a crash
finds the card it made, and linking runs under a lock per upstream card, so two pollers (or a
poller and the backfill) never link one card twice.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.clients.shopify import ShopifyCodeTaken, ShopifyGiftCard, ShopifyOrder
from app.db import card_links, gift_cards, jobs, sync_base
from app.db.engine import transaction
from app.db.findings import open_finding
from app.db.locks import lock_for_transaction
from app.db.records import add_ledger_entry
from app.logging import get_logger
from app.money import from_minor, to_minor
from app.sync.omni.common import (
    NOTIFY_JOB,
    SHOPIFY,
    SHOPIFY_CODE,
    LinkOutcome,
    link_note,
    made_by_giftsync,
    shopify_state,
)
from app.sync.omni.flow import OmniSync, enqueue_sync
from app.sync.pos import PosCard

log = get_logger(__name__)


async def import_pos_card(
    omni: OmniSync, card: PosCard, *, run_id: uuid.UUID | None = None
) -> LinkOutcome:
    """Sold in store: create the Shopify card with the same code and the POS balance.

    `run_id`: the backfill run offering the card, so the findings it opens show on the run.
    """
    system = omni.pos.system
    if not SHOPIFY_CODE.fullmatch(card.serial):
        await _unusable_serial(omni, card, run_id)
        return LinkOutcome("skipped", reason="unusable_serial")
    if card.status != "enabled":
        return LinkOutcome("skipped", reason="inactive")
    if card.balance_minor <= 0:
        # Shopify cannot create an empty card; the load that follows a POS sale re-offers it.
        return LinkOutcome("skipped", reason="empty")
    async with transaction(omni.sessions) as session:
        await lock_for_transaction(session, f"omni-link:{system}:{card.external_id}")
        existing = await card_links.card_of(session, system, card.external_id)
        if existing is not None:
            return LinkOutcome("already_linked", card_id=existing)
        if omni.serial_made_here(card.serial):
            # Sold online, and its export crashed before linking: the export's retry
            # links it; importing it would make a second Shopify card for the same money.
            return LinkOutcome("skipped", reason="made_by_giftsync")
        outcome = await _shopify_twin(omni, session, card, run_id)
    if outcome.status == "moved":
        log.info("omni_imported", system=system, card_id=str(outcome.card_id))
    return outcome


async def _unusable_serial(omni: OmniSync, card: PosCard, run_id: uuid.UUID | None) -> None:
    system = omni.pos.system
    async with transaction(omni.sessions) as session:
        await open_finding(
            session,
            finding_type="unusable_serial",
            subject=f"{system}:{card.external_id}",
            card_id=None,
            evidence={
                "system": system,
                "external_id": card.external_id,
                "serial_last4": card.serial[-4:],
                "serial_length": len(card.serial),
                "rule": "Shopify codes are 8-20 characters, a-z and 0-9",
            },
            run_id=run_id,
        )


async def _shopify_twin(
    omni: OmniSync, session: AsyncSession, card: PosCard, run_id: uuid.UUID | None
) -> LinkOutcome:
    """Create (or adopt) the Shopify card of a POS card and link both, under the link lock."""
    system = omni.pos.system
    customer_id, email = await _shopify_customer(omni, card)
    note = link_note(system, card.external_id)
    shopify_card = await _create_or_adopt(omni, card, note, customer_id)
    if shopify_card is None:
        await open_finding(
            session,
            finding_type="missing_link",
            subject=f"{system}:{card.external_id}",
            card_id=None,
            evidence={
                "system": system,
                "external_id": card.external_id,
                "serial_last4": card.serial[-4:],
                "problem": "a different Shopify card already has this code",
            },
            run_id=run_id,
        )
        return LinkOutcome("skipped", reason="code_taken")
    base_minor = to_minor(shopify_card.initial_value)
    card_id = await _insert_link(
        omni,
        session,
        currency=shopify_card.currency,
        email=email,
        base_minor=base_minor,
        shopify=shopify_card,
        pos_external_id=card.external_id,
        serial=card.serial,
        cause=f"import:{system}:{card.external_id}",
    )
    if customer_id is not None and omni.settings.send_gift_card_notifications:
        await jobs.enqueue(
            session, NOTIFY_JOB, {"shopify_id": shopify_card.id}, f"omni:notify:{shopify_card.id}"
        )
    if base_minor != card.balance_minor:
        # Adopted after a crash, and the POS moved since: the merge mirrors it.
        await enqueue_sync(session, card_id, "adopted")
    return LinkOutcome("moved", card_id=card_id)


async def _shopify_customer(omni: OmniSync, card: PosCard) -> tuple[str | None, str | None]:
    if card.customer_id is None:
        return None, None
    customer = await omni.pos.customer(card.customer_id)
    if customer is None:
        return None, None
    email = customer.email.strip().lower()
    if not omni.settings.send_gift_card_notifications:
        return None, email
    shopify_customer = await omni.shopify.find_or_create_customer(
        email, first_name=customer.first_name, last_name=customer.last_name
    )
    return shopify_customer, email


async def _create_or_adopt(
    omni: OmniSync, card: PosCard, note: str, customer_id: str | None
) -> ShopifyGiftCard | None:
    try:
        created = await omni.shopify.create_gift_card(
            from_minor(card.balance_minor),
            code=card.serial,
            note=note,
            customer_id=customer_id,
        )
        return created.card
    except ShopifyCodeTaken:
        # Our own earlier attempt that crashed before linking carries our note; a card
        # someone else made with this code is not ours to take over.
        found = await omni.shopify.find_gift_card_by_code(card.serial)
        if found is not None and found.note == note:
            return found
        return None


async def export_shopify_card(
    omni: OmniSync, card: ShopifyGiftCard, order: ShopifyOrder | None = None
) -> LinkOutcome:
    """Sold online: create the POS card with a prefixed serial, note and shipping name."""
    if made_by_giftsync(card):
        return LinkOutcome("skipped", reason="made_by_giftsync")
    state = shopify_state(card)
    if state.status != "enabled":
        return LinkOutcome("skipped", reason="inactive")
    if state.balance_minor <= 0:
        return LinkOutcome("skipped", reason="empty")
    system = omni.pos.system
    async with transaction(omni.sessions) as session:
        await lock_for_transaction(session, f"omni-link:{SHOPIFY}:{card.id}")
        existing = await card_links.card_of(session, SHOPIFY, card.id)
        if existing is not None:
            return LinkOutcome("already_linked", card_id=existing)
        if order is None and card.order_id is not None:
            order = await omni.shopify.get_order(card.order_id)
        serial = omni.pos_serial_for(card.id)
        note = f"Shopify gift card {card.last_characters}"
        if order is not None:
            note += f", order {order.name}"
        pos_card = await omni.pos.create_card(
            serial,
            state.balance_minor,
            reference=f"export:shopify:{serial}",
            note=note,
            customer_name=order.shipping_name if order is not None else None,
        )
        email = order.customer_email.strip().lower() if order and order.customer_email else None
        card_id = await _insert_link(
            omni,
            session,
            currency=card.currency,
            email=email,
            base_minor=pos_card.balance_minor,
            shopify=card,
            pos_external_id=pos_card.external_id,
            serial=serial,
            cause=f"export:shopify:{card.id}",
        )
        if pos_card.balance_minor != state.balance_minor:
            await enqueue_sync(session, card_id, "exported")
    log.info("omni_exported", system=system, card_id=str(card_id))
    return LinkOutcome("moved", card_id=card_id)


async def _insert_link(
    omni: OmniSync,
    session: AsyncSession,
    *,
    currency: str,
    email: str | None,
    base_minor: int,
    shopify: ShopifyGiftCard,
    pos_external_id: str,
    serial: str,
    cause: str,
) -> uuid.UUID:
    card_id = uuid.uuid4()
    await gift_cards.insert_omni(session, card_id, currency, email)
    links = [
        (SHOPIFY, shopify.id, shopify.last_characters, None),
        (omni.pos.system, pos_external_id, serial[-4:], omni.code_hash(serial)),
    ]
    if cause.startswith("import:"):
        # The Shopify code is the POS serial: both links answer a serial lookup.
        links[0] = (SHOPIFY, shopify.id, shopify.last_characters, omni.code_hash(serial))
    for system, external_id, last4, code_hash in links:
        await card_links.insert(
            session,
            card_id=card_id,
            system=system,
            external_id=external_id,
            last4=last4,
            code_hash=code_hash,
            balance_minor=base_minor,
        )
    await sync_base.insert(session, card_id, base_minor)
    created_in = omni.pos.system if cause.startswith("export:") else SHOPIFY
    await add_ledger_entry(
        session,
        card_id=card_id,
        system=created_in,
        amount_minor=base_minor,
        key=f"{cause}:create",
        cause="card_created",
        detail={"linked_to": SHOPIFY if created_in != SHOPIFY else omni.pos.system},
    )
    return card_id
