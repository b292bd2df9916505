"""Admin API tokens by the client credentials grant, against the Shopify simulator.

Clocks are injected (no sleeping, no timing thresholds): the simulator's token lifetime runs on
`Clock.seconds`, the client's renewal margin on `Clock.moment`, both the same instant.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr
from sqlalchemy import text

from app.clients.factory import token_store
from app.clients.shopify import (
    SHOPIFY_TOKEN_PROVIDER,
    ClientCredentialsTokens,
    ShopifyAuthError,
    ShopifyClient,
    ShopifyHealth,
    ShopifyUnavailable,
)
from app.crypto import TokenSealer
from app.db.engine import SessionFactory
from app.db.tokens import DbTokenStore, TokenStore
from app.sandbox.shopify import ShopifySimulator
from app.sandbox.shopify_access import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from tests.conftest import PIN_KEY_HEX, make_settings

BASE = "http://shopify.sim"
LIFETIME = 3600


class Clock:
    """One instant for both sides: the simulator reads seconds, the client a datetime."""

    def __init__(self) -> None:
        self.start = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
        self.elapsed = 0.0

    def seconds(self) -> float:
        return self.start.timestamp() + self.elapsed

    def moment(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds


def simulator(clock: Clock) -> ShopifySimulator:
    # No static token: only granted tokens open the API, as for a Dev Dashboard app.
    return ShopifySimulator(
        access_token=None,
        bucket_size=100_000,
        restore_rate=100_000.0,
        token_lifetime=LIFETIME,
        token_clock=clock.seconds,
    )


def granting_client(
    sim: ShopifySimulator,
    clock: Clock,
    *,
    store: TokenStore | None = None,
    secret: str = SANDBOX_CLIENT_SECRET,
) -> ShopifyClient:
    transport = httpx.ASGITransport(app=sim.app)
    tokens = ClientCredentialsTokens(
        BASE, SANDBOX_CLIENT_ID, secret, store=store, transport=transport, clock=clock.moment
    )
    return ShopifyClient(BASE, tokens, "2026-07", transport=transport, retry_backoff=0)


def grants(client: ShopifyClient) -> int:
    tokens = client._tokens
    assert isinstance(tokens, ClientCredentialsTokens)
    return tokens.grants


async def test_first_call_takes_a_token_and_later_calls_reuse_it() -> None:
    clock = Clock()
    sim = simulator(clock)
    card_id, _ = sim.create_gift_card(Decimal("10.00"))
    client = granting_client(sim, clock)
    try:
        cards = await asyncio.gather(*(client.get_gift_card(card_id) for _ in range(10)))
        clock.advance(LIFETIME - 301)  # still more than the 5-minute margin left
        assert await client.get_gift_card(card_id) is not None
    finally:
        await client.aclose()
    assert all(card is not None and card.id == card_id for card in cards)
    assert sim.access.tokens_issued == 1
    assert client.token_mode == "client_credentials"


async def test_expiry_during_a_burst_makes_exactly_one_renewal() -> None:
    clock = Clock()
    sim = simulator(clock)
    card_id, _ = sim.create_gift_card(Decimal("10.00"))
    client = granting_client(sim, clock)
    try:
        await client.get_gift_card(card_id)
        # Within the margin of expiry: the next calls all want a new token at once.
        clock.advance(LIFETIME - 60)
        cards = await asyncio.gather(*(client.get_gift_card(card_id) for _ in range(25)))
        # And when the old one has really run out, nothing is refused: it was renewed early.
        clock.advance(120)
        assert await client.get_gift_card(card_id) is not None
    finally:
        await client.aclose()
    assert all(card is not None for card in cards)
    assert sim.access.tokens_issued == 2
    assert sim.access.refused_grants == 0


async def test_a_401_mid_run_renews_once_and_retries_every_call() -> None:
    clock = Clock()
    sim = simulator(clock)
    card_id, _ = sim.create_gift_card(Decimal("50.00"))
    client = granting_client(sim, clock)
    try:
        await client.get_gift_card(card_id)
        # Shopify drops the token early (rotation, a secret change): the client cannot know.
        sim.access.expire_tokens()
        before = sim.request_count
        results = await asyncio.gather(
            *(client.get_gift_card(card_id) for _ in range(10)),
            client.debit_gift_card(card_id, Decimal("5.00"), "AUD", idempotency_key="after-401"),
        )
    finally:
        await client.aclose()
    assert sim.access.tokens_issued == 2
    # Every call refused with the old token was sent exactly once more, with the new one.
    assert sim.unauthorized_count >= 1
    assert sim.request_count - before == 11 + sim.unauthorized_count
    assert all(result is not None for result in results)
    # The refused debit was not applied, and the retried one only once.
    assert sim.card(card_id)["balance"] == Decimal("45.00")


async def test_a_second_401_is_a_refusal_not_a_loop() -> None:
    clock = Clock()
    sim = simulator(clock)
    card_id, _ = sim.create_gift_card(Decimal("1.00"))
    client = granting_client(sim, clock)
    try:
        await client.get_gift_card(card_id)
        sim.access.lifetime = 0  # every new token is dead on arrival
        sim.access.expire_tokens()
        with pytest.raises(ShopifyAuthError) as caught:
            await client.get_gift_card(card_id)
    finally:
        await client.aclose()
    assert caught.value.code == "UNAUTHORIZED"
    assert sim.access.tokens_issued == 2


async def test_a_revoked_app_is_an_error_in_the_readiness_check() -> None:
    clock = Clock()
    sim = simulator(clock)
    client = granting_client(sim, clock)
    health = ShopifyHealth(client, clock=clock.seconds)
    try:
        assert (await health.checks())["shopify_access"] == {
            "ok": True,
            "severity": "error",
            "mode": "client_credentials",
        }
        sim.access.revoke_app()
        clock.advance(61)  # past the readiness cache
        checks = await health.checks()
    finally:
        await client.aclose()
    assert checks["shopify_access"] == {
        "ok": False,
        "severity": "error",
        "mode": "client_credentials",
        "code": "app_not_installed",
    }
    assert sim.access.refused_grants == 1


async def test_wrong_secret_is_refused_and_never_shown() -> None:
    clock = Clock()
    sim = simulator(clock)
    wrong = "shpss_wrong_but_long_enough_0001"
    client = granting_client(sim, clock, secret=wrong)
    try:
        with structlog.testing.capture_logs() as events, pytest.raises(ShopifyAuthError) as caught:
            await client.get_gift_card("1")
    finally:
        await client.aclose()
    assert caught.value.code == "invalid_client"
    assert "SHOPIFY_API_SECRET" in str(caught.value)
    assert wrong not in str(caught.value) + repr(events) + repr(client._tokens)
    assert sim.access.tokens_issued == 0


async def test_token_endpoint_down_is_unavailable_and_retried() -> None:
    calls = 0

    def down(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, headers={"Retry-After": "0"})

    transport = httpx.MockTransport(down)
    tokens = ClientCredentialsTokens(BASE, "cid", "secret", transport=transport)
    client = ShopifyClient(
        BASE, tokens, "2026-07", transport=transport, retry_attempts=3, retry_backoff=0
    )
    try:
        with pytest.raises(ShopifyUnavailable):
            await client.get_gift_card("1")
    finally:
        await client.aclose()
    # Only the token endpoint was asked, once per attempt: the GraphQL request never went out.
    assert calls == 3


async def test_the_grant_is_form_encoded_as_shopify_documents() -> None:
    seen: list[httpx.Request] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/admin/oauth/access_token":
            body = {
                "access_token": "shpat_granted",
                "scope": "read_gift_cards",
                "expires_in": 86399,
            }
            return httpx.Response(200, json=body)
        assert request.headers["X-Shopify-Access-Token"] == "shpat_granted"
        return httpx.Response(200, json={"data": {"giftCard": None}})

    transport = httpx.MockTransport(endpoint)
    tokens = ClientCredentialsTokens(BASE, "cid", "csecret", transport=transport)
    client = ShopifyClient(BASE, tokens, "2026-07", transport=transport)
    try:
        assert await client.get_gift_card("1") is None
    finally:
        await client.aclose()
    grant = seen[0]
    assert (grant.method, str(grant.url)) == ("POST", f"{BASE}/admin/oauth/access_token")
    assert grant.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert grant.content == b"grant_type=client_credentials&client_id=cid&client_secret=csecret"


async def test_two_processes_sharing_the_database_renew_once(sessions: SessionFactory) -> None:
    clock = Clock()
    sim = simulator(clock)
    card_id, _ = sim.create_gift_card(Decimal("10.00"))
    sealer = TokenSealer(PIN_KEY_HEX)
    replicas = [
        granting_client(
            sim, clock, store=DbTokenStore(sessions, SHOPIFY_TOKEN_PROVIDER, sealer=sealer)
        )
        for _ in range(2)
    ]
    try:
        first = await asyncio.gather(
            *(replica.get_gift_card(card_id) for replica in replicas for _ in range(5))
        )
        assert sim.access.tokens_issued == 1
        assert sorted(grants(replica) for replica in replicas) == [0, 1]
        # The token dies early: both replicas are refused at once and renew once between them.
        sim.access.expire_tokens()
        second = await asyncio.gather(
            *(replica.get_gift_card(card_id) for replica in replicas for _ in range(5))
        )
        assert sim.access.tokens_issued == 2
        # A third process starting now takes the stored token rather than asking for one.
        late = granting_client(
            sim, clock, store=DbTokenStore(sessions, SHOPIFY_TOKEN_PROVIDER, sealer=sealer)
        )
        try:
            assert await late.get_gift_card(card_id) is not None
        finally:
            await late.aclose()
        assert sim.access.tokens_issued == 2
    finally:
        for replica in replicas:
            await replica.aclose()
    assert all(card is not None for card in first + second)
    async with sessions() as session:
        rows = (
            await session.execute(text("SELECT provider, access_token FROM oauth_tokens"))
        ).all()
    assert [(provider, value.startswith("gs1:")) for provider, value in rows] == [("shopify", True)]


def settings_for(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "shopify_shop_domain": "demo.myshopify.com",
        "shopify_client_id": "cid-123",
        "currency": "NZD",
    }
    values.update(overrides)
    return make_settings(**values)


async def test_from_settings_picks_the_token_source(sessions: SessionFactory) -> None:
    granting = ShopifyClient.from_settings(
        settings_for(), token_store=token_store(settings_for(), sessions, "shopify")
    )
    legacy = ShopifyClient.from_settings(
        settings_for(shopify_admin_token=SecretStr("shpat_legacy_token_value"))
    )
    try:
        assert (granting.token_mode, legacy.token_mode) == ("client_credentials", "static")
        assert (granting.currency, granting.api_version) == ("NZD", "2026-07")
        assert "shpss_test" not in repr(vars(granting)) + repr(vars(granting._tokens))
        assert "shpat_legacy_token_value" not in repr(vars(legacy)) + repr(vars(legacy._tokens))
    finally:
        await granting.aclose()
        await legacy.aclose()
