"""Shadow-card upstreams for tests: simulators behind in-process transports, wired into a runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from app.clients.shopify import ShopifyClient
from app.clients.vii import ViiClient
from app.runtime import Runtime, install_features
from app.sandbox.faults import Faults
from app.sandbox.shopify import ShopifySimulator
from app.sandbox.vii import DEMO_PASSWORD, DEMO_STORE_ID, DEMO_USERNAME, ViiSimulator
from app.sync.shadow import ShadowDeps
from app.sync.shadow.gate import CardGate


@dataclass
class Upstreams:
    vii_sim: ViiSimulator
    shop_sim: ShopifySimulator
    vii: ViiClient
    shop: ShopifyClient


@asynccontextmanager
async def shadow_upstreams(
    runtime: Runtime, *, vii_timeout: float = 2.0
) -> AsyncIterator[Upstreams]:
    """Simulators, clients on them, and the shadow-card service installed on `runtime`."""
    vii_sim = ViiSimulator(Faults())
    shop_sim = ShopifySimulator(Faults())
    vii = ViiClient(
        "http://vii.sim/",
        DEMO_USERNAME,
        DEMO_PASSWORD,
        DEMO_STORE_ID,
        timeout=vii_timeout,
        backoff=0.0,
        transport=httpx.ASGITransport(app=vii_sim.app),
    )
    shop = ShopifyClient(
        "http://shop.sim",
        "shpat_sandbox_token",
        "2026-07",
        timeout=2.0,
        transport=httpx.ASGITransport(app=shop_sim.app),
    )
    runtime.shadow = ShadowDeps.build(
        runtime.sessions, CardGate(runtime.engine), runtime.settings, vii, shop
    )
    install_features(runtime)
    try:
        yield Upstreams(vii_sim, shop_sim, vii, shop)
    finally:
        await vii.aclose()
        await shop.aclose()
