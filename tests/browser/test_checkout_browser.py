"""The demo checkout in a real browser: the shared checkout bundle (app/static/checkout.js, built
from shopify/lib) against giftsync served by uvicorn."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Browser, Page, expect

from app.main import create_app
from app.runtime import Runtime
from app.sandbox.shopify import ShopifySimulator
from app.sandbox.vii import ViiSimulator
from tests.wiring import shadow_upstreams

# The demo card with a balance of 120.00, as `seed_demo` prints it in the server log.
CARD = "6280002345678901"
PIN = "2345"


def card_by_code(sim: ShopifySimulator, code: str) -> dict[str, Any]:
    for card_id in sim.shop.gift_cards:
        card = sim.card(card_id)
        if card["code"].lower() == code.lower():
            return card
    raise AssertionError(f"no Shopify card ends {code[-4:]}")


@dataclass
class LiveCheckout:
    base_url: str
    vii: ViiSimulator
    shopify: ShopifySimulator


@pytest.fixture
async def live(runtime: Runtime) -> AsyncIterator[LiveCheckout]:
    """giftsync on a real port (uvicorn in this event loop), wired like tests/sync's `checkout`."""
    async with shadow_upstreams(runtime) as up:
        vii_sim, shop_sim = up.vii_sim, up.shop_sim
        assert f"  Vii card {CARD} PIN {PIN} balance 120.00" in vii_sim.seed_demo()
        app = create_app(runtime, run_worker=False)
        async for live_checkout in _serve(app, vii_sim, shop_sim):
            yield live_checkout


async def _serve(
    app: Any, vii_sim: ViiSimulator, shop_sim: ShopifySimulator
) -> AsyncIterator[LiveCheckout]:
    # Bound before uvicorn starts, so no other process can take the port in between.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    async with asyncio.timeout(10):
        while not server.started:
            assert not serving.done(), "uvicorn stopped while starting"
            await asyncio.sleep(0.02)
    try:
        yield LiveCheckout(f"http://127.0.0.1:{port}", vii_sim, shop_sim)
    finally:
        server.should_exit = True
        await serving
        listener.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    page = await context.new_page()
    yield page
    await context.close()


async def _storage(page: Page) -> dict[str, str]:
    raw = await page.evaluate("() => JSON.stringify(Object.assign({}, window.localStorage))")
    stored: dict[str, str] = json.loads(raw)
    return stored


async def test_apply_resize_and_remove_in_a_real_browser(live: LiveCheckout, page: Page) -> None:
    await page.goto(f"{live.base_url}/demo/checkout")
    await expect(page.locator("body")).to_contain_text("server log")
    summary = page.locator(".giftsync-summary-text")
    applied_code = page.locator("#applied-code")

    await page.fill("#cart-total", "80.00")
    await page.fill("input[name=viiCardNumber]", CARD)
    await page.fill("input[name=viiCardPin]", PIN)
    await page.click("button.giftsync-apply")
    await expect(summary).to_have_text("Vii •••• 8901 · applied $80.00 · remaining $40.00")
    code = (await applied_code.text_content()) or ""
    assert re.fullmatch(r"[a-z0-9]{8,20}", code) and code.endswith("8901")
    assert Decimal(str(card_by_code(live.shopify, code)["balance"])) == Decimal("80.00")
    # After the apply the number and PIN are gone from the page, kept only in memory.
    assert CARD not in await page.content()
    assert await page.input_value("input[name=viiCardNumber]") == ""
    assert await page.input_value("input[name=viiCardPin]") == ""

    await page.fill("#cart-total", "50.00")
    await page.click("#update-cart")
    # The Vii hold stays at 80.00, so 40.00 is still what the card can give elsewhere.
    await expect(summary).to_have_text("Vii •••• 8901 · applied $50.00 · remaining $40.00")
    await expect(applied_code).to_have_text(code)
    await expect(page.locator("#code-log li")).to_have_count(1)  # applyCode called once
    assert Decimal(str(card_by_code(live.shopify, code)["balance"])) == Decimal("50.00")

    # Nothing is kept in the browser: the card number, PIN and apply token live in memory only.
    assert await _storage(page) == {}

    await page.click("button.giftsync-remove")
    await expect(applied_code).to_have_text("None")
    await expect(page.locator("#code-log li").last).to_have_text(f"removeCode({code})")
    assert await _storage(page) == {}
    await expect(page.locator("input[name=viiCardNumber]")).to_be_visible()


