"""The sandbox over real sockets: every client, built from settings, reaches its simulator."""

from __future__ import annotations

from decimal import Decimal

from app.clients.factory import build_clients
from app.clients.lightspeed import LightspeedClient
from app.clients.onsite import OnSiteClient
from app.db.engine import SessionFactory
from app.db.tokens import DbTokenStore, TokenSet
from app.sandbox.runner import point_settings_at, seed_all, start_sandbox
from app.settings import PosKind
from tests.conftest import make_settings


async def test_sandbox_serves_every_simulator_and_clients_reach_them(
    sessions: SessionFactory,
) -> None:
    sandbox = await start_sandbox(make_settings())
    try:
        lines = seed_all(sandbox)
        assert any("Vii card" in line for line in lines)
        settings = point_settings_at(make_settings(pos_kind=PosKind.RETAIL), sandbox)
        assert settings.lightspeed_refresh_token is not None
        await DbTokenStore(sessions).save(
            TokenSet(None, settings.lightspeed_refresh_token.get_secret_value(), None)
        )
        clients = build_clients(settings, sessions)
        try:
            assert clients.vii is not None and clients.shopify is not None
            balance = await clients.vii.check_balance("6280001234567890", "1234")
            assert balance.available == Decimal("50.00")
            assert await clients.shopify.find_gift_cards_by_last_characters("zzzz") == []
            assert isinstance(clients.pos, LightspeedClient)
            cards = [card async for card in clients.pos.iter_gift_cards()]
            assert any(card.balance == Decimal("100.00") for card in cards)
            # The sandbox's settings name the simulated merchant's correct set-up.
            assert [c.name for c in await clients.pos.setup_checks() if not c.ok] == []
        finally:
            await clients.aclose()
        onsite_settings = point_settings_at(make_settings(pos_kind=PosKind.ONSITE), sandbox)
        onsite = build_clients(onsite_settings, sessions)
        try:
            assert isinstance(onsite.pos, OnSiteClient)
            assert await onsite.pos.gift_card_balance("ONSITE0001") == Decimal("50.00")
            # Strict reading: no payment-methods resource, so that check can only warn.
            failed = {c.name: c.severity for c in await onsite.pos.setup_checks() if not c.ok}
            assert failed == {"onsite_payment_method": "warning"}
        finally:
            await onsite.aclose()
    finally:
        await sandbox.stop()
