"""OAuth tokens at rest (`oauth_tokens`): sealed, bound to provider and column, and rows written
before sealing read once and sealed at once, so no plain token stays in the table."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import text

from app.clients.factory import token_store
from app.crypto import TokenSealer
from app.db.engine import SessionFactory
from app.db.tokens import DbTokenStore, TokenSet
from app.sandbox.lightspeed import LightspeedSimulator
from tests.clients.test_lightspeed import sim_client
from tests.conftest import PIN_KEY_HEX, make_settings

EXPIRES = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


async def raw_rows(sessions: SessionFactory) -> dict[str, tuple[str | None, str | None]]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT provider, access_token, refresh_token FROM oauth_tokens")
        )
        return {provider: (access, refresh) for provider, access, refresh in rows}


def plain_values(rows: dict[str, tuple[str | None, str | None]]) -> list[str]:
    return [v for pair in rows.values() for v in pair if v is not None and not v.startswith("gs1:")]


async def test_saved_tokens_are_sealed_and_load_back(sessions: SessionFactory) -> None:
    sealer = TokenSealer(PIN_KEY_HEX)
    lightspeed = DbTokenStore(sessions, "lightspeed", sealer=sealer)
    shopify = DbTokenStore(sessions, "shopify", sealer=sealer)
    await lightspeed.save(TokenSet("ls-access-1", "ls-refresh-1", EXPIRES))
    await shopify.save(TokenSet("shpat_granted_1", None, EXPIRES))
    rows = await raw_rows(sessions)
    assert plain_values(rows) == []
    assert rows["shopify"][1] is None  # client credentials: no refresh token at all
    assert "ls-refresh-1" not in repr(rows) and "shpat_granted_1" not in repr(rows)
    assert await lightspeed.load() == TokenSet("ls-access-1", "ls-refresh-1", EXPIRES)
    assert await shopify.load() == TokenSet("shpat_granted_1", None, EXPIRES)


async def test_a_plain_row_is_read_once_and_sealed_at_once(sessions: SessionFactory) -> None:
    # As giftsync wrote it before sealing existed.
    await DbTokenStore(sessions, "lightspeed").save(TokenSet("old-access", "old-refresh", None))
    assert plain_values(await raw_rows(sessions)) == ["old-access", "old-refresh"]
    store = DbTokenStore(sessions, "lightspeed", sealer=TokenSealer(PIN_KEY_HEX))
    assert await store.load() == TokenSet("old-access", "old-refresh", None)
    assert plain_values(await raw_rows(sessions)) == []
    assert await store.load() == TokenSet("old-access", "old-refresh", None)


async def test_resealing_never_overwrites_a_newer_save(sessions: SessionFactory) -> None:
    store = DbTokenStore(sessions, "lightspeed", sealer=TokenSealer(PIN_KEY_HEX))
    await store.save(TokenSet("new-access", "new-refresh", EXPIRES))
    # A reseal prepared from an older plain read of the row finds it changed and does nothing.
    await store._reseal("old-access", "old-refresh", TokenSet("old-access", "old-refresh", None))
    assert await store.load() == TokenSet("new-access", "new-refresh", EXPIRES)


async def test_a_sealed_value_opens_only_for_its_provider_and_key(
    sessions: SessionFactory,
) -> None:
    sealer = TokenSealer(PIN_KEY_HEX)
    await DbTokenStore(sessions, "lightspeed", sealer=sealer).save(TokenSet("a", "r", None))
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO oauth_tokens (provider, access_token, refresh_token) "
                "SELECT 'shopify', access_token, NULL FROM oauth_tokens"
            )
        )
    with pytest.raises(ValueError, match="does not open"):
        await DbTokenStore(sessions, "shopify", sealer=sealer).load()
    with pytest.raises(ValueError, match="does not open"):
        await DbTokenStore(sessions, "lightspeed", sealer=TokenSealer("ab" * 32)).load()
    with pytest.raises(ValueError, match="PIN_ENCRYPTION_KEY"):
        await DbTokenStore(sessions, "lightspeed").load()


async def test_lightspeed_rotation_leaves_no_plain_token(sessions: SessionFactory) -> None:
    """The running service: the first refresh token saved plain (as the runtime seeds it), then
    the client built by the factory rotates both tokens through the sealed store."""
    sim = LightspeedSimulator(drip_rate=100)
    card_id = sim.add_gift_card("GIFT00000042", Decimal("5"))
    first = sim.issue_refresh_token()
    await DbTokenStore(sessions).save(TokenSet(None, first, None))
    store = token_store(make_settings(), sessions, "lightspeed")
    client = sim_client(sim, store, refresh_token=first)
    try:
        assert await client.get_gift_card(card_id) is not None
    finally:
        await client.aclose()
    rows = await raw_rows(sessions)
    assert list(rows) == ["lightspeed"]
    assert plain_values(rows) == []
    assert sim.refresh_count == 1
