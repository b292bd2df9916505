"""The listings a backfill pass walks: Shopify's export spooled to disk, the POS card pages,
each card keyed by its place in the listing so a resumed pass can skip to its watermark."""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import IO, Any, TypeVar

from app.clients.shopify import ShopifyClient, ShopifyGiftCard
from app.sync.backfill.progress import SortKey

Item = TypeVar("Item")


def sort_key(external_id: str) -> SortKey:
    """A card's place in its listing: numeric ids by value, hashes by text."""
    tail = external_id.rsplit("/", 1)[-1]
    return (len(tail), tail)


class ShopifySnapshot:
    """Every Shopify card from one bulk export, spooled to a temporary file, read back in order.

    Copying a card to Lightspeed takes about ten seconds at its default limits, so reading the
    export as the writes go would hold the download open for days; the file (no codes in it,
    Shopify never exports them) is written at network speed and read one line at a time.
    """

    def __init__(self, spool: IO[str], count: int, taken_at: datetime) -> None:
        self._spool = spool
        self.count = count
        self.taken_at = taken_at

    @classmethod
    async def take(cls, shopify: ShopifyClient, *, poll_interval: float) -> ShopifySnapshot:
        spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (closed by close())
        taken_at = datetime.now(UTC)
        count = 0
        try:
            async for card in shopify.bulk_export_gift_cards(poll_interval=poll_interval):
                spool.write(_card_line(card))
                spool.write("\n")
                count += 1
        except BaseException:
            spool.close()
            raise
        return cls(spool, count, taken_at)

    def cards(self) -> Iterator[ShopifyGiftCard]:
        self._spool.seek(0)
        for line in self._spool:
            if line.strip():
                yield _card_of(line)

    def close(self) -> None:
        self._spool.close()


def _card_line(card: ShopifyGiftCard) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, date | datetime):
            return value.isoformat()
        return value

    return json.dumps({name: plain(getattr(card, name)) for name in _CARD_FIELDS})


_CARD_FIELDS = tuple(ShopifyGiftCard.__dataclass_fields__)


def _card_of(line: str) -> ShopifyGiftCard:
    raw = json.loads(line)

    def moment(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    created_at = moment(raw["created_at"])
    updated_at = moment(raw["updated_at"])
    assert created_at is not None and updated_at is not None
    return ShopifyGiftCard(
        id=raw["id"],
        last_characters=raw["last_characters"],
        balance=Decimal(raw["balance"]),
        currency=raw["currency"],
        initial_value=Decimal(raw["initial_value"]),
        enabled=bool(raw["enabled"]),
        expires_on=date.fromisoformat(raw["expires_on"]) if raw["expires_on"] else None,
        deactivated_at=moment(raw["deactivated_at"]),
        created_at=created_at,
        updated_at=updated_at,
        note=raw["note"],
        customer_id=raw["customer_id"],
        order_id=raw["order_id"],
    )


async def from_iterator(cards: Iterator[ShopifyGiftCard]) -> AsyncIterator[ShopifyGiftCard]:
    for card in cards:
        yield card


async def keyed(
    items: AsyncIterator[Item], external_id: Callable[[Item], str]
) -> AsyncIterator[tuple[SortKey, Item]]:
    async for item in items:
        yield sort_key(external_id(item)), item
