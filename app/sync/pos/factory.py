"""The POS adapter the settings ask for, over the client `build_clients` made for it."""

from __future__ import annotations

from app.clients.factory import Clients
from app.clients.lightspeed import LightspeedClient
from app.clients.onsite import OnSiteClient
from app.crypto import SecretBox
from app.db.engine import SessionFactory
from app.settings import PosKind, Settings
from app.sync.pos.lightspeed import LightspeedPos
from app.sync.pos.onsite import OnSitePos
from app.sync.pos.protocol import PosGiftCards


def build_pos(
    settings: Settings, clients: Clients, sessions: SessionFactory
) -> PosGiftCards | None:
    """None when no POS is configured (`POS_KIND=none`) or its client is missing."""
    client = clients.pos
    if settings.pos_kind is PosKind.RETAIL and isinstance(client, LightspeedClient):
        return LightspeedPos(client)
    if settings.pos_kind is PosKind.ONSITE and isinstance(client, OnSiteClient):
        # The projection stores serials hashed and sealed; both keys are required outside the
        # sandbox (settings validation) and generated inside it, so a gap here is a wiring bug.
        missing = settings.missing("card_hash_key", "pin_encryption_key")
        if missing:
            raise ValueError(f"OnSite gift cards need {', '.join(missing)}")
        assert settings.card_hash_key is not None and settings.pin_encryption_key is not None
        return OnSitePos(
            client,
            sessions,
            card_hash_key=settings.card_hash_key.get_secret_value(),
            secret_box=SecretBox(settings.pin_encryption_key.get_secret_value()),
        )
    return None
