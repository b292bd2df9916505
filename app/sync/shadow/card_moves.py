"""giftsync's own moves on a shadow card's Shopify card, and what the card really holds.

`loaded_minor` on the row is what giftsync put on the card (create, credits, debits); whatever
else left it was spent through orders: spent = loaded - balance. So every move of ours is
marked pending (key, amount, time) before it is sent and counted only when Shopify confirmed it;
a pending move (lost answer, or a crash after Shopify applied it) is looked up by its key (in
the transaction note) before the card is touched again or closed. Shopify's credits and debits
have no server-side idempotency, so a move not found is taken as never applied only once it is
older than `SETTLE_AFTER`; until then the card waits.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.clients.errors import UnknownOutcome, UpstreamError
from app.db import records
from app.db import shadow_cards as rows
from app.db.sql import sql
from app.money import from_minor, to_minor
from app.sync.shadow.deps import ShadowDeps
from app.sync.shadow.errors import ShopifyUnavailableError

# Far longer than any Shopify request can be in flight (ours time out within seconds).
SETTLE_AFTER = timedelta(minutes=2)


class MoveNotConfirmed(Exception):
    """A move's answer was lost; the row says so and the next step looks it up first."""


class MovePending(ShopifyUnavailableError):
    """A pending move is not on the card yet and may still land: nothing may move until then."""


async def record_move(
    session: AsyncSession, row: Any, delta_minor: int, key: str, cause: str
) -> None:
    """Inside the caller's transaction: loaded, ledger and sync base move together."""
    await rows.add_loaded(session, row.id, delta_minor)
    await records.add_ledger_entry(
        session,
        card_id=row.card_id,
        system="shopify",
        amount_minor=delta_minor,
        key=key,
        cause=cause,
    )
    await session.execute(
        sql(
            "UPDATE sync_base SET balance_minor = balance_minor + :d, version = version + 1 "
            "WHERE card_id = :c"
        ),
        {"d": delta_minor, "c": row.card_id},
    )


async def move(
    deps: ShadowDeps,
    session: AsyncSession,
    row: Any,
    delta_minor: int,
    step: str,
    *,
    applied_after: int | None = None,
) -> None:
    """Credit (delta > 0) or debit the Shopify card and record it (with the amount now shown
    as applied, when given) in one transaction."""
    if delta_minor == 0:
        if applied_after is not None and applied_after != row.applied_amount_minor:
            async with session.begin():
                await rows.set_fields(session, row.id, applied_amount_minor=applied_after)
        return
    key = f"shadow:{row.id}:v{row.version}:{step}"
    amount = from_minor(abs(delta_minor))
    async with session.begin():
        await rows.set_fields(
            session,
            row.id,
            applied_unconfirmed=True,
            unconfirmed_move_key=key,
            unconfirmed_move_minor=delta_minor,
            unconfirmed_move_at=datetime.now(UTC),
        )
    try:
        if delta_minor > 0:
            await deps.shopify.credit_gift_card(
                row.shopify_gift_card_id, amount, deps.currency, idempotency_key=key
            )
        else:
            await deps.shopify.debit_gift_card(
                row.shopify_gift_card_id, amount, deps.currency, idempotency_key=key
            )
    except UnknownOutcome:
        raise MoveNotConfirmed(key) from None
    except UpstreamError:
        # Refused (say, an order spent the card between our read and this debit) or not sent:
        # nothing moved, and the next call reads the card again.
        async with session.begin():
            await _clear_pending(session, row.id)
        raise ShopifyUnavailableError(
            "Shopify could not re-size the card; it is unchanged.", retry_after=5
        ) from None
    async with session.begin():
        await record_move(session, row, delta_minor, key, "resize")
        if applied_after is not None:
            await rows.set_fields(session, row.id, applied_amount_minor=applied_after)


async def confirm_pending_move(deps: ShadowDeps, session: AsyncSession, row: Any) -> Any:
    """Settle a move whose answer was lost by finding its key on the card; the fresh row."""
    if not row.applied_unconfirmed or row.unconfirmed_move_key is None:
        return row
    try:
        # Every page: orders made after the move push it down the newest-first list.
        found = await deps.shopify.list_gift_card_transactions(
            row.shopify_gift_card_id, max_pages=None
        )
    except UpstreamError:
        raise ShopifyUnavailableError(
            "Shopify could not confirm the card's amount; try again.", retry_after=5
        ) from None
    applied = any(t.idempotency_key == row.unconfirmed_move_key for t in found)
    sent_at = row.unconfirmed_move_at
    if not applied and sent_at is not None:
        wait = SETTLE_AFTER - (datetime.now(UTC) - sent_at)
        if wait > timedelta(0):
            raise MovePending(
                "Shopify has not confirmed the card's last change yet; try again shortly.",
                retry_after=max(1, int(wait.total_seconds())),
            )
    async with session.begin():
        if applied:
            await record_move(
                session, row, row.unconfirmed_move_minor or 0, row.unconfirmed_move_key, "resize"
            )
        else:
            await _clear_pending(session, row.id)
        return await rows.get(session, row.id)


async def _clear_pending(session: AsyncSession, shadow_id: Any) -> None:
    await rows.set_fields(
        session,
        shadow_id,
        applied_unconfirmed=False,
        unconfirmed_move_key=None,
        unconfirmed_move_minor=None,
        unconfirmed_move_at=None,
    )


async def read_balance_minor(deps: ShadowDeps, row: Any) -> int:
    """The Shopify card's balance now (a re-size reads it before every move)."""
    try:
        card = await deps.shopify.get_gift_card(row.shopify_gift_card_id)
    except UpstreamError:
        card = None
    if card is None:
        raise ShopifyUnavailableError(
            "Shopify could not tell the card's balance; try again.", retry_after=5
        )
    return to_minor(card.balance)
