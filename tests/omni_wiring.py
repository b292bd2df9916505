"""Omni upstreams for tests: Shopify and one POS simulator, clients on them, OmniSync installed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from app.clients.factory import Clients
from app.clients.lightspeed import LightspeedClient, SaleSetup
from app.clients.onsite import OnSiteClient
from app.clients.shopify import ShopifyClient
from app.runtime import Runtime, install_features
from app.sandbox.faults import Faults
from app.sandbox.lightspeed import LightspeedSimulator
from app.sandbox.lightspeed_merchant import Readings
from app.sandbox.onsite import OnSiteReadings, OnSiteSimulator
from app.sandbox.shopify import ShopifySimulator
from app.settings import BalanceSign, PosKind
from app.sync.omni import OmniSync
from app.sync.omni.triggers import OmniPollers
from app.sync.pos import PosGiftCards
from app.sync.pos.factory import build_pos
from app.worker import Worker
from tests.memory_tokens import MemoryTokenStore

# (pos kind, Lightspeed balance sign, simulator readings): every omni test runs on each, so each
# POS kind runs under both readings of what its documents leave open, and R-Series under both
# balance signs.
POS_VARIANTS = [
    ("retail", "negative", "strict"),
    ("retail", "positive", "lenient"),
    ("onsite", "negative", "strict"),
    ("onsite", "negative", "lenient"),
]
POS_VARIANT_IDS = [
    "retail-negative-strict",
    "retail-positive-lenient",
    "onsite-strict",
    "onsite-lenient",
]


@dataclass
class Omni:
    runtime: Runtime
    shop_sim: ShopifySimulator
    shop: ShopifyClient
    pos_kind: str
    ls_sim: LightspeedSimulator | None
    onsite_sim: OnSiteSimulator | None
    pos_client: LightspeedClient | OnSiteClient
    pos: PosGiftCards
    omni: OmniSync
    pollers: OmniPollers

    async def drain(self, rounds: int = 20) -> int:
        """Run every due job (moves, syncs, notifications) until none is left."""
        worker = Worker(self.runtime.sessions, self.runtime.handlers)
        total = 0
        for _ in range(rounds):
            ran = await worker.run_once()
            total += ran
            if not ran:
                break
        return total

    # --- acting in store, behind giftsync's back ---

    def sell_in_store(self, serial: str, amount: str, customer_id: str | None = None) -> str:
        """A card sold at the till; returns what the POS adapter calls its external id."""
        if self.ls_sim is not None:
            card_id = self.ls_sim.add_gift_card(serial, Decimal(amount), customer_id)
            return card_id
        assert self.onsite_sim is not None
        self.onsite_sim.sell_gift_card_in_store(serial, Decimal(amount), customer_id)
        return self.omni.code_hash(serial)

    def add_customer(self, first: str, last: str, email: str) -> str:
        if self.ls_sim is not None:
            return self.ls_sim.add_customer(first, last, email)
        assert self.onsite_sim is not None
        return self.onsite_sim.add_customer(first, last, email)

    def spend_in_store(self, external_id: str, serial: str, amount: str) -> None:
        if self.ls_sim is not None:
            self.ls_sim.spend_in_store(external_id, Decimal(amount))
        else:
            assert self.onsite_sim is not None
            self.onsite_sim.redeem_in_store(serial, Decimal(amount))

    def reload_in_store(self, external_id: str, serial: str, amount: str) -> None:
        if self.ls_sim is not None:
            self.ls_sim.reload_in_store(external_id, Decimal(amount))
        else:
            assert self.onsite_sim is not None
            self.onsite_sim.sell_gift_card_in_store(serial, Decimal(amount))

    def pos_money(self, external_id: str, serial: str) -> Decimal:
        if self.ls_sim is not None:
            return self.ls_sim.money_on(external_id)
        assert self.onsite_sim is not None
        return self.onsite_sim.balance(serial)

    def shopify_card(self, card_id: str) -> dict[str, Any]:
        return self.shop_sim.card(card_id)


@asynccontextmanager
async def omni_upstreams(
    runtime: Runtime, pos_kind: str = "retail", sign: str = "negative", reading: str = "strict"
) -> AsyncIterator[Omni]:
    settings = runtime.settings.model_copy(
        update={
            "pos_kind": PosKind(pos_kind),
            "lightspeed_balance_sign": BalanceSign(sign),
        }
    )
    runtime.settings = settings
    shop_sim = ShopifySimulator(Faults())
    shop = ShopifyClient(
        "http://shop.sim",
        "shpat_sandbox_token",
        "2026-07",
        timeout=2.0,
        transport=httpx.ASGITransport(app=shop_sim.app),
    )
    ls_sim: LightspeedSimulator | None = None
    onsite_sim: OnSiteSimulator | None = None
    pos_client: LightspeedClient | OnSiteClient
    if pos_kind == "retail":
        readings = Readings.lenient() if reading == "lenient" else Readings.strict()
        ls_sim = LightspeedSimulator(
            balance_sign=BalanceSign(sign), faults=Faults(), readings=readings
        )
        pos_client = LightspeedClient(
            ls_sim.account_id,
            ls_sim.client_id,
            ls_sim.client_secret,
            MemoryTokenStore(),
            initial_refresh_token=ls_sim.issue_refresh_token(),
            base_url="https://ls.sim",
            token_url="https://ls.sim/auth/oauth/token",
            balance_sign=BalanceSign(sign),
            sale_setup=SaleSetup(**ls_sim.correct_set_up()),
            timeout=2.0,
            transport=httpx.ASGITransport(app=ls_sim.app),
        )
    else:
        onsite_readings = (
            OnSiteReadings.lenient() if reading == "lenient" else OnSiteReadings.strict()
        )
        onsite_sim = OnSiteSimulator(Faults(), readings=onsite_readings)
        pos_client = OnSiteClient(
            "https://onsite.sim:9630",
            "onsite",
            "onsite-sandbox",
            "com.example.giftsync",
            "giftsync-sandbox-pappid",
            timeout=2.0,
            retry_base_delay=0.0,
            transport=httpx.ASGITransport(app=onsite_sim.app),
            **onsite_sim.correct_set_up(),
        )
    pos = build_pos(settings, Clients(shopify=shop, pos=pos_client), runtime.sessions)
    assert pos is not None
    omni = OmniSync(runtime.sessions, settings, shop, pos)
    runtime.omni = omni
    install_features(runtime)
    pollers = runtime.pollers
    assert pollers is not None
    try:
        yield Omni(
            runtime, shop_sim, shop, pos_kind, ls_sim, onsite_sim, pos_client, pos, omni, pollers
        )
    finally:
        await shop.aclose()
        await pos_client.aclose()
