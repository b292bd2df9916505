"""What every shadow card step works with: the database, the card gate, the two upstreams."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.clients.shopify import ShopifyClient
from app.clients.vii import ViiClient
from app.crypto import SecretBox
from app.db.engine import SessionFactory
from app.settings import Settings
from app.sync.shadow.gate import CardGate
from app.sync.shadow.secrets import ShadowSecrets


@dataclass(frozen=True)
class ApplyRequest:
    card_number: str
    pin: str | None
    cart_total: Decimal
    checkout_token: str | None
    client: str
    """Who is asking, for PIN limits: an address, or the signed shop and customer (app proxy)."""
    apply_token: str | None = None


@dataclass(frozen=True)
class ShadowDeps:
    sessions: SessionFactory
    gate: CardGate
    settings: Settings
    vii: ViiClient
    shopify: ShopifyClient
    secrets: ShadowSecrets

    @classmethod
    def build(
        cls,
        sessions: SessionFactory,
        gate: CardGate,
        settings: Settings,
        vii: ViiClient,
        shopify: ShopifyClient,
    ) -> ShadowDeps:
        assert settings.pin_encryption_key is not None
        assert settings.card_hash_key is not None
        box = SecretBox(settings.pin_encryption_key.get_secret_value())
        return cls(
            sessions,
            gate,
            settings,
            vii,
            shopify,
            ShadowSecrets(box, settings.card_hash_key.get_secret_value()),
        )

    @property
    def currency(self) -> str:
        return self.settings.currency


def bound_session(connection: AsyncConnection) -> AsyncSession:
    """A session on the gate's connection: each `session.begin()` block commits on its own,
    while the card stays held by that connection's advisory lock."""
    return AsyncSession(bind=connection, expire_on_commit=False)
