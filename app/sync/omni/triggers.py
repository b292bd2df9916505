"""What notices omni card changes: the POS and Shopify pollers and the order webhooks.

Neither upstream pushes gift card changes (Shopify has no gift card topics; Lightspeed none at
all), so pollers read changes since a cursor kept in `sync_cursors`. Each runs as a singleton
across workers; the cursor moves only past changes that were handled, and every read starts
`CURSOR_OVERLAP` before it, so a poller that crashed or fell behind catches up without a gap.
Whatever they notice goes to `OmniSync`: link a new card, or merge a linked one.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from app.clients.shopify import ShopifyClient
from app.db import cursors, gift_cards
from app.db.engine import SessionFactory, transaction
from app.logging import get_logger
from app.sync.inbox import Delivery
from app.sync.omni.common import CURSOR_OVERLAP, SHOPIFY
from app.sync.omni.flow import OmniSync
from app.sync.omni.links import export_shopify_card, import_pos_card
from app.sync.omni.sync import sync_card
from app.sync.shadow.payments import payment_from_rest
from app.worker import run_as_singleton

log = get_logger(__name__)

POS_POLLER = "omni-poll-pos"
SHOPIFY_POLLER = "omni-poll-shopify"
PURCHASED = "source:purchased"


def pos_cursor_name(system: str) -> str:
    """The `sync_cursors` row of the POS poller of `system`."""
    return f"omni:{system}:changes"


async def read_cursor(sessions: SessionFactory, name: str) -> datetime | None:
    async with sessions() as session:
        return await cursors.get(session, name)


async def save_cursor(sessions: SessionFactory, name: str, at: datetime) -> None:
    """Move the cursor forward only: a slow poller finishing late never moves it back."""
    async with transaction(sessions) as session:
        await cursors.advance(session, name, at)


class OmniPollers:
    def __init__(self, sessions: SessionFactory, omni: OmniSync, shopify: ShopifyClient) -> None:
        self.sessions = sessions
        self.omni = omni
        self.shopify = shopify

    @property
    def pos_cursor(self) -> str:
        return pos_cursor_name(self.omni.pos.system)

    async def poll_pos(self) -> int:
        """Handle every POS card changed since the cursor; returns how many were handled.

        Changes are collected first, so several moves on one card in one window become one
        merge (and one mirrored move), read after all of them.
        """
        since = await read_cursor(self.sessions, self.pos_cursor)
        changed: dict[str, datetime] = {}
        async for change in self.omni.pos.changes_since(
            since - CURSOR_OVERLAP if since is not None else None
        ):
            seen = changed.get(change.external_id)
            if seen is None or change.changed_at > seen:
                changed[change.external_id] = change.changed_at
        for external_id in sorted(changed, key=changed.__getitem__):
            await self._pos_changed(external_id)
        if changed:
            await save_cursor(self.sessions, self.pos_cursor, max(changed.values()))
        return len(changed)

    async def _pos_changed(self, external_id: str) -> None:
        card_id = await self.omni.linked_card(self.omni.pos.system, external_id)
        if card_id is not None:
            await self._sync(card_id, "pos_changed")
            return
        if not self.omni.to_shopify:
            return
        card = await self.omni.pos.get_card(external_id)
        if card is not None:
            await import_pos_card(self.omni, card)

    async def poll_shopify(self) -> int:
        """Handle every Shopify card updated since the cursor (newest first, so the cursor
        moves only after the whole pass)."""
        since = await read_cursor(self.sessions, SHOPIFY_POLLER)
        started = datetime.now(UTC)
        if since is None:
            # History is the backfill's job; live sync starts now.
            await save_cursor(self.sessions, SHOPIFY_POLLER, started - CURSOR_OVERLAP)
            return 0
        handled = 0
        latest = since
        async for card in self.shopify.iter_gift_cards_updated_since(since - CURSOR_OVERLAP):
            latest = max(latest, card.updated_at)
            card_id = await self.omni.linked_card(SHOPIFY, card.id)
            if card_id is not None:
                if await self._is_omni(card_id):
                    await self._sync(card_id, "shopify_changed")
                    handled += 1
            elif self.omni.to_pos and card.order_id is not None:
                await export_shopify_card(self.omni, card)
                handled += 1
        await save_cursor(self.sessions, SHOPIFY_POLLER, latest)
        return handled

    async def run_pos_poll(self) -> None:
        await self.poll_pos()

    async def run_shopify_poll(self) -> None:
        await self.poll_shopify()

    async def _is_omni(self, card_id: uuid.UUID) -> bool:
        async with self.sessions() as session:
            return await gift_cards.kind_of(session, card_id) == "omni"

    async def _sync(self, card_id: uuid.UUID, why: str) -> None:
        outcome = await sync_card(self.omni, card_id)
        if outcome.status == "pending":
            # Its earlier moves are still landing: merge again once they have.
            await self.omni.request_sync(card_id, why)

    # --- webhooks -------------------------------------------------------------------------

    async def on_transaction(self, payload: dict[str, Any], delivery: Delivery) -> None:
        """A payment or refund on an omni card: merge it now rather than at the next poll."""
        payment = payment_from_rest(payload)
        if payment is None or payment.gift_card_id is None:
            return
        await self._sync_shopify_card(payment.gift_card_id)

    async def on_refund(self, payload: dict[str, Any], delivery: Delivery) -> None:
        for txn in payload.get("transactions") or []:
            if not isinstance(txn, dict):
                continue
            payment = payment_from_rest(txn, payload.get("order_id"))
            if payment is not None and payment.gift_card_id is not None:
                await self._sync_shopify_card(payment.gift_card_id)

    async def on_order_paid(self, payload: dict[str, Any], delivery: Delivery) -> None:
        """Gift cards bought in the order exist now: poll Shopify for them at once."""
        items = payload.get("line_items") or []
        if not self.omni.to_pos or not any(
            isinstance(item, dict) and item.get("gift_card") for item in items
        ):
            return
        if not await run_as_singleton(self.sessions, SHOPIFY_POLLER, self.run_shopify_poll):
            # A poll is running and may have passed these cards already: one more after it.
            await run_as_singleton(self.sessions, SHOPIFY_POLLER, self.run_shopify_poll)

    async def on_gift_card(self, payload: dict[str, Any], delivery: Delivery) -> None:
        """`gift_cards/create|update` (sent by some shops' tooling): re-read that card."""
        card_id = payload.get("admin_graphql_api_id") or payload.get("id")
        if card_id in (None, ""):
            return
        gid = str(card_id)
        if not gid.startswith("gid://"):
            gid = f"gid://shopify/GiftCard/{gid}"
        linked = await self.omni.linked_card(SHOPIFY, gid)
        if linked is not None:
            if await self._is_omni(linked):
                await self._sync(linked, "gift_card_webhook")
            return
        if self.omni.to_pos:
            card = await self.omni.shopify.get_gift_card(gid)
            if card is not None and card.order_id is not None:
                await export_shopify_card(self.omni, card)

    async def _sync_shopify_card(self, shopify_card_id: str) -> None:
        card_id = await self.omni.linked_card(SHOPIFY, shopify_card_id)
        if card_id is not None and await self._is_omni(card_id):
            await self.omni.request_sync(card_id, "order_webhook")
