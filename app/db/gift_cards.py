"""Queries on `gift_cards`: giftsync's own card, whatever systems hold it."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.sql import sql


async def insert_omni(
    session: AsyncSession, card_id: uuid.UUID, currency: str, email: str | None
) -> None:
    await session.execute(
        sql(
            "INSERT INTO gift_cards (id, kind, currency, customer_email) "
            "VALUES (:id, 'omni', :currency, :email)"
        ),
        {"id": card_id, "currency": currency, "email": email},
    )


async def kind_of(session: AsyncSession, card_id: uuid.UUID) -> str | None:
    kind: str | None = await session.scalar(
        sql("SELECT kind FROM gift_cards WHERE id = :c"), {"c": card_id}
    )
    return kind


async def mark_deactivated(session: AsyncSession, card_id: uuid.UUID) -> None:
    await session.execute(
        sql("UPDATE gift_cards SET state = 'deactivated' WHERE id = :c"), {"c": card_id}
    )


async def known(session: AsyncSession, card_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Which of `card_ids` are giftsync cards."""
    rows = await session.execute(
        sql("SELECT id FROM gift_cards WHERE id = ANY(:ids)"), {"ids": list(card_ids)}
    )
    return {row[0] for row in rows}


async def get(session: AsyncSession, card_id: uuid.UUID) -> Any:
    """(id, kind, currency, state), or None."""
    return (
        await session.execute(
            sql("SELECT id, kind, currency, state FROM gift_cards WHERE id = :c"),
            {"c": card_id},
        )
    ).first()


_FIND = """
    SELECT g.id, g.kind, g.state, g.currency, g.customer_email, b.balance_minor
    FROM gift_cards g
    LEFT JOIN sync_base b ON b.card_id = g.id
    WHERE {where}
    ORDER BY g.created_at DESC, g.id
    LIMIT :limit
"""
# One fixed condition per filter; each combination of filters is its own cached statement, so
# PostgreSQL plans each with only the conditions it has.
_FILTERS = {
    "email": "g.customer_email = :email",
    "last4": """EXISTS (SELECT 1 FROM card_links l
                        WHERE l.card_id = g.id AND lower(l.code_last4) = :last4)""",
    "code_hash": """(EXISTS (SELECT 1 FROM card_links l
                             WHERE l.card_id = g.id AND l.code_hash = :code_hash)
                     OR EXISTS (SELECT 1 FROM shadow_cards sc
                                WHERE sc.card_id = g.id AND sc.vii_card_hash = :code_hash))""",
}


async def find(
    session: AsyncSession,
    *,
    limit: int,
    email: str | None = None,
    last4: str | None = None,
    code_hash: str | None = None,
) -> list[Any]:
    """Cards matching every filter given, newest first, with their agreed balance (or None).

    `email` as stored (lower case); `last4` lower case, matched on any link; `code_hash` on any
    link's code hash or a shadow card's Vii card hash.
    """
    given = {
        name: value
        for name, value in (("email", email), ("last4", last4), ("code_hash", code_hash))
        if value is not None
    }
    if not given:
        raise ValueError("at least one filter is required")
    where = " AND ".join(_FILTERS[name] for name in given)
    statement = sql(_FIND.format(where=where))
    return list((await session.execute(statement, {**given, "limit": limit})).all())
