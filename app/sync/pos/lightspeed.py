"""Lightspeed R-Series behind `PosGiftCards`: a gift card is a credit account, moved by sales.

The card's id in giftsync is Lightspeed's `creditAccountID`. Balances come from the client,
which has already resolved the account's balance sign (`LIGHTSPEED_BALANCE_SIGN`). Every
balance move is a completed sale whose gift card payment carries the caller's reference as
`remoteReference`; the client looks the reference up before sending, so a retried move or
create never applies twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from app.clients.lightspeed import (
    LightspeedClient,
    LightspeedUnavailable,
    LsGiftCard,
)
from app.logging import get_logger
from app.money import CENT, from_minor, to_minor
from app.sync.pos.protocol import PosCard, PosChange, PosCustomer, PosSystem

log = get_logger(__name__)

# Lightspeed's incremental filter the client sends is `timeStamp > cursor`; stepping the cursor
# back by the smallest unit the API renders makes it `>= cursor`, as the protocol promises.
_INCLUSIVE_STEP = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LightspeedPos:
    """`PosGiftCards` over a `LightspeedClient`."""

    system: PosSystem = "lightspeed"
    live_reads: bool = True

    def __init__(self, client: LightspeedClient) -> None:
        self._client = client

    # ---- reads ----

    async def changes_since(self, since: datetime | None) -> AsyncIterator[PosChange]:
        """Credit accounts touched at or after `since`, and cards paid with since then.

        A sale is not known to bump its credit account's `timeStamp` (UPSTREAMS), so gift card
        sale payments are followed as well. Both lists are read whole before anything is
        yielded: each card is reported once, at the latest time either list saw it, in time
        order, so a caller advancing its cursor as it goes never skips a card.
        """
        after = _aware(since) - _INCLUSIVE_STEP if since is not None else None
        latest: dict[str, datetime] = {}

        def seen(external_id: str, at: datetime) -> None:
            if external_id not in latest or at > latest[external_id]:
                latest[external_id] = at

        async for card in self._client.iter_gift_cards(since=after, include_archived=True):
            seen(card.credit_account_id, card.time_stamp)
        async for payment in self._client.iter_gift_card_payments(since=after or _EPOCH):
            seen(payment.credit_account_id, payment.time_stamp)
        for external_id, changed_at in sorted(latest.items(), key=_oldest_first):
            yield PosChange(external_id=external_id, changed_at=changed_at)

    async def iter_cards(self) -> AsyncIterator[PosCard]:
        # Archived cards too: their status is what tells the other side to deactivate.
        async for card in self._client.iter_gift_cards(include_archived=True):
            yield _card(card)

    async def get_card(self, external_id: str) -> PosCard | None:
        if not _is_id(external_id):
            return None
        card = await self._client.get_gift_card(external_id)
        return _card(card) if card is not None else None

    async def find_by_serial(self, serial: str) -> PosCard | None:
        if not serial.strip():
            return None
        card = await self._client.get_gift_card_by_code(serial)
        return _card(card) if card is not None else None

    async def customer(self, customer_id: str) -> PosCustomer | None:
        if not _is_id(customer_id):
            return None
        found = await self._client.get_customer(customer_id)
        if found is None or found.email is None:
            return None
        return PosCustomer(
            email=found.email, first_name=found.first_name, last_name=found.last_name
        )

    # ---- writes ----

    async def create_card(
        self,
        serial: str,
        balance_minor: int,
        *,
        reference: str,
        note: str | None = None,
        customer_name: str | None = None,
    ) -> PosCard:
        """Create the card (code = serial) loaded once with `{reference}:load`.

        The client does it in the documented minimum (a CreditAccount POST and one completed
        sale), looks nothing up for a card it has just made, and completes a card an earlier
        attempt made (the serial is giftsync's to choose, DESIGN 1.A).
        """
        if balance_minor < 0:
            raise ValueError("a new card's balance must not be negative")
        if not reference.strip():
            raise ValueError("reference must not be empty")
        card = await self._client.create_loaded_gift_card(
            serial,
            from_minor(balance_minor),
            reference=f"{reference}:load",
            name=customer_name,
            description=note,
        )
        return _card(card)

    async def move(self, external_id: str, amount_minor: int, *, reference: str) -> None:
        """Load (> 0) or redeem (< 0) once per reference; a zero move changes nothing."""
        _require_id(external_id)
        if amount_minor == 0:
            return
        amount = from_minor(abs(amount_minor))
        if amount_minor > 0:
            await self._client.load_gift_card(external_id, amount, reference=reference)
        else:
            await self._client.redeem_gift_card(external_id, amount, reference=reference)

    async def deactivate(self, external_id: str, *, reference: str) -> None:
        """Archive the credit account: it can no longer pay, and its money stays on record.

        Archiving is idempotent upstream, so `reference` is not needed to make it so.
        """
        _require_id(external_id)
        await self._client.archive_gift_card(external_id)


def _card(card: LsGiftCard) -> PosCard:
    if card.balance < 0:
        # Money on a gift card is never negative: the sign setting does not match the account,
        # and syncing would turn every card's money into a debt. Stop rather than sync.
        raise LightspeedUnavailable(
            "Lightspeed gift card shows a negative balance: check LIGHTSPEED_BALANCE_SIGN"
        )
    return PosCard(
        external_id=card.credit_account_id,
        serial=card.code,
        balance_minor=_minor(card.balance),
        status="disabled" if card.archived else "enabled",
        customer_id=card.customer_id,
        updated_at=card.time_stamp,
    )


def _minor(amount: Decimal) -> int:
    if amount != amount.quantize(CENT):
        raise LightspeedUnavailable("Lightspeed gift card balance has more than two decimals")
    return to_minor(amount)


def _is_id(value: str) -> bool:
    # Lightspeed ids are decimal; anything else must never reach a URL path.
    return value.isascii() and value.isdigit()


def _require_id(external_id: str) -> None:
    if not _is_id(external_id):
        raise ValueError("a Lightspeed gift card id is a decimal creditAccountID")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _oldest_first(item: tuple[str, datetime]) -> tuple[datetime, int, str]:
    external_id, changed_at = item
    return changed_at, len(external_id), external_id
