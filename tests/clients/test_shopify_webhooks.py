"""Shop-scoped webhook subscriptions of a legacy admin-created app: plan, sync, readiness, CLI."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

import app.cli_shopify as cli_shopify
from app.cli_setup import shopify as shopify_group
from app.clients.shopify import (
    ShopifyClient,
    ShopifyHealth,
    SubscriptionAction,
    WebhookSubscription,
    plan_subscriptions,
    subscriptions_check,
    sync_subscriptions,
)
from app.sandbox.shopify import ShopifySimulator
from tests.conftest import make_settings

TOKEN = "shpat_webhooks_test_token"
PUBLIC = "https://giftsync.example.com"
TARGET = f"{PUBLIC}/webhooks/shopify"
NEEDED = ["ORDERS_PAID", "ORDERS_CANCELLED", "REFUNDS_CREATE", "ORDER_TRANSACTIONS_CREATE"]


def sub(number: int, topic: str, uri: str, fmt: str = "JSON") -> WebhookSubscription:
    return WebhookSubscription(f"gid://shopify/WebhookSubscription/{number}", topic, uri, fmt)


def test_plan_keeps_ours_creates_the_missing_and_leaves_other_hosts_alone() -> None:
    existing = [
        sub(1, "ORDERS_PAID", TARGET),
        sub(2, "REFUNDS_CREATE", "https://giftsync.example.com/old/hooks"),
        sub(3, "PRODUCTS_UPDATE", TARGET),
        sub(4, "ORDERS_CANCELLED", "https://other-app.example.net/webhooks/shopify"),
        sub(5, "ORDERS_CANCELLED", TARGET, "XML"),
    ]
    plan = plan_subscriptions(existing, PUBLIC + "/")
    assert plan.target == TARGET
    assert plan.kept == [existing[0]]
    assert plan.missing == ["ORDERS_CANCELLED", "REFUNDS_CREATE", "ORDER_TRANSACTIONS_CREATE"]
    assert plan.stale == [existing[1], existing[2], existing[4]]
    assert plan.matches is False
    complete = [sub(n, topic, TARGET) for n, topic in enumerate(NEEDED)]
    assert plan_subscriptions([*complete, existing[3]], PUBLIC).matches is True


def seeded() -> ShopifySimulator:
    sim = ShopifySimulator(access_token=TOKEN)
    shop = sim.shop
    from app.sandbox.shopify_resolvers import WebhookSubscriptionState

    for topic, uri, fmt in [
        ("ORDERS_PAID", TARGET, "JSON"),
        ("REFUNDS_CREATE", "https://giftsync.example.com/old/hooks", "JSON"),
        ("PRODUCTS_UPDATE", TARGET, "JSON"),
        ("ORDERS_CANCELLED", "https://other-app.example.net/hooks", "JSON"),
        ("ORDERS_CANCELLED", TARGET, "XML"),
    ]:
        state = WebhookSubscriptionState(shop.new_id(), topic, uri, fmt, shop.now())
        shop.webhook_subscriptions[state.id] = state
    return sim


def listing(sim: ShopifySimulator) -> list[tuple[str, str, str]]:
    return sorted(
        (s.topic, s.callback_url or "", s.format) for s in sim.shop.webhook_subscriptions.values()
    )


def client_for(sim: ShopifySimulator) -> ShopifyClient:
    return ShopifyClient(
        "http://shopify.sim", TOKEN, "2026-07", transport=httpx.ASGITransport(app=sim.app)
    )


async def test_sync_creates_the_missing_and_removes_our_stale_ones() -> None:
    sim = seeded()
    client = client_for(sim)
    try:
        dry = await sync_subscriptions(client, PUBLIC, apply=False)
        assert listing(sim) == listing(seeded())  # nothing changed
        actions = await sync_subscriptions(client, PUBLIC)
        again = await sync_subscriptions(client, PUBLIC)
        check = await subscriptions_check(client, PUBLIC)
    finally:
        await client.aclose()
    assert [(a.action, a.topic) for a in dry] == [
        ("kept", "ORDERS_PAID"),
        ("stale", "ORDERS_CANCELLED"),
        ("missing", "ORDERS_CANCELLED"),
        ("missing", "REFUNDS_CREATE"),
        ("missing", "ORDER_TRANSACTIONS_CREATE"),
        ("stale", "REFUNDS_CREATE"),
        ("stale", "PRODUCTS_UPDATE"),
    ]
    assert [(a.action, a.topic) for a in actions] == [
        (a.action.replace("stale", "removed").replace("missing", "created"), a.topic) for a in dry
    ]
    assert all(a.id for a in actions)
    assert listing(sim) == sorted(
        [(topic, TARGET, "JSON") for topic in NEEDED]
        + [("ORDERS_CANCELLED", "https://other-app.example.net/hooks", "JSON")]
    )
    assert {a.action for a in again} == {"kept"}
    assert check == {
        "ok": True,
        "severity": "warning",
        "target": TARGET,
        "missing": [],
        "stale": [],
    }


async def test_readiness_check_says_what_does_not_match() -> None:
    sim = seeded()
    client = client_for(sim)
    try:
        checks = await ShopifyHealth(client, check_webhooks=True, public_url=PUBLIC).checks()
        unset = await subscriptions_check(client, None)
    finally:
        await client.aclose()
    assert checks["shopify_webhooks"] == {
        "ok": False,
        "severity": "warning",
        "target": TARGET,
        "missing": ["ORDERS_CANCELLED", "REFUNDS_CREATE", "ORDER_TRANSACTIONS_CREATE"],
        "stale": [
            {"topic": "REFUNDS_CREATE", "uri": "https://giftsync.example.com/old/hooks"},
            {"topic": "PRODUCTS_UPDATE", "uri": TARGET},
            {"topic": "ORDERS_CANCELLED", "uri": TARGET},
        ],
        "fix": "giftsync shopify webhooks",
    }
    assert unset["ok"] is False and unset["severity"] == "warning"


def test_health_for_settings_checks_webhooks_only_for_a_legacy_app() -> None:
    sim = ShopifySimulator(access_token=TOKEN)
    client = client_for(sim)
    legacy = make_settings(
        sandbox=False,
        shopify_shop_domain="demo.myshopify.com",
        shopify_admin_token=SecretStr(TOKEN),
        public_url=PUBLIC,
    )
    dashboard = make_settings(
        sandbox=False,
        shopify_shop_domain="demo.myshopify.com",
        shopify_client_id="cid",
        public_url=PUBLIC,
    )
    assert ShopifyHealth.for_settings(client, legacy)._check_webhooks is True
    assert ShopifyHealth.for_settings(client, dashboard)._check_webhooks is False
    assert ShopifyHealth.for_settings(client, make_settings())._check_webhooks is False


# --- the command ----------------------------------------------------------------------------


@pytest.fixture
def runner_env(clean_env: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    clean_env.setenv("SANDBOX", "true")
    clean_env.setenv("SHOPIFY_SHOP_DOMAIN", "demo.myshopify.com")
    clean_env.setenv("SHOPIFY_BASE_URL", "http://127.0.0.1:9")
    clean_env.setenv("PUBLIC_URL", PUBLIC)
    clean_env.setenv("COLUMNS", "200")  # rich's table width, so no cell is wrapped
    yield clean_env


def test_command_for_a_dev_dashboard_app_does_nothing(runner_env: pytest.MonkeyPatch) -> None:
    runner_env.setenv("SHOPIFY_CLIENT_ID", "cid-123")
    result = CliRunner().invoke(shopify_group, ["webhooks"])
    assert result.exit_code == 0
    assert "app-scoped" in result.output and "shopify.app.toml" in result.output


def test_command_for_a_legacy_app_syncs_and_prints_a_table(
    runner_env: pytest.MonkeyPatch,
) -> None:
    runner_env.setenv("SHOPIFY_ADMIN_TOKEN", TOKEN)
    sim = seeded()
    runner_env.setattr(cli_shopify, "_transport", lambda: httpx.ASGITransport(app=sim.app))
    dry = CliRunner().invoke(shopify_group, ["webhooks", "--dry-run"])
    assert dry.exit_code == 1
    assert "missing" in dry.output and "6 to change" in dry.output
    assert listing(sim) == listing(seeded())
    applied = CliRunner().invoke(shopify_group, ["webhooks"])
    assert applied.exit_code == 0, applied.output
    for word in ("created", "removed", "kept", "ORDER_TRANSACTIONS_CREATE", "6 changed"):
        assert word in applied.output
    assert TOKEN not in applied.output
    assert len(sim.shop.webhook_subscriptions) == 5


def test_command_needs_public_url(runner_env: pytest.MonkeyPatch) -> None:
    runner_env.setenv("SHOPIFY_ADMIN_TOKEN", TOKEN)
    runner_env.delenv("PUBLIC_URL")
    result = CliRunner().invoke(shopify_group, ["webhooks"])
    assert result.exit_code == 2
    assert "PUBLIC_URL" in result.output


def test_actions_table_lists_every_action() -> None:
    table = cli_shopify.actions_table(
        [SubscriptionAction("created", "ORDERS_PAID", TARGET, "gid://x/1")]
    )
    assert table.row_count == 1
