"""A store for console tests: Shopify and a Lightspeed R-Series simulator with omni sync on,
cards sold in store and linked, and drift made behind giftsync's back (only a reconcile sees
it). Used by the HTTP tests and the browser test alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import text

from app.clients.factory import Clients
from app.runtime import Runtime, install_features
from app.sync.reconcile import Reconciler
from app.worker import Worker
from tests.omni_wiring import Omni, omni_upstreams


@dataclass
class Sold:
    external_id: str
    serial: str
    card_id: uuid.UUID
    gid: str


@dataclass
class Store:
    flow: Omni
    reconciler: Reconciler

    @property
    def runtime(self) -> Runtime:
        return self.flow.runtime

    async def sell(self, serial: str, amount: str) -> Sold:
        """A card sold at the till and linked by the POS poller, as giftsync learns of it."""
        external_id = self.flow.sell_in_store(serial, amount)
        await self.flow.pollers.poll_pos()
        card_id = await self.flow.omni.linked_card(self.flow.pos.system, external_id)
        assert card_id is not None
        async with self.runtime.engine.connect() as connection:
            gid = await connection.scalar(
                text(
                    "SELECT external_id FROM card_links WHERE card_id = :c AND system = 'shopify'"
                ),
                {"c": card_id},
            )
        return Sold(external_id, serial, card_id, str(gid))

    def status_conflict(self, card: Sold) -> None:
        """Deactivated in Shopify while reloaded in store: the merge rule cannot settle it."""
        self.flow.shop_sim.shop.deactivate(card.gid)
        self.flow.reload_in_store(card.external_id, card.serial, "20.00")

    def shopify_total(self) -> Decimal:
        cards = map(self.flow.shop_sim.card, self.flow.shop_sim.shop.gift_cards)
        return sum((c["balance"] for c in cards if c["enabled"]), Decimal("0.00"))

    def pos_total(self, cards: list[Sold]) -> Decimal:
        return sum((self.flow.pos_money(c.external_id, c.serial) for c in cards), Decimal("0.00"))


@asynccontextmanager
async def store(runtime: Runtime) -> AsyncIterator[Store]:
    async with omni_upstreams(runtime, "retail", "negative") as flow:
        # As a served runtime holds them: /readyz and the console read the POS set-up back.
        runtime.clients = Clients(shopify=flow.shop, pos=flow.pos_client)
        install_features(runtime)
        reconciler = runtime.reconciler
        assert reconciler is not None
        reconciler.bulk_poll_interval = 0.0  # the simulator finishes an export in two looks
        try:
            yield Store(flow, reconciler)
        finally:
            runtime.clients = None  # closed by omni_upstreams


@asynccontextmanager
async def worker_running(runtime: Runtime) -> AsyncIterator[Worker]:
    """A worker for the runs the console starts (jobs only: no pollers behind the test)."""
    import asyncio

    stop = asyncio.Event()
    worker = Worker(runtime.sessions, runtime.handlers)
    worker.config.idle_poll = 0.05
    runtime.worker = worker
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task
        runtime.worker = None
