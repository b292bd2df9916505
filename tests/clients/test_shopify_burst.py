"""A 500-call burst through the Shopify client never draws a THROTTLED answer (simulator)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx

from app.clients.shopify import ShopifyClient
from app.sandbox.shopify import ShopifySimulator


async def test_mixed_500_call_burst_is_never_throttled() -> None:
    # The Standard bucket shape with a faster refill, so the burst must be paced but ends quickly.
    sim = ShopifySimulator(bucket_size=1000, restore_rate=4000.0)
    card_id, _code = sim.create_gift_card(Decimal("500.00"))
    client = ShopifyClient(
        "http://shopify.test",
        "shpat_sandbox_token",
        "2026-07",
        transport=httpx.ASGITransport(app=sim.app),
    )
    calls = iter(range(500))

    async def worker() -> None:
        for n in calls:
            if n % 5 == 0:
                await client.debit_gift_card(
                    card_id, Decimal("0.01"), "AUD", idempotency_key=f"burst:{n}"
                )
            elif n % 5 == 1:
                await client.create_gift_card(Decimal("1.00"))
            else:
                await client.get_gift_card(card_id)

    try:
        await asyncio.gather(*(worker() for _ in range(20)))
    finally:
        await client.aclose()
    assert sim.throttled_count == 0
    assert sim.card(card_id)["balance"] == Decimal("500.00") - Decimal("0.01") * 100


async def test_forced_throttling_is_waited_out_and_retried() -> None:
    sim = ShopifySimulator(bucket_size=1000, restore_rate=1000.0)
    client = ShopifyClient(
        "http://shopify.test",
        "shpat_sandbox_token",
        "2026-07",
        transport=httpx.ASGITransport(app=sim.app),
    )
    sim.faults.force_throttle = True

    async def lift() -> None:
        await asyncio.sleep(0.2)
        sim.faults.force_throttle = False

    try:
        lifted = asyncio.create_task(lift())
        assert await client.find_gift_cards_by_last_characters("zzzz") == []
        await lifted
    finally:
        await client.aclose()
    assert sim.throttled_count >= 1
