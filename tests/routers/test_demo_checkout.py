"""The sandbox demo page and the checkout script, as served over HTTP."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from app.main import create_app
from app.routers import demo
from app.runtime import Runtime
from tests.conftest import make_settings

SHOPIFY_DIR = demo.STATIC_DIRECTORY.parent.parent / "shopify"


@pytest.fixture
async def http(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as client:
        yield client


async def test_demo_page_loads_the_script_and_simulates_a_cart(http: httpx.AsyncClient) -> None:
    response = await http.get("/demo/checkout")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    page = response.text
    assert '<script src="/static/checkout.js"></script>' in page
    assert '<script src="/static/demo-checkout.js"></script>' in page
    assert 'id="cart-total"' in page and 'id="update-cart"' in page and 'id="giftsync"' in page
    assert "printed in the" in page and "server log" in page
    # No inline script: the page's code is the two static files.
    assert page.count("<script") == 2
    # The page never lists a card itself: numbers and PINs live only in the server log.
    assert not re.search(r"[0-9]{12,19}", page)


async def test_demo_page_is_absent_outside_sandbox_mode(runtime: Runtime) -> None:
    runtime.settings = make_settings(
        sandbox=False,
        shopify_shop_domain="demo-shop.myshopify.com",
        shopify_admin_token=SecretStr("shpat_production_token"),
    )
    assert not runtime.settings.sandbox_enabled
    app = create_app(runtime, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as client:
        response = await client.get("/demo/checkout")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_checkout_script_is_served_as_javascript(http: httpx.AsyncClient) -> None:
    for name in ("checkout.js", "demo-checkout.js"):
        response = await http.get(f"/static/{name}")
        assert response.status_code == 200
        assert "javascript" in response.headers["content-type"]
        assert response.text == (demo.STATIC_DIRECTORY / name).read_text(encoding="utf-8")


async def test_checkout_script_is_the_theme_blocks_bundle() -> None:
    # One build of shopify/lib serves both; shopify's own tests check it against the sources.
    theme_asset = SHOPIFY_DIR / "extensions/vii-cart-block/assets/giftsync-cart-block.js"
    assert (demo.STATIC_DIRECTORY / "checkout.js").read_bytes() == theme_asset.read_bytes()


async def test_demo_glue_drives_the_shared_logic(http: httpx.AsyncClient) -> None:
    glue = (await http.get("/static/demo-checkout.js")).text
    for call in (
        "GiftSync.createGiftCardSession(",
        "GiftSync.mountGiftCardWidget(",
        "GiftSync.normalizeBaseUrl(",
        "session.setCartTotal(",
    ):
        assert call in glue
    bundle = (await http.get("/static/checkout.js")).text
    for wire_name in (
        "viiCardNumber",
        "viiCardPin",
        "cartTotal",
        "checkoutToken",
        "applyToken",
        "shopifyGiftCardCode",
        "/check-balance",
        "/release",
    ):
        assert wire_name in bundle


async def test_checkout_script_keeps_nothing_in_the_browser(http: httpx.AsyncClient) -> None:
    for name in ("checkout.js", "demo-checkout.js"):
        script = (await http.get(f"/static/{name}")).text
        for storage in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
            assert storage not in script
        # Server text goes into the page as text, never as markup.
        assert "innerHTML" not in script and "insertAdjacentHTML" not in script
        assert "parseFloat" not in script  # money stays a decimal string
