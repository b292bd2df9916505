"""Taking money from a shadow card's Vii hold, and letting the rest go.

Stored-value rule (UPSTREAMS, Vii): a redemption whose answer is lost may or may not have
happened, so it is never resent; its `Undo` is armed (committed) before the redemption is sent,
fired when the answer is lost, and a new capture waits until every armed Undo of the card has
landed. A capture in doubt always hands the card to its close, which undoes it and captures
again in one job: an Undo on its own would leave what Shopify spent free on the Vii card.
Whether a capture with `PreAuthCode` also frees the rest of the hold is not documented: a
cancellation always follows, and "no such hold" then means it is already free.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

import app.sync.shadow.lifecycle as lifecycle
from app.clients.errors import UnknownOutcome, UpstreamError, UpstreamRejected
from app.clients.vii import ViiHoldNotFound, ViiInsufficientFunds
from app.db import jobs, records
from app.db import shadow_cards as rows
from app.db.sql import sql
from app.logging import get_logger
from app.money import from_minor
from app.sync.shadow.deps import ShadowDeps
from app.worker import RetryLater

log = get_logger(__name__)

UNDO_JOB = "vii.undo"
UNDO_ARMED_FOR = timedelta(minutes=10)


class CaptureUnconfirmed(Exception):
    """A capture's answer was lost (its Undo is on its way) or an earlier one is still undoing."""


class CaptureRefused(Exception):
    """Vii refused the capture for good (the card was emptied elsewhere, or closed)."""


async def capture(
    deps: ShadowDeps, session: AsyncSession, row: Any, amount_minor: int, *, why: str
) -> None:
    """Take `amount_minor` from the card's hold (or, if the hold is gone, from the card)."""
    if amount_minor <= 0:
        return
    card_number = deps.secrets.open_number(row.id, row.card_number_ciphertext)
    pin = deps.secrets.open_pin(row.id, row.pin_ciphertext)
    hold_code: str | None = row.hold_code
    lost_answers = 0
    while True:
        # An earlier capture whose answer was lost is undone here, right before the next one,
        # so what Shopify spent is free on the Vii card for as short a time as possible.
        await _undo_now(deps, session, row.id, card_number)
        tran_id = deps.vii.new_tran_id()
        async with session.begin():
            await _arm_undo(deps, session, row.id, tran_id, card_number)
        try:
            await deps.vii.redeem(
                card_number,
                pin,
                from_minor(amount_minor),
                f"shadow:{row.id}",
                pre_auth_code=hold_code,
                tran_id=tran_id,
            )
        except UnknownOutcome:
            lost_answers += 1
            if lost_answers < 2:
                continue  # undone at the top of the loop, then captured again
            await _fire_undos(session, row.id)
            raise CaptureUnconfirmed("Vii did not answer a capture; undoing it first") from None
        except UpstreamRejected as exc:
            await _disarm(session, tran_id)
            if hold_code is not None and isinstance(exc, ViiHoldNotFound | ViiInsufficientFunds):
                # The hold is gone (Vii let it lapse) or no longer covers the amount (an Undo
                # of a capture whose answer was lost gave the money back to the card, not to
                # the hold): the shopper spent it on Shopify, so the card itself is charged.
                log.warning("shadow_capture_hold_gone", shadow_id=str(row.id))
                hold_code = None
                continue
            raise CaptureRefused(type(exc).__name__) from None
        break
    async with session.begin():
        await _disarm_in(session, tran_id)
        await rows.add_captured(session, row.id, amount_minor)
        await records.add_ledger_entry(
            session,
            card_id=row.card_id,
            system="vii",
            amount_minor=-amount_minor,
            key=f"shadow:{row.id}:capture:{tran_id}",
            cause="capture",
            detail={"tran_id": tran_id, "why": why},
        )
    log.info(
        "shadow_card_captured",
        shadow_id=str(row.id),
        amount=f"{from_minor(amount_minor):.2f}",
        vii_last4=row.vii_last4,
        why=why,
    )


async def release_hold(deps: ShadowDeps, session: AsyncSession, row: Any) -> None:
    """Free what is left of the hold: cancel it by code, or undo a pre-auth never confirmed."""
    card_number = deps.secrets.open_number(row.id, row.card_number_ciphertext)
    if row.hold_code:
        # Not found: captured in full, already cancelled, or lapsed; nothing is held.
        with contextlib.suppress(ViiHoldNotFound):
            await deps.vii.cancel_pre_auth(card_number, row.hold_code, f"shadow:{row.id}")
    elif row.hold_tran_id:
        await deps.vii.undo(card_number, row.hold_tran_id)
    async with session.begin():
        await rows.set_fields(
            session, row.id, hold_code=None, hold_amount_minor=0, hold_tran_id=None
        )