async def test_growing_past_the_hold_asks_for_the_pin_only(live: LiveCheckout, page: Page) -> None:
    await page.goto(f"{live.base_url}/demo/checkout")
    summary = page.locator(".giftsync-summary-text")
    await page.fill("#cart-total", "80.00")
    await page.fill("input[name=viiCardNumber]", CARD)
    await page.fill("input[name=viiCardPin]", PIN)
    await page.click("button.giftsync-apply")
    await expect(summary).to_have_text("Vii •••• 8901 · applied $80.00 · remaining $40.00")
    code = (await page.locator("#applied-code").text_content()) or ""

    await page.fill("#cart-total", "100.00")
    await page.click("#update-cart")
    await expect(page.locator("input[name=viiCardPin]")).to_be_visible()
    await expect(page.locator("input[name=viiCardNumber]")).to_be_hidden()
    await expect(page.locator(".giftsync-prompt")).to_contain_text("PIN")

    await page.fill("input[name=viiCardPin]", PIN)
    await page.click("button.giftsync-apply")
    await expect(summary).to_have_text("Vii •••• 8901 · applied $100.00 · remaining $20.00")
    await expect(page.locator("#applied-code")).to_have_text(code)


async def test_problem_detail_is_shown_for_a_wrong_pin(live: LiveCheckout, page: Page) -> None:
    await page.goto(f"{live.base_url}/demo/checkout")
    await page.fill("input[name=viiCardNumber]", CARD)
    await page.fill("input[name=viiCardPin]", "9999")
    await page.click("button.giftsync-apply")
    await expect(page.locator(".giftsync-error")).to_have_text(
        "The card number or PIN is not right."
    )
    await expect(page.locator(".giftsync-summary")).to_be_hidden()
    await expect(page.locator("#applied-code")).to_have_text("None")
    assert await _storage(page) == {}


@pytest.fixture
async def pages_origin(runtime: Runtime) -> AsyncIterator[str]:
    """A second origin serving the same demo page: its script calls giftsync cross-origin."""
    app = create_app(runtime, run_worker=False)
    async for other in _serve(app, ViiSimulator(), ShopifySimulator()):
        yield other.base_url


async def _apply_from_another_origin(
    page: Page, live: LiveCheckout, pages_origin: str, pin: str
) -> None:
    await page.goto(f"{pages_origin}/demo/checkout?api={live.base_url}")
    await page.fill("#cart-total", "30.00")
    await page.fill("input[name=viiCardNumber]", CARD)
    await page.fill("input[name=viiCardPin]", pin)
    await page.click("button.giftsync-apply")


async def test_from_another_origin_cors_lets_the_checkout_apply(
    live: LiveCheckout, pages_origin: str, page: Page
) -> None:
    assert pages_origin != live.base_url
    answers: list[dict[str, str]] = []
    page.on(
        "response",
        lambda r: answers.append(r.headers) if r.url == f"{live.base_url}/check-balance" else None,
    )
    await _apply_from_another_origin(page, live, pages_origin, PIN)
    # A JSON POST from another origin needs Chromium's preflight first: applied means allowed.
    await expect(page.locator(".giftsync-summary-text")).to_have_text(
        "Vii •••• 8901 · applied $30.00 · remaining $90.00"
    )
    assert answers and answers[0]["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in answers[0]
    if folder := os.environ.get("GIFTSYNC_SCREENSHOTS"):
        await page.screenshot(path=str(Path(folder) / "21-demo-checkout-cross-origin.png"))


async def test_from_another_origin_a_locked_out_card_and_vii_down_are_told_plainly(
    live: LiveCheckout, pages_origin: str, page: Page
) -> None:
    for _ in range(5):
        await _apply_from_another_origin(page, live, pages_origin, "9999")
        await expect(page.locator(".giftsync-error")).to_have_text(
            "The card number or PIN is not right."
        )
    await _apply_from_another_origin(page, live, pages_origin, PIN)
    await expect(page.locator(".giftsync-error")).to_contain_text("Too many tries. Please wait")

    other = "6280003456789012"  # another demo card, PIN 3456, not locked
    live.vii.faults.error_rate = 1.0
    await page.goto(f"{pages_origin}/demo/checkout?api={live.base_url}")
    await page.fill("input[name=viiCardNumber]", other)
    await page.fill("input[name=viiCardPin]", "3456")
    await page.click("button.giftsync-apply")
    await expect(page.locator(".giftsync-error")).to_contain_text(
        "The gift card service isn't answering right now."
    )
    await expect(page.locator("#applied-code")).to_have_text("None")
