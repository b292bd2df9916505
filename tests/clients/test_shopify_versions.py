"""Admin API versions: what the client sends is valid and undeprecated in 2026-07 and 2026-10,
served by the simulator at either; the answered version (`X-Shopify-API-Version`) is read on
every answer and a mismatch shows in the client, the metric and the readiness check."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from app.clients.shopify import ShopifyClient, ShopifyHealth
from app.clients.shopify.queries import ALL_OPERATIONS, BULK_GIFT_CARDS_QUERY
from app.sandbox.shopify import ShopifySimulator
from tests.clients.test_shopify_schema import request_problems

TOKEN = "shpat_versions_test_token"
BASE = "http://shopify.sim"


class Recording(httpx.AsyncBaseTransport):
    """The simulator behind a transport that keeps every GraphQL body the client sent."""

    def __init__(self, sim: ShopifySimulator) -> None:
        self._inner = httpx.ASGITransport(app=sim.app)
        self.sent: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/graphql.json"):
            self.sent.append(json.loads(request.content))
        return await self._inner.handle_async_request(request)


def client_for(sim: ShopifySimulator, version: str) -> tuple[ShopifyClient, Recording]:
    transport = Recording(sim)
    return ShopifyClient(BASE, TOKEN, version, transport=transport, retry_backoff=0), transport


async def exercise_every_operation(sim: ShopifySimulator, client: ShopifyClient) -> None:
    """Every public method of the client, against the simulator, so each document is sent."""
    customer = await client.find_or_create_customer("ann@example.com", first_name="Ann")
    assert await client.find_or_create_customer("ANN@example.com") == customer
    created = await client.create_gift_card(
        Decimal("40.00"), code="versioncard0001", note="v", customer_id=customer
    )
    card = created.card
    await client.credit_gift_card(card.id, Decimal("5.00"), "AUD", idempotency_key="v-c")
    await client.debit_gift_card(card.id, Decimal("2.50"), "AUD", idempotency_key="v-d")
    assert [t.idempotency_key for t in await client.list_gift_card_transactions(card.id)] == [
        "v-d",
        "v-c",
    ]
    assert (await client.get_gift_card(card.id)) is not None
    assert (await client.find_gift_card_by_code("versioncard0001")) is not None
    assert [c.id for c in await client.find_gift_cards_by_last_characters("0001")] == [card.id]
    since = card.created_at - timedelta(seconds=1)
    assert [c.id async for c in client.iter_gift_cards_updated_since(since)] == [card.id]
    await client.update_gift_card(card.id, note="updated")
    await client.send_gift_card_notification(card.id)
    order = sim.create_order([(card.id, Decimal("1.00"))], email="ann@example.com")
    fetched = await client.get_order(order["id"])
    assert fetched is not None and fetched.customer_email == "ann@example.com"
    assert [c.id async for c in client.bulk_export_gift_cards(poll_interval=0)] == [card.id]
    hook = await client.create_webhook_subscription(
        "orders/paid", "https://g.test/webhooks/shopify"
    )
    assert [s.id for s in await client.list_webhook_subscriptions()] == [hook]
    await client.delete_webhook_subscription(hook)
    await client.check_access()
    assert (await client.deactivate_gift_card(card.id)).enabled is False


@pytest.mark.parametrize("version", ["2026-07", "2026-10"])
async def test_every_request_is_valid_and_undeprecated_in_both_versions(version: str) -> None:
    sim = ShopifySimulator(access_token=TOKEN)
    client, transport = client_for(sim, version)
    try:
        await exercise_every_operation(sim, client)
    finally:
        await client.aclose()
    sent_operations = {body["operationName"] for body in transport.sent}
    # Every document but the look-ups of lost answers (covered by the respx wire tests).
    assert sent_operations == set(ALL_OPERATIONS) - {"BulkGiftCards", "BulkOperationsLive"}
    for body in transport.sent:
        assert request_problems(body["query"], body["variables"]) == [], body["operationName"]
        if body["operationName"] == "BulkOperationRunQuery":
            assert body["variables"]["query"] == BULK_GIFT_CARDS_QUERY
    assert set(sim.answered_versions) == {version}
    assert (client.answered_version, client.version_mismatch) == (version, False)


def mismatch_gauge(asked: str, answered: str) -> float | None:
    return REGISTRY.get_sample_value(
        "giftsync_shopify_api_version_mismatch", {"asked": asked, "answered": answered}
    )


async def test_the_answered_version_is_read_and_a_mismatch_reported() -> None:
    # Shopify has retired 2026-07: it answers with the oldest version it still serves.
    sim = ShopifySimulator(access_token=TOKEN, supported_versions=("2026-10",))
    client, _ = client_for(sim, "2026-07")
    try:
        assert client.answered_version is None
        await client.check_access()
        assert (client.answered_version, client.version_mismatch) == ("2026-10", True)
        assert mismatch_gauge("2026-07", "2026-10") == 1.0
        checks = await ShopifyHealth(client).checks()
    finally:
        await client.aclose()
    assert checks == {
        "shopify_access": {"ok": True, "severity": "error", "mode": "static"},
        "shopify_api_version": {
            "ok": False,
            "severity": "warning",
            "asked": "2026-07",
            "answered": "2026-10",
            "detail": "Shopify no longer serves 2026-07 and answers with 2026-10: set "
            "SHOPIFY_API_VERSION to a supported version",
        },
    }


async def test_a_matching_version_reads_zero_and_passes() -> None:
    sim = ShopifySimulator(access_token=TOKEN)
    client, _ = client_for(sim, "2026-10")
    try:
        checks = await ShopifyHealth(client).checks()
    finally:
        await client.aclose()
    assert mismatch_gauge("2026-10", "2026-10") == 0.0
    assert checks["shopify_api_version"] == {
        "ok": True,
        "severity": "warning",
        "asked": "2026-10",
        "answered": "2026-10",
    }


async def test_a_refused_static_token_is_an_error_and_the_header_is_still_read() -> None:
    sim = ShopifySimulator(access_token="shpat_some_other_token", supported_versions=("2026-10",))
    client, _ = client_for(sim, "2026-07")
    try:
        checks = await ShopifyHealth(client).checks()
    finally:
        await client.aclose()
    assert checks["shopify_access"] == {
        "ok": False,
        "severity": "error",
        "mode": "static",
        "code": "UNAUTHORIZED",
    }
    assert checks["shopify_api_version"]["answered"] == "2026-10"
    assert sim.unauthorized_count == 1


async def test_an_unreachable_shopify_is_a_warning() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = ShopifyClient(
        BASE,
        TOKEN,
        "2026-07",
        transport=httpx.MockTransport(refuse),
        retry_attempts=2,
        retry_backoff=0,
    )
    try:
        checks = await ShopifyHealth(client).checks()
    finally:
        await client.aclose()
    assert checks["shopify_access"] == {
        "ok": False,
        "severity": "warning",
        "mode": "static",
        "error": "ShopifyUnavailable",
    }


async def test_readiness_asks_shopify_at_most_once_a_minute() -> None:
    now = [0.0]
    sim = ShopifySimulator(access_token=TOKEN)
    client, transport = client_for(sim, "2026-07")
    health = ShopifyHealth(client, clock=lambda: now[0])
    try:
        first = await health.checks()
        now[0] = 59.0
        assert await health.checks() == first
        assert len(transport.sent) == 1
        now[0] = 60.0
        await health.checks()
    finally:
        await client.aclose()
    assert [body["operationName"] for body in transport.sent] == ["ShopCheck", "ShopCheck"]
