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
    assert 'id="cart-total"' in page and 'id="update-cart"' in page
    assert "onCartTotalChange(" in page and "GiftSync.init(" in page
    assert "printed in the" in page and "server log" in page
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
    response = await http.get("/static/checkout.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert response.text == (demo.STATIC_DIRECTORY / "checkout.js").read_text(encoding="utf-8")


async def test_checkout_script_api_and_wire_names(http: httpx.AsyncClient) -> None:
    script = (await http.get("/static/checkout.js")).text
    assert "global.GiftSync = {" in script and "init: init" in script
    for option in ("endpoint", "checkoutToken", "getCartTotal", "applyCode", "removeCode"):
        assert f"options.{option}" in script
    for field in ("viiCardNumber", "cartTotal", "checkoutToken"):
        assert f"{field}:" in script
    assert "body.viiCardPin = pin" in script  # sent only when the shopper typed one
    assert '"/check-balance"' in script and '"/release"' in script
    assert '"pin_required"' in script
    assert "data.detail" in script


async def test_checkout_script_stores_only_the_shadow_last4_and_amounts(
    http: httpx.AsyncClient,
) -> None:
    script = (await http.get("/static/checkout.js")).text
    assert script.count("localStorage.setItem(") == 1
    stored = re.search(r"var summary = \{(?P<fields>[^}]*)\};", script)
    assert stored is not None
    keys = re.findall(r"(\w+):", stored["fields"])
    assert keys == ["shadowLast4", "amountApplied", "remaining"]
    assert "sessionStorage" not in script and "document.cookie" not in script
    # Server text goes into the page as text, never as markup.
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "parseFloat" not in script  # money stays a decimal string
