"""The gift card liability a merchant carries, by system and by card state, and its CSV export.

Balances are what giftsync last saw in each system (`card_links.last_seen_balance_minor`, kept
by every sync and reconcile), the agreed balance is `sync_base`, and open Vii holds are the
hold amounts of shadow cards not yet settled. Totals count what can be spent: active cards, and
in each system only where that system has not disabled the card. Totals that should agree and do not are flagged: Shopify against the POS for
omni cards (and both against the agreed balance), and Shopify shadow cards against the Vii
holds that stand behind them.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import SessionFactory, transaction
from app.db.sql import sql
from app.money import format_minor

DISAGREEING_SHOWN = 50
CSV_COLUMNS = (
    "card_id",
    "kind",
    "state",
    "currency",
    "shopify",
    "shopify_status",
    "pos_system",
    "pos",
    "pos_status",
    "vii_hold",
    "agreed",
    "disagrees",
)

_PER_CARD = """
    SELECT g.id, g.kind, g.state, g.currency,
           shop.last_seen_balance_minor AS shopify, shop.last_seen_status AS shopify_status,
           pos.system AS pos_system, pos.last_seen_balance_minor AS pos,
           pos.last_seen_status AS pos_status,
           COALESCE(h.hold_minor, 0) AS vii_hold,
           b.balance_minor AS agreed
    FROM gift_cards g
    LEFT JOIN card_links shop ON shop.card_id = g.id AND shop.system = 'shopify'
    LEFT JOIN card_links pos ON pos.card_id = g.id AND pos.system IN ('lightspeed', 'onsite')
    LEFT JOIN (
        SELECT card_id, SUM(hold_amount_minor) AS hold_minor FROM shadow_cards
        WHERE settled_at IS NULL GROUP BY card_id
    ) h ON h.card_id = g.id
    LEFT JOIN sync_base b ON b.card_id = g.id
"""


@dataclass(frozen=True)
class CardLiability:
    id: uuid.UUID
    kind: str
    state: str
    currency: str
    shopify: int | None
    shopify_status: str | None
    pos_system: str | None
    pos: int | None
    pos_status: str | None
    vii_hold: int
    agreed: int | None

    @property
    def shopify_outstanding(self) -> int:
        return 0 if self.shopify_status == "disabled" else self.shopify or 0

    @property
    def pos_outstanding(self) -> int:
        return 0 if self.pos_status == "disabled" else self.pos or 0

    @property
    def disagrees(self) -> bool:
        """An active card whose systems do not hold what they should."""
        if self.state != "active":
            return False
        if self.kind == "omni":
            if self.shopify is None or self.pos is None:
                return False  # one side only: reconcile reports the missing link
            return self.shopify_outstanding != self.pos_outstanding
        return self.shopify_outstanding > self.vii_hold

    def csv_row(self) -> list[str]:
        return [
            str(self.id),
            self.kind,
            self.state,
            self.currency,
            _money(self.shopify),
            self.shopify_status or "",
            self.pos_system or "",
            _money(self.pos),
            self.pos_status or "",
            format_minor(self.vii_hold),
            _money(self.agreed),
            "yes" if self.disagrees else "no",
        ]


def _money(minor: int | None) -> str:
    return "" if minor is None else format_minor(minor)


@dataclass
class Totals:
    """Active cards of one currency, in minor units."""

    currency: str
    shopify_omni: int = 0
    shopify_shadow: int = 0
    pos: int = 0
    vii_holds: int = 0
    agreed: int = 0
    cards: int = 0
    flags: list[str] = field(default_factory=list)

    def add(self, card: CardLiability) -> None:
        self.cards += 1
        if card.kind == "omni":
            self.shopify_omni += card.shopify_outstanding
            self.pos += card.pos_outstanding
            self.agreed += card.agreed or 0
        else:
            self.shopify_shadow += card.shopify_outstanding
        self.vii_holds += card.vii_hold

    def judge(self, has_pos: bool) -> None:
        if has_pos and self.shopify_omni != self.pos:
            self.flags.append(
                f"Shopify ({format_minor(self.shopify_omni)}) and POS ({format_minor(self.pos)}) "
                f"differ by {format_minor(self.shopify_omni - self.pos)} {self.currency}"
            )
        if self.agreed != self.shopify_omni:
            self.flags.append(
                f"Shopify ({format_minor(self.shopify_omni)}) and the agreed balances "
                f"({format_minor(self.agreed)}) differ by "
                f"{format_minor(self.shopify_omni - self.agreed)} {self.currency}"
            )
        if self.shopify_shadow > self.vii_holds:
            self.flags.append(
                f"Shopify shadow cards ({format_minor(self.shopify_shadow)}) exceed the open "
                f"Vii holds ({format_minor(self.vii_holds)}) {self.currency}"
            )


@dataclass(frozen=True)
class StateRow:
    kind: str
    state: str
    currency: str
    cards: int
    shopify: int
    pos: int
    vii_hold: int


@dataclass
class Report:
    totals: list[Totals]
    by_state: list[StateRow]
    disagreeing: list[CardLiability]
    disagreeing_count: int

    @property
    def flagged(self) -> bool:
        return any(t.flags for t in self.totals) or self.disagreeing_count > 0


async def _cards(session: AsyncSession) -> AsyncIterator[CardLiability]:
    result = await session.stream(
        sql(f"{_PER_CARD} ORDER BY g.created_at, g.id"),
        execution_options={"yield_per": 2000},
    )
    async for row in result:
        yield CardLiability(*row)


async def report(sessions: SessionFactory, *, has_pos: bool) -> Report:
    """Totals by system and by state, and the first cards whose systems disagree."""
    totals: dict[str, Totals] = {}
    states: dict[tuple[str, str, str], list[int]] = {}
    disagreeing: list[CardLiability] = []
    count = 0
    async with transaction(sessions) as session:
        async for card in _cards(session):
            key = (card.kind, card.state, card.currency)
            row = states.setdefault(key, [0, 0, 0, 0])
            row[0] += 1
            row[1] += card.shopify_outstanding
            row[2] += card.pos_outstanding
            row[3] += card.vii_hold
            if card.state == "active":
                totals.setdefault(card.currency, Totals(card.currency)).add(card)
            if card.disagrees:
                count += 1
                if len(disagreeing) < DISAGREEING_SHOWN:
                    disagreeing.append(card)
    for total in totals.values():
        total.judge(has_pos)
    return Report(
        totals=[totals[c] for c in sorted(totals)],
        by_state=[StateRow(*key, *values) for key, values in sorted(states.items())],
        disagreeing=disagreeing,
        disagreeing_count=count,
    )


async def csv_lines(sessions: SessionFactory) -> AsyncIterator[str]:
    """One header line, then one line per card (every state), streamed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    async with transaction(sessions) as session:
        async for card in _cards(session):
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(card.csv_row())
            yield buffer.getvalue()
