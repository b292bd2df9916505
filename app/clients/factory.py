"""Builds the upstream clients the settings describe; one place, so wiring stays uniform."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.clients.lightspeed import LightspeedClient
from app.clients.onsite import OnSiteClient
from app.clients.shopify import ShopifyClient
from app.clients.vii import ViiClient
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


def build_clients(settings: Settings, sessions: SessionFactory) -> Clients:
    clients = Clients()
    if settings.shopify_admin_token is not None and (
        settings.shopify_shop_domain or settings.shopify_base_url
    ):
        clients.shopify = ShopifyClient.from_settings(settings)
    if settings.vii_base_url is not None:
        clients.vii = ViiClient.from_settings(settings)
    if settings.pos_kind is PosKind.RETAIL:
        clients.pos = LightspeedClient.from_settings(settings, DbTokenStore(sessions))
    elif settings.pos_kind is PosKind.ONSITE:
        clients.pos = OnSiteClient.from_settings(settings)
    clients._all = [c for c in (clients.shopify, clients.vii, clients.pos) if c is not None]
    return clients
