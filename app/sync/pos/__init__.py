"""The point of sale behind omni cards: one protocol, one adapter per POS kind.

- `protocol.py`: `PosGiftCards`, what omni sync, backfill and reconcile may ask of a POS;
- `lightspeed.py`: Lightspeed R-Series, where a gift card is a credit account;
- `onsite.py`: Lightspeed OnSite, over a balance projection built from invoices;
- `factory.py`: the adapter the settings ask for; `setup.py`: the POS set-up checks.
"""

from app.sync.pos.protocol import (
    CardStatus,
    PosCard,
    PosChange,
    PosCustomer,
    PosGiftCards,
    PosSystem,
)

__all__ = ["CardStatus", "PosCard", "PosChange", "PosCustomer", "PosGiftCards", "PosSystem"]