async def undo_job(deps: ShadowDeps, payload: dict[str, Any]) -> None:
    """Job: reverse a Vii transaction whose answer was lost (retried until acknowledged).

    A card still live (a re-size that died mid-capture) starts closing first, so that its close
    undoes the capture and takes it again with no gap in between; the close job that is then
    pending does the Undo itself. Past that check the card is closed and its close done, so
    nothing is left to capture again.
    """
    close_key = f"shadow:{payload['shadow_id']}:close"
    async with deps.sessions() as session, session.begin():
        await lifecycle.request_close(session, payload["shadow_id"], "released")
        close_pending = await session.scalar(
            sql(
                "SELECT 1 FROM jobs WHERE idempotency_key = :key AND state IN ('queued', 'running')"
            ),
            {"key": close_key},
        )
    if close_pending:
        # The close undoes it itself, right before it captures again: no gap in between.
        raise RetryLater("the card's close undoes this capture itself", timedelta(seconds=5))
    card_number = deps.secrets.box.open(bytes.fromhex(payload["card_sealed"]), "job:card")
    await deps.vii.undo(card_number, payload["tran_id"])


async def _undo_now(
    deps: ShadowDeps, session: AsyncSession, shadow_id: Any, card_number: str
) -> None:
    """Undo, here and now, every armed Undo of this card; `CaptureUnconfirmed` if Vii cannot.

    Safe while the Undo's own job is claimed elsewhere: that job never calls Vii while the
    card's close is pending (`undo_job`), and an Undo sent twice finds nothing to reverse.
    """
    async with session.begin():
        armed = (
            await session.execute(
                sql(
                    "SELECT payload->>'tran_id' AS tran_id FROM jobs WHERE kind = :kind "
                    "AND payload->>'shadow_id' = :id AND state <> 'done' ORDER BY id"
                ),
                {"kind": UNDO_JOB, "id": str(shadow_id)},
            )
        ).all()
    for undo in armed:
        try:
            await deps.vii.undo(card_number, undo.tran_id)
        except UpstreamError:
            await _fire_undos(session, shadow_id)
            raise CaptureUnconfirmed("an earlier capture could not be undone yet") from None
        async with session.begin():
            await session.execute(
                sql(
                    "UPDATE jobs SET state = 'done', finished_at = now() "
                    "WHERE idempotency_key = :key AND state IN ('queued', 'running')"
                ),
                {"key": f"vii:undo:{undo.tran_id}"},
            )


async def _arm_undo(
    deps: ShadowDeps, session: AsyncSession, shadow_id: Any, tran_id: str, card_number: str
) -> None:
    """Committed before the redemption is sent: a crash after Vii approves still undoes it."""
    await jobs.enqueue(
        session,
        UNDO_JOB,
        {
            "tran_id": tran_id,
            "shadow_id": str(shadow_id),
            "card_sealed": deps.secrets.box.seal(card_number, "job:card").hex(),
        },
        f"vii:undo:{tran_id}",
        run_at=datetime.now(UTC) + UNDO_ARMED_FOR,
    )


async def _fire_undos(session: AsyncSession, shadow_id: Any) -> None:
    """Every armed Undo of this card becomes due now, and a live card starts closing (its close
    job undoes them itself, then captures again)."""
    async with session.begin():
        await lifecycle.request_close(session, shadow_id, "released")
        await session.execute(
            sql(
                "UPDATE jobs SET run_at = now() WHERE kind = :kind AND state = 'queued' "
                "AND payload->>'shadow_id' = :id AND run_at > now()"
            ),
            {"kind": UNDO_JOB, "id": str(shadow_id)},
        )


async def _disarm(session: AsyncSession, tran_id: str) -> None:
    async with session.begin():
        await _disarm_in(session, tran_id)


async def _disarm_in(session: AsyncSession, tran_id: str) -> None:
    """Vii answered (approved or refused): there is nothing to undo."""
    await session.execute(
        sql(
            "UPDATE jobs SET state = 'done', finished_at = now() "
            "WHERE idempotency_key = :key AND state = 'queued'"
        ),
        {"key": f"vii:undo:{tran_id}"},
    )
