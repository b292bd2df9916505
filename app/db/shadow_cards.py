"""Queries on `shadow_cards`: one place for every read and state change of a shadow card.

State changes are conditional updates (`transition`): the row count says who won, so two
processes racing to close one card cannot both act on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.sql import rowcount, sql

OPEN_STATES = ("pending", "applied")
CLOSED_STATES = ("captured", "released", "expired", "abandoned")


@dataclass(frozen=True)
class NewIntent:
    """What an apply records before it places a hold: enough for the worker to reverse it."""

    shadow_id: uuid.UUID
    card_id: uuid.UUID
    checkout_token: str
    vii_card_hash: str
    vii_last4: str
    hold_tran_id: str
    amount_minor: int
    vii_balance_minor: int
    pin_sealed: bytes
    number_sealed: bytes
    code_sealed: bytes
    code_last4: str
    apply_token_hash: str
    currency: str
    expires_at: datetime


async def insert_intent(session: AsyncSession, intent: NewIntent) -> None:
    """The gift card and its pending shadow row, in one statement."""
    await session.execute(
        sql(
            """
            WITH card AS (
                INSERT INTO gift_cards (id, kind, currency) VALUES (:card, 'vii_shadow', :currency)
            )
            INSERT INTO shadow_cards (id, card_id, checkout_token, vii_card_hash, vii_last4,
                hold_tran_id, hold_amount_minor, pin_ciphertext, card_number_ciphertext,
                shopify_code_ciphertext, shopify_code_last4, apply_token_hash,
                applied_amount_minor, vii_balance_minor, state, expires_at)
            VALUES (:id, :card, :token, :hash, :last4, :tran, 0, :pin, :number, :code,
                :code_last4, :apply_token, :amount, :vii_balance, 'pending', :expires)
            """
        ),
        {
            "id": intent.shadow_id,
            "card": intent.card_id,
            "currency": intent.currency,
            "token": intent.checkout_token,
            "hash": intent.vii_card_hash,
            "last4": intent.vii_last4,
            "tran": intent.hold_tran_id,
            "pin": intent.pin_sealed,
            "number": intent.number_sealed,
            "code": intent.code_sealed,
            "code_last4": intent.code_last4,
            "apply_token": intent.apply_token_hash,
            "amount": intent.amount_minor,
            "vii_balance": intent.vii_balance_minor,
            "expires": intent.expires_at,
        },
    )


_GET = "SELECT * FROM shadow_cards WHERE id = :id"


async def get(session: AsyncSession, shadow_id: uuid.UUID | str, *, lock: bool = False) -> Any:
    statement = sql(_GET + " FOR UPDATE") if lock else sql(_GET)
    return (await session.execute(statement, {"id": shadow_id})).one_or_none()


async def live_for_checkout(session: AsyncSession, checkout_token: str, vii_hash: str) -> Any:
    """The applied shadow card of this checkout and Vii card, locked, or None."""
    return (
        await session.execute(
            sql(
                """
                SELECT * FROM shadow_cards
                WHERE checkout_token = :token AND vii_card_hash = :hash AND state = 'applied'
                FOR UPDATE
                """
            ),
            {"token": checkout_token, "hash": vii_hash},
        )
    ).one_or_none()


async def for_checkout_and_last4(
    session: AsyncSession, checkout_token: str, last4: str
) -> list[Any]:
    return list(
        (
            await session.execute(
                sql(
                    """
                    SELECT id, state, shopify_code_ciphertext, vii_card_hash FROM shadow_cards
                    WHERE checkout_token = :token AND shopify_code_last4 = :last4
                    """
                ),
                {"token": checkout_token, "last4": last4},
            )
        ).all()
    )


async def by_shopify_id(session: AsyncSession, shopify_gift_card_id: str) -> Any:
    return (
        await session.execute(
            sql("SELECT * FROM shadow_cards WHERE shopify_gift_card_id = :gid"),
            {"gid": shopify_gift_card_id},
        )
    ).first()


async def applied_by_code_last4(session: AsyncSession, last4: str) -> list[Any]:
    return list(
        (
            await session.execute(
                sql(
                    "SELECT * FROM shadow_cards "
                    "WHERE shopify_code_last4 = :last4 AND state = 'applied'"
                ),
                {"last4": last4},
            )
        ).all()
    )


async def transition(
    session: AsyncSession, shadow_id: uuid.UUID | str, from_: Collection[str], to: str
) -> bool:
    """Move the card to `to` only if it is still in one of `from_`; True when this call did."""
    result = await session.execute(
        sql(
            """
            UPDATE shadow_cards SET state = :to, version = version + 1, updated_at = now()
            WHERE id = :id AND state = ANY(:from_)
            """
        ),
        {"id": shadow_id, "to": to, "from_": list(from_)},
    )
    return rowcount(result) == 1


async def mark_applied(
    session: AsyncSession,
    shadow_id: uuid.UUID,
    *,
    shopify_gift_card_id: str,
    amount_minor: int,
) -> bool:
    """pending -> applied once the hold and the Shopify card both exist."""
    result = await session.execute(
        sql(
            """
            UPDATE shadow_cards SET state = 'applied', shopify_gift_card_id = :shopify,
                   loaded_minor = :amount, applied_amount_minor = :amount,
                   version = version + 1, updated_at = now()
            WHERE id = :id AND state = 'pending'
            """
        ),
        {"id": shadow_id, "shopify": shopify_gift_card_id, "amount": amount_minor},
    )
    return rowcount(result) == 1


async def set_fields(session: AsyncSession, shadow_id: uuid.UUID | str, **fields: Any) -> None:
    """Record what an upstream step did (hold, amounts, unconfirmed moves) on the row.

    Only the columns named by keyword, which callers spell literally; never user input.
    """
    assignments = ", ".join(f"{name} = :{name}" for name in sorted(fields))
    await session.execute(
        text(
            f"UPDATE shadow_cards SET {assignments}, version = version + 1, updated_at = now() "  # noqa: S608
            "WHERE id = :shadow_id"
        ),
        {**fields, "shadow_id": shadow_id},
    )


async def add_loaded(session: AsyncSession, shadow_id: uuid.UUID | str, delta_minor: int) -> None:
    """A confirmed move of ours on the Shopify card: what giftsync put there changes by delta."""
    await session.execute(
        sql(
            """
            UPDATE shadow_cards SET loaded_minor = loaded_minor + :d,
                   applied_unconfirmed = false, unconfirmed_move_key = NULL,
                   unconfirmed_move_minor = NULL, unconfirmed_move_at = NULL,
                   version = version + 1, updated_at = now()
            WHERE id = :id
            """
        ),
        {"id": shadow_id, "d": delta_minor},
    )


async def add_captured(
    session: AsyncSession, shadow_id: uuid.UUID | str, amount_minor: int
) -> None:
    await session.execute(
        sql(
            """
            UPDATE shadow_cards SET captured_amount_minor = captured_amount_minor + :a,
                   version = version + 1, updated_at = now()
            WHERE id = :id
            """
        ),
        {"id": shadow_id, "a": amount_minor},
    )


async def mark_settled(
    session: AsyncSession,
    shadow_id: uuid.UUID | str,
    *,
    final_balance_minor: int | None,
    refunds_on_card_minor: int,
) -> bool:
    """Capture and cancel are confirmed: erase the PIN and card number for good."""
    result = await session.execute(
        sql(
            """
            UPDATE shadow_cards SET settled_at = now(), pin_ciphertext = NULL,
                   card_number_ciphertext = NULL, final_balance_minor = :balance,
                   refunds_on_card_minor = :refunds, version = version + 1, updated_at = now()
            WHERE id = :id AND settled_at IS NULL AND state <> 'applied' AND state <> 'pending'
            """
        ),
        {"id": shadow_id, "balance": final_balance_minor, "refunds": refunds_on_card_minor},
    )
    return rowcount(result) == 1


async def set_final_balance(
    session: AsyncSession, shadow_id: uuid.UUID | str, balance_minor: int
) -> None:
    await session.execute(
        sql("UPDATE shadow_cards SET final_balance_minor = :b WHERE id = :id"),
        {"id": shadow_id, "b": balance_minor},
    )


async def due_for_expiry(session: AsyncSession, *, limit: int) -> list[Any]:
    return list(
        (
            await session.execute(
                sql(
                    """
                    SELECT id, vii_card_hash FROM shadow_cards
                    WHERE state = 'applied' AND expires_at <= now()
                    ORDER BY expires_at LIMIT :limit
                    """
                ),
                {"limit": limit},
            )
        ).all()
    )


async def unsettled_closed(session: AsyncSession, *, limit: int) -> list[Any]:
    """Closed cards whose capture and cancel are not confirmed yet (for the reconciler)."""
    return list(
        (
            await session.execute(
                sql(
                    """
                    SELECT id FROM shadow_cards
                    WHERE settled_at IS NULL AND state <> 'applied' AND state <> 'pending'
                    ORDER BY updated_at LIMIT :limit
                    """
                ),
                {"limit": limit},
            )
        ).all()
    )


async def newest_view_for_card(session: AsyncSession, card_id: uuid.UUID) -> Any:
    """What operators see of a card's newest shadow row (no sealed column), or None.

    One checkout per shadow card in practice; the newest is the one that matters.
    """
    return (
        await session.execute(
            sql(
                """
                SELECT state, vii_last4, applied_amount_minor, hold_amount_minor,
                       captured_amount_minor, expires_at
                FROM shadow_cards WHERE card_id = :c ORDER BY created_at DESC LIMIT 1
                """
            ),
            {"c": card_id},
        )
    ).first()
