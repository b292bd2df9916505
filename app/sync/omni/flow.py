"""The omni flow: the upstreams and settings every omni step works with, and its small helpers.

The steps themselves are functions taking this flow first, as the wiring table calls them:
`links.py` (a new card crosses to the other side), `sync.py` (merge a linked card),
`moves.py` (the jobs that carry out a merge), `triggers.py` (what notices a change).
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.clients.shopify import ShopifyClient
from app.crypto import card_hash
from app.db import card_links, jobs
from app.db.engine import SessionFactory, transaction
from app.settings import Settings
from app.sync.omni.common import SYNC_JOB, serial_for_shopify_card
from app.sync.pos import PosGiftCards


class OmniSync:
    def __init__(
        self,
        sessions: SessionFactory,
        settings: Settings,
        shopify: ShopifyClient,
        pos: PosGiftCards,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.shopify = shopify
        self.pos = pos
        self._hash_key = settings.card_hash_key.get_secret_value() if settings.card_hash_key else ""

    @property
    def to_shopify(self) -> bool:
        return self.settings.create_update_shopify_gift_cards

    @property
    def to_pos(self) -> bool:
        return self.settings.download_shopify_gift_cards

    def pos_serial_for(self, shopify_card_id: str) -> str:
        return serial_for_shopify_card(
            self.settings.shopify_serial_prefix, shopify_card_id, key=self._hash_key
        )

    def serial_made_here(self, serial: str) -> bool:
        prefix = self.settings.shopify_serial_prefix
        return serial.startswith(prefix) and len(serial) == len(prefix) + 16 and serial.isdigit()

    def code_hash(self, code: str) -> str:
        return card_hash(self._hash_key, code.strip().lower())

    async def linked_card(self, system: str, external_id: str) -> uuid.UUID | None:
        async with self.sessions() as session:
            return await card_links.card_of(session, system, external_id)

    async def request_sync(self, card_id: uuid.UUID, why: str) -> None:
        async with transaction(self.sessions) as session:
            await enqueue_sync(session, card_id, why)


async def enqueue_sync(session: AsyncSession, card_id: uuid.UUID, why: str) -> None:
    """A merge of the card as a job, committed with the caller's transaction."""
    await jobs.enqueue(
        session,
        SYNC_JOB,
        {"card_id": str(card_id), "why": why},
        f"omni:sync:{card_id}:{uuid.uuid4().hex}",
    )
