"""Closing a shadow card, always the same steps whatever closed it (DESIGN 1.B).

1. Deactivate the Shopify card: from here on nothing can spend it, so its state is final.
2. Read that final state: spent = what giftsync put on the card - its balance.
3. Capture from the Vii hold exactly what was spent and not yet captured.
4. Free the rest of the hold.
5. Only then erase the PIN and the card number (`settled_at`).
A paid webhook, a release, an expiry or a cancellation only decide *when* this runs; each step
is safe to repeat, so a crash anywhere means the job runs again from step 1.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

import app.sync.shadow.amounts as amounts
import app.sync.shadow.card_moves as card_moves
import app.sync.shadow.lifecycle as lifecycle
import app.sync.shadow.vii_hold as vii_hold
from app.clients.errors import UpstreamError
from app.clients.shopify import ShopifyGiftCard
from app.db import findings
from app.db import shadow_cards as rows
from app.db.sql import sql
from app.logging import get_logger
from app.money import format_minor, to_minor
from app.sync.shadow.deps import ShadowDeps, bound_session
from app.sync.shadow.errors import CardBusy, ShadowCardNotFound
from app.sync.shadow.refunds import refund_findings
from app.worker import RetryLater

log = get_logger(__name__)

CREATE_SEARCH_GRACE = timedelta(minutes=2)
"""Shopify search can lag a create: a card not found this soon may still exist."""
RETRY_SOON = timedelta(seconds=5)
JOB_WAIT_FOR_CARD_S = 10.0


async def close_job(deps: ShadowDeps, payload: dict[str, Any]) -> None:
    """Job: settle a closed shadow card (steps 1-5 above)."""
    await _with_card(deps, payload["shadow_id"], _settle_if_closed)


async def recover_job(deps: ShadowDeps, payload: dict[str, Any]) -> None:
    """Job: an apply or a re-hold whose request never finished; reverse what it left."""
    await _with_card(deps, payload["shadow_id"], _recover)


async def expire_due(deps: ShadowDeps, *, limit: int = 100) -> int:
    """Close shadow cards past SHADOW_CARD_TTL; the close job then settles them."""
    async with deps.sessions() as session, session.begin():
        due = await rows.due_for_expiry(session, limit=limit)
        for row in due:
            await lifecycle.request_close(session, row.id, "expired")
    return len(due)


async def expire_all(deps: ShadowDeps) -> None:
    """The schedule: close every card due, a hundred at a time."""
    while await expire_due(deps):
        pass


async def release(deps: ShadowDeps, checkout_token: str, code: str) -> None:
    """The shopper removed the card: close it; idempotent. Not found: `ShadowCardNotFound`."""
    wanted = code.lower()
    async with deps.sessions() as session, session.begin():
        for row in await rows.for_checkout_and_last4(session, checkout_token, wanted[-4:]):
            if row.shopify_code_ciphertext is None:
                continue
            stored = deps.secrets.open_code(row.id, row.shopify_code_ciphertext)
            if stored == wanted:
                await lifecycle.request_close(session, row.id, "released")
                return
    raise ShadowCardNotFound("No shadow card with this checkout token and code.")


async def _with_card(deps: ShadowDeps, shadow_id: str, work: Any) -> None:
    async with deps.sessions() as session:
        row = await rows.get(session, shadow_id)
    if row is None:
        return
    try:
        async with deps.gate.hold(row.vii_card_hash, wait_seconds=JOB_WAIT_FOR_CARD_S) as conn:
            await work(deps, bound_session(conn), shadow_id)
    except CardBusy:
        raise RetryLater("a checkout is using this card", RETRY_SOON) from None
    except (vii_hold.CaptureUnconfirmed, card_moves.MovePending) as exc:
        raise RetryLater(str(exc), RETRY_SOON) from None


async def _fresh(session: AsyncSession, shadow_id: Any) -> Any:
    async with session.begin():
        return await rows.get(session, shadow_id)


async def _recover(deps: ShadowDeps, session: AsyncSession, shadow_id: str) -> None:
    row = await _fresh(session, shadow_id)
    if row.state == "applied":
        if row.hold_code is None and row.hold_tran_id is not None:
            # A re-hold whose pre-authorisation was never confirmed: undo it (card is empty).
            await vii_hold.release_hold(deps, session, row)
        return
    if row.state == "pending":
        async with session.begin():
            await rows.transition(session, row.id, ("pending",), "abandoned")
        log.warning("shadow_intent_abandoned", shadow_id=shadow_id)
    await _settle_if_closed(deps, session, shadow_id)


async def _settle_if_closed(deps: ShadowDeps, session: AsyncSession, shadow_id: str) -> None:
    row = await _fresh(session, shadow_id)
    if row.settled_at is not None or row.state in ("applied", "pending"):
        return
    final = await _deactivate(deps, row)
    row = await _fresh(session, shadow_id)
    if final is not None and row.shopify_gift_card_id is not None:
        row = await card_moves.confirm_pending_move(deps, session, row)
    loaded = row.loaded_minor if row.shopify_gift_card_id else _created_value(final)
    balance = to_minor(final.balance) if final is not None else 0
    spent = loaded - balance
    due = amounts.close(loaded=loaded, final_balance=balance, captured=row.captured_amount_minor)
    await _capture_spent(deps, session, row, due)
    await vii_hold.release_hold(deps, session, await _fresh(session, shadow_id))
    refunds = await _refunds_on_card(deps, final)
    async with session.begin():
        await rows.mark_settled(
            session,
            row.id,
            final_balance_minor=balance if final is not None else None,
            refunds_on_card_minor=refunds,
        )
        await session.execute(
            sql("UPDATE gift_cards SET state = 'deactivated', updated_at = now() WHERE id = :c"),
            {"c": row.card_id},
        )
        await refund_findings(session, await rows.get(session, row.id))
    log.info("shadow_card_settled", shadow_id=shadow_id, state=row.state, spent=format_minor(spent))


async def _capture_spent(deps: ShadowDeps, session: AsyncSession, row: Any, due: int) -> None:
    if due < 0:
        # Refunded onto the card after part was captured at a re-hold: Vii has no credit.
        async with session.begin():
            await findings.open_finding(
                session,
                finding_type="refund_needs_staff",
                subject=f"shadow:{row.id}:over-captured",
                card_id=row.card_id,
                evidence={"amount": format_minor(-due), "vii_last4": row.vii_last4},
            )
        return
    try:
        await vii_hold.capture(deps, session, row, due, why=f"close:{row.state}")
    except vii_hold.CaptureRefused as refused:
        async with session.begin():
            await findings.open_finding(
                session,
                finding_type="unrepairable",
                subject=f"shadow:{row.id}:capture-refused",
                card_id=row.card_id,
                evidence={
                    "reason": f"vii_refused_capture ({refused})",
                    "amount": format_minor(due),
                    "vii_last4": row.vii_last4,
                },
            )
        log.error("shadow_capture_refused", shadow_id=str(row.id))


async def _deactivate(deps: ShadowDeps, row: Any) -> ShopifyGiftCard | None:
    """Step 1; the card as deactivated, or None when no Shopify card was ever made."""
    shopify_id = row.shopify_gift_card_id
    if shopify_id is None and row.hold_code is None:
        # The hold was never confirmed, and the create is only asked for after it is
        # recorded: no card can exist, so there is nothing to search for or wait on.
        return None
    if shopify_id is None:
        code = deps.secrets.open_code(row.id, row.shopify_code_ciphertext)
        found = await deps.shopify.find_gift_card_by_code(code)
        if found is None:
            if datetime.now(UTC) < row.created_at + CREATE_SEARCH_GRACE:
                raise RetryLater("the card may exist but not be searchable yet", RETRY_SOON)
            return None
        shopify_id = found.id
    return await deps.shopify.deactivate_gift_card(shopify_id)


def _created_value(card: ShopifyGiftCard | None) -> int:
    """A card an unfinished apply made: its value when created (its code was never given)."""
    return to_minor(card.initial_value) if card is not None else 0


async def _refunds_on_card(deps: ShadowDeps, card: ShopifyGiftCard | None) -> int:
    """Credits on the card that giftsync did not make: refunds Shopify put back before close."""
    if card is None:
        return 0
    try:
        found = await deps.shopify.list_gift_card_transactions(card.id, max_pages=None)
    except UpstreamError:
        return 0  # unknown: any refund reported later is then a finding, never a silent loss
    return sum(to_minor(t.amount) for t in found if t.amount > 0 and t.idempotency_key is None)


__all__ = ["ShadowCardNotFound", "close_job", "expire_due", "recover_job", "release"]
