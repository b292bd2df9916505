"""`build_pos`: the adapter the settings ask for, or None."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from app.clients.factory import Clients
from app.clients.lightspeed import LightspeedClient
from app.clients.onsite import OnSiteClient
from app.db.engine import SessionFactory
from app.settings import BalanceSign, PosKind
from app.sync.pos.factory import build_pos
from app.sync.pos.lightspeed import LightspeedPos
from app.sync.pos.onsite import OnSitePos
from tests.conftest import make_settings
from tests.memory_tokens import MemoryTokenStore


def lightspeed_client() -> LightspeedClient:
    return LightspeedClient(
        "1",
        "client",
        "secret",
        MemoryTokenStore(),
        initial_refresh_token=None,
        base_url="https://ls.test",
        token_url="https://ls.test/auth/oauth/token",
        balance_sign=BalanceSign.NEGATIVE,
        transport=httpx.MockTransport(lambda request: httpx.Response(500)),
    )


def onsite_client() -> OnSiteClient:
    return OnSiteClient("https://onsite.test", "user", "password", "app", None)


async def test_each_kind_gets_its_adapter(sessions: SessionFactory) -> None:
    retail = lightspeed_client()
    onsite = onsite_client()
    try:
        ls = build_pos(make_settings(pos_kind=PosKind.RETAIL), Clients(pos=retail), sessions)
        os_ = build_pos(make_settings(pos_kind=PosKind.ONSITE), Clients(pos=onsite), sessions)
    finally:
        await retail.aclose()
        await onsite.aclose()
    assert isinstance(ls, LightspeedPos) and ls.system == "lightspeed"
    assert isinstance(os_, OnSitePos) and os_.system == "onsite"


async def test_none_without_a_pos_or_its_client(sessions: SessionFactory) -> None:
    retail = lightspeed_client()
    try:
        assert (
            build_pos(make_settings(pos_kind=PosKind.NONE), Clients(pos=retail), sessions) is None
        )
        assert build_pos(make_settings(pos_kind=PosKind.RETAIL), Clients(), sessions) is None
        # A client of the other kind is a missing client, not a reason to guess.
        assert (
            build_pos(make_settings(pos_kind=PosKind.ONSITE), Clients(pos=retail), sessions) is None
        )
    finally:
        await retail.aclose()


async def test_onsite_without_its_keys_is_a_wiring_error(sessions: SessionFactory) -> None:
    onsite = onsite_client()
    settings = make_settings(pos_kind=PosKind.ONSITE).model_copy(
        update={"card_hash_key": None, "pin_encryption_key": SecretStr("x" * 40)}
    )
    try:
        with pytest.raises(ValueError, match="CARD_HASH_KEY"):
            build_pos(settings, Clients(pos=onsite), sessions)
    finally:
        await onsite.aclose()
