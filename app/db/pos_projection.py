"""Queries on `pos_card_balances` and `pos_seen_moves`: the POS balances giftsync projects from
what it read (OnSite has no gift card resource to ask).

A balance is the sum of the seen moves of its card: a move is inserted once per id, and a move
seen again with other figures is corrected by the difference, under the caller's lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.sql import sql


@dataclass(frozen=True)
class ProjectedCard:
    code_hash: str
    serial_ciphertext: bytes
    code_last4: str
    balance_minor: int
    status: str
    customer_id: str | None
    changed_at: datetime


@dataclass(frozen=True)
class SeenMove:
    move_id: str
    code_hash: str
    amount_minor: int


_CARD = """
    SELECT code_hash, serial_ciphertext, code_last4, balance_minor, status, customer_id, changed_at
    FROM pos_card_balances
"""


async def get(session: AsyncSession, system: str, code_hash: str) -> ProjectedCard | None:
    row = (
        await session.execute(
            sql(_CARD + " WHERE system = :system AND code_hash = :hash"),
            {"system": system, "hash": code_hash},
        )
    ).first()
    return None if row is None else ProjectedCard(*row)


async def page(session: AsyncSession, system: str, after: str, limit: int) -> list[ProjectedCard]:
    """Up to `limit` cards whose code hash sorts after `after`, in code hash order."""
    rows = await session.execute(
        sql(
            _CARD + " WHERE system = :system AND code_hash > :after ORDER BY code_hash LIMIT :limit"
        ),
        {"system": system, "after": after, "limit": limit},
    )
    return [ProjectedCard(*row) for row in rows.all()]


async def disable(session: AsyncSession, system: str, code_hash: str) -> None:
    await session.execute(
        sql(
            """
            UPDATE pos_card_balances SET status = 'disabled', changed_at = now()
            WHERE system = :system AND code_hash = :hash
            """
        ),
        {"system": system, "hash": code_hash},
    )


async def seen_moves(
    session: AsyncSession, system: str, move_ids: Sequence[str]
) -> dict[str, SeenMove]:
    rows = await session.execute(
        sql(
            """
            SELECT move_id, code_hash, amount_minor FROM pos_seen_moves
            WHERE system = :system AND move_id = ANY(:ids)
            """
        ),
        {"system": system, "ids": list(move_ids)},
    )
    return {row.move_id: SeenMove(*row) for row in rows.all()}


async def insert_seen_move(
    session: AsyncSession, system: str, move_id: str, code_hash: str, amount_minor: int
) -> bool:
    """False when the move was seen already (by a concurrent applier)."""
    inserted = await session.scalar(
        sql(
            """
            INSERT INTO pos_seen_moves (system, move_id, code_hash, amount_minor)
            VALUES (:system, :move, :hash, :amount)
            ON CONFLICT DO NOTHING
            RETURNING move_id
            """
        ),
        {"system": system, "move": move_id, "hash": code_hash, "amount": amount_minor},
    )
    return inserted is not None


async def correct_seen_move(
    session: AsyncSession, system: str, move_id: str, code_hash: str, amount_minor: int
) -> None:
    await session.execute(
        sql(
            """
            UPDATE pos_seen_moves SET code_hash = :hash, amount_minor = :amount
            WHERE system = :system AND move_id = :move
            """
        ),
        {"system": system, "move": move_id, "hash": code_hash, "amount": amount_minor},
    )


async def add_to_balance(
    session: AsyncSession, system: str, code_hash: str, delta: int, changed_at: datetime
) -> None:
    """Move an existing card's balance by `delta`; its change time never goes back."""
    await session.execute(
        sql(
            """
            UPDATE pos_card_balances
            SET balance_minor = balance_minor + :delta,
                changed_at = greatest(changed_at, CAST(:changed_at AS timestamptz))
            WHERE system = :system AND code_hash = :hash
            """
        ),
        {"system": system, "hash": code_hash, "delta": delta, "changed_at": changed_at},
    )


async def upsert_card(
    session: AsyncSession,
    *,
    system: str,
    code_hash: str,
    serial_ciphertext: bytes,
    code_last4: str,
    delta: int,
    customer_id: str | None,
    changed_at: datetime,
) -> None:
    """Create the card with `delta` as its balance, or move its balance by `delta`; the first
    owner seen stays its owner, and its change time never goes back."""
    await session.execute(
        sql(
            """
            INSERT INTO pos_card_balances (system, code_hash, serial_ciphertext, code_last4,
                                           balance_minor, status, customer_id, changed_at)
            VALUES (:system, :hash, :serial, :last4, :delta, 'enabled', :customer, :changed_at)
            ON CONFLICT (system, code_hash) DO UPDATE SET
                balance_minor = pos_card_balances.balance_minor + :delta,
                changed_at = greatest(pos_card_balances.changed_at, EXCLUDED.changed_at),
                customer_id = coalesce(pos_card_balances.customer_id, EXCLUDED.customer_id)
            """
        ),
        {
            "system": system,
            "hash": code_hash,
            "serial": serial_ciphertext,
            "last4": code_last4,
            "delta": delta,
            "customer": customer_id,
            "changed_at": changed_at,
        },
    )
