"""Queries on `card_links`: which upstream card (system, external id) is which giftsync card.

A link is unique per (system, external id) and per (card, system), so two flows racing to link
the same upstream card cannot both succeed; `insert_unless_taken` says who won.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.sql import sql


async def card_of(session: AsyncSession, system: str, external_id: str) -> uuid.UUID | None:
    """The giftsync card an upstream card is linked to, if any."""
    found: uuid.UUID | None = await session.scalar(
        sql("SELECT card_id FROM card_links WHERE system = :s AND external_id = :e"),
        {"s": system, "e": external_id},
    )
    return found


async def external_ids(session: AsyncSession, card_id: uuid.UUID) -> dict[str, str]:
    """The card's upstream ids by system."""
    rows = await session.execute(
        sql("SELECT system, external_id FROM card_links WHERE card_id = :c"), {"c": card_id}
    )
    return {row.system: row.external_id for row in rows.all()}


async def insert(
    session: AsyncSession,
    *,
    card_id: uuid.UUID,
    system: str,
    external_id: str,
    last4: str | None,
    code_hash: str | None,
    balance_minor: int,
) -> None:
    """The link of a card just created on `system`, enabled with `balance_minor`."""
    await session.execute(
        sql(
            """
            INSERT INTO card_links (card_id, system, external_id, code_last4, code_hash,
                                    last_seen_balance_minor, last_seen_status, last_seen_at)
            VALUES (:card, :system, :ext, :last4, :hash, :balance, 'enabled', now())
            """
        ),
        {
            "card": card_id,
            "system": system,
            "ext": external_id,
            "last4": last4,
            "hash": code_hash,
            "balance": balance_minor,
        },
    )


async def insert_unless_taken(
    session: AsyncSession,
    *,
    card_id: uuid.UUID,
    system: str,
    external_id: str,
    last4: str | None,
    code_hash: str | None,
    balance_minor: int,
    status: str,
) -> bool:
    """Restore a lost link; False when the card or the upstream card got linked meanwhile."""
    inserted = await session.scalar(
        sql(
            """
            INSERT INTO card_links (card_id, system, external_id, code_last4, code_hash,
                                    last_seen_balance_minor, last_seen_status, last_seen_at)
            VALUES (:card, :system, :ext, :last4, :hash, :balance, :status, now())
            ON CONFLICT DO NOTHING
            RETURNING id
            """
        ),
        {
            "card": card_id,
            "system": system,
            "ext": external_id,
            "last4": last4,
            "hash": code_hash,
            "balance": balance_minor,
            "status": status,
        },
    )
    return inserted is not None


async def record_seen(
    session: AsyncSession, card_id: uuid.UUID, system: str, balance_minor: int, status: str
) -> None:
    """What the card's `system` held when giftsync last read it (operators see it)."""
    await session.execute(
        sql(
            """
            UPDATE card_links SET last_seen_balance_minor = :b, last_seen_status = :s,
                                  last_seen_at = now()
            WHERE card_id = :c AND system = :sys
            """
        ),
        {"b": balance_minor, "s": status, "c": card_id, "sys": system},
    )


_VIEW = """
    SELECT card_id, system, external_id, code_last4, last_seen_balance_minor,
           last_seen_status, last_seen_at
    FROM card_links
"""


async def views_of_card(session: AsyncSession, card_id: uuid.UUID) -> list[Any]:
    """The card's links, by system, without any code hash."""
    rows = await session.execute(sql(_VIEW + " WHERE card_id = :c ORDER BY system"), {"c": card_id})
    return list(rows.all())


async def views_of_cards(session: AsyncSession, card_ids: Sequence[uuid.UUID]) -> list[Any]:
    """The links of several cards, by card and system, without any code hash."""
    rows = await session.execute(
        sql(_VIEW + " WHERE card_id = ANY(:ids) ORDER BY card_id, system"),
        {"ids": list(card_ids)},
    )
    return list(rows.all())
