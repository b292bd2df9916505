"""`shopify/shopify.app.toml` as `giftsync shopify app-config` writes it (DESIGN 9)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from app.shopify_app_config import render_app_toml
from tests.pure import clean_database  # noqa: F401

SHOPIFY_DIR = Path(__file__).resolve().parent.parent / "shopify"


def test_the_app_toml_declares_scopes_webhooks_and_the_app_proxy() -> None:
    text = render_app_toml(
        "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "https://giftsync.shop.example/", "2026-07"
    )
    assert tomllib.loads(text) == {
        "name": "giftsync",
        "client_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "application_url": "https://giftsync.shop.example",
        "embedded": False,
        "access_scopes": {
            "scopes": "read_customers,write_customers,read_gift_card_transactions,"
            "write_gift_card_transactions,read_gift_cards,write_gift_cards,read_orders,"
            "write_app_proxy"
        },
        "auth": {"redirect_urls": ["https://shopify.dev/apps/default-app-home/api/auth"]},
        "webhooks": {
            "api_version": "2026-07",
            "subscriptions": [
                {
                    "topics": [
                        "orders/paid",
                        "orders/cancelled",
                        "refunds/create",
                        "order_transactions/create",
                    ],
                    "uri": "https://giftsync.shop.example/webhooks/shopify",
                }
            ],
        },
        "app_proxy": {
            "url": "https://giftsync.shop.example/proxy",
            "prefix": "apps",
            "subpath": "giftsync",
        },
    }


def test_a_public_url_with_a_path_keeps_it() -> None:
    parsed = tomllib.loads(render_app_toml("abc", "https://example.com/giftsync", "2026-10"))
    assert (
        parsed["webhooks"]["subscriptions"][0]["uri"]
        == "https://example.com/giftsync/webhooks/shopify"
    )
    assert parsed["app_proxy"]["url"] == "https://example.com/giftsync/proxy"
    assert parsed["webhooks"]["api_version"] == "2026-10"


@pytest.mark.parametrize(
    ("client_id", "public_url", "api_version", "error"),
    [
        ("abc", "http://giftsync.example.com", "2026-07", "PUBLIC_URL: must be an https://"),
        ("abc", "giftsync.example.com", "2026-07", "PUBLIC_URL: must be an https://"),
        ("abc", "https://", "2026-07", "PUBLIC_URL: must be an https://"),
        ("abc", 'https://g.example/"x', "2026-07", "PUBLIC_URL: only a plain URL"),
        ("abc", "https://g.example/a b", "2026-07", "PUBLIC_URL: only a plain URL"),
        ("abc", "https://g.example/?debug=1", "2026-07", "PUBLIC_URL: no query"),
        ("abc", "https://user:pw@g.example", "2026-07", "PUBLIC_URL: no query"),
        ('ab"c', "https://g.example", "2026-07", "SHOPIFY_CLIENT_ID:"),
        ("", "https://g.example", "2026-07", "SHOPIFY_CLIENT_ID:"),
        ("abc", "https://g.example", "2026-08", "SHOPIFY_API_VERSION:"),
        ("abc", "https://g.example", "latest", "SHOPIFY_API_VERSION:"),
    ],
)
def test_values_that_cannot_go_into_the_toml_are_refused(
    client_id: str, public_url: str, api_version: str, error: str
) -> None:
    with pytest.raises(ValueError, match="^" + error.replace("?", r"\?")):
        render_app_toml(client_id, public_url, api_version)


def test_the_committed_example_is_what_the_command_writes() -> None:
    example = (SHOPIFY_DIR / "shopify.app.toml.example").read_text(encoding="utf-8")
    assert example == render_app_toml("YOUR_CLIENT_ID", "https://giftsync.example.com", "2026-07")


def test_the_extensions_target_2026_07_and_need_what_the_app_declares() -> None:
    checkout = tomllib.loads(
        (SHOPIFY_DIR / "extensions/vii-checkout/shopify.extension.toml").read_text(encoding="utf-8")
    )
    assert checkout["api_version"] == "2026-07"
    [extension] = checkout["extensions"]
    assert extension["type"] == "ui_extension"
    assert extension["targeting"] == [
        {"target": "purchase.checkout.reductions.render-after", "module": "./src/Checkout.tsx"}
    ]
    assert extension["capabilities"] == {"network_access": True}
    assert [field["key"] for field in extension["settings"]["fields"]] == ["giftsync_url"]
    theme = tomllib.loads(
        (SHOPIFY_DIR / "extensions/vii-cart-block/shopify.extension.toml").read_text(
            encoding="utf-8"
        )
    )
    assert theme == {"name": "Vii gift card (cart page)", "type": "theme"}
