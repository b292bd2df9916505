"""What omni sync, backfill and reconcile need from a point of sale, whatever its kind.

Lightspeed R-Series keeps gift cards as credit accounts with a balance; OnSite has no gift card
resource at all (a card is a serial on invoice lines and payments), so its adapter keeps a
projection of balances in PostgreSQL built from the invoices it has seen. Everything in
`app/sync/` talks to a POS only through `PosGiftCards`, so both kinds obey the same rules.

Serials are card numbers (whoever knows one can spend the card), so they are never stored in
plain text: a keyed hash and the last 4, plus a sealed copy where a POS needs it for writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

PosSystem = Literal["lightspeed", "onsite"]
CardStatus = Literal["enabled", "disabled"]


@dataclass(frozen=True, slots=True)
class PosCard:
    """One gift card as the POS holds it now; balance in minor units, never negative."""

    external_id: str
    """The id giftsync stores in `card_links.external_id`: Lightspeed's creditAccountID, OnSite's serial hash."""
    serial: str = field(repr=False)
    balance_minor: int
    status: CardStatus
    customer_id: str | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class PosCustomer:
    email: str
    first_name: str | None
    last_name: str | None


@dataclass(frozen=True, slots=True)
class PosChange:
    """A card that changed at `changed_at` (a poller's cursor moves to the latest it saw)."""

    external_id: str
    changed_at: datetime


class PosGiftCards(Protocol):
    """One adapter per POS kind; every write is idempotent by its `reference`."""

    system: PosSystem
    live_reads: bool
    """False when `get_card` answers from giftsync's projection, fresh only after a poll."""

    def changes_since(self, since: datetime | None) -> AsyncIterator[PosChange]:
        """Cards changed at or after `since` (inclusive: callers overlap cursors), oldest first."""
        ...

    def iter_cards(self) -> AsyncIterator[PosCard]:
        """Every gift card the POS holds, read in pages (backfill and reconcile)."""
        ...

    async def get_card(self, external_id: str) -> PosCard | None: ...

    async def find_by_serial(self, serial: str) -> PosCard | None: ...

    async def create_card(
        self,
        serial: str,
        balance_minor: int,
        *,
        reference: str,
        note: str | None = None,
        customer_name: str | None = None,
    ) -> PosCard:
        """Create the card loaded with `balance_minor`; a retry with the same serial returns it."""
        ...

    async def move(self, external_id: str, amount_minor: int, *, reference: str) -> None:
        """Credit (> 0) or debit (< 0) the card once per `reference`, however often retried."""
        ...

    async def deactivate(self, external_id: str, *, reference: str) -> None:
        """Make the card unusable in store; repeating it is harmless."""
        ...

    async def customer(self, customer_id: str) -> PosCustomer | None:
        """The POS customer with an email, or None when unknown or without one."""
        ...
