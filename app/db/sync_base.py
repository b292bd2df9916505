"""Queries on `sync_base`: the balance every system of an omni card last agreed on, and its version.

The version counts agreements: a merge planned from version v assumes every move planned from
an earlier version has landed, so the base only moves under the card's lock.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.sql import sql


async def insert(session: AsyncSession, card_id: uuid.UUID, balance_minor: int) -> None:
    """The first agreement of a card just linked: version 0."""
    await session.execute(
        sql("INSERT INTO sync_base (card_id, balance_minor, version) VALUES (:c, :b, 0)"),
        {"c": card_id, "b": balance_minor},
    )


async def get(session: AsyncSession, card_id: uuid.UUID) -> Any:
    """(balance_minor, version), or None for a card that is not omni."""
    return (
        await session.execute(
            sql("SELECT balance_minor, version FROM sync_base WHERE card_id = :c"),
            {"c": card_id},
        )
    ).one_or_none()


async def advance(
    session: AsyncSession, card_id: uuid.UUID, balance_minor: int, version: int
) -> None:
    """Store the agreement a merge reached."""
    await session.execute(
        sql(
            """
            UPDATE sync_base SET balance_minor = :b, version = :v, updated_at = now()
            WHERE card_id = :c
            """
        ),
        {"b": balance_minor, "v": version, "c": card_id},
    )


async def take_back(session: AsyncSession, card_id: uuid.UUID, amount_minor: int) -> None:
    """Undo a planned move the upstream refused for good, as a new version.

    The next merge then counts, against this base, the change that made the upstream refuse.
    """
    await session.execute(
        sql(
            """
            UPDATE sync_base SET balance_minor = balance_minor - :m, version = version + 1,
                                 updated_at = now()
            WHERE card_id = :c
            """
        ),
        {"m": amount_minor, "c": card_id},
    )
