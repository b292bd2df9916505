"""Builds the upstream clients the settings describe; one place, so wiring stays uniform."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.clients.lightspeed import LightspeedClient
from app.clients.onsite import OnSiteClient
from app.clients.shopify import SHOPIFY_TOKEN_PROVIDER, ShopifyClient
from app.clients.vii import ViiClient
from app.crypto import TokenSealer
from app.db.engine import SessionFactory
from app.db.tokens import DbTokenStore
from app.settings import PosKind, Settings


@dataclass
class Clients:
    shopify: ShopifyClient | None = None
    vii: ViiClient | None = None
    pos: LightspeedClient | OnSiteClient | None = None
    _all: list[Any] = field(default_factory=list)

    async def aclose(self) -> None:
        for client in self._all:
            await client.aclose()


def token_store(settings: Settings, sessions: SessionFactory, provider: str) -> DbTokenStore:
    """`oauth_tokens` for one provider, sealed with a key derived from PIN_ENCRYPTION_KEY."""
    key = settings.pin_encryption_key
    sealer = TokenSealer(key.get_secret_value()) if key is not None else None
    return DbTokenStore(sessions, provider, sealer=sealer)


def shopify_configured(settings: Settings) -> bool:
    """A shop to talk to, and a static token or the client credentials to get tokens with."""
    has_shop = bool(settings.shopify_shop_domain or settings.shopify_base_url)
    has_credentials = settings.shopify_admin_token is not None or bool(
        settings.shopify_client_id and settings.shopify_api_secret is not None
    )
    return has_shop and has_credentials


def build_clients(settings: Settings, sessions: SessionFactory) -> Clients:
    clients = Clients()
    if shopify_configured(settings):
        clients.shopify = ShopifyClient.from_settings(
            settings, token_store=token_store(settings, sessions, SHOPIFY_TOKEN_PROVIDER)
        )
    if settings.vii_base_url is not None:
        clients.vii = ViiClient.from_settings(settings)
    if settings.pos_kind is PosKind.RETAIL:
        clients.pos = LightspeedClient.from_settings(
            settings, token_store(settings, sessions, "lightspeed")
        )
    elif settings.pos_kind is PosKind.ONSITE:
        clients.pos = OnSiteClient.from_settings(settings)
    clients._all = [c for c in (clients.shopify, clients.vii, clients.pos) if c is not None]
    return clients
