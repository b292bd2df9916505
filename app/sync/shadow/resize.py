"""Re-sizing a live shadow card when the cart changes (same checkout, same Vii card).

The Shopify balance is read first: what was spent through orders since the last apply stays
spent (`owed` until captured), and only what the hold can still back is put on the card. Growing
past the hold needs a new hold; a Vii hold cannot be resized, so the card is emptied, what was
spent is captured from the old hold, the rest is freed, and a new hold backs the new amount.
At every step the hold plus what was captured covers what the card was given.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

import app.sync.shadow.amounts as amounts
import app.sync.shadow.attempts as attempts
import app.sync.shadow.card_moves as card_moves
import app.sync.shadow.lifecycle as lifecycle
import app.sync.shadow.vii_hold as vii_hold
from app.clients.errors import UnknownOutcome, UpstreamError
from app.crypto import constant_time_equal
from app.db import shadow_cards as rows
from app.money import from_minor, to_minor
from app.sync.shadow.deps import ApplyRequest, ShadowDeps
from app.sync.shadow.errors import (
    WRONG_CARD_OR_PIN,
    CardEmpty,
    InvalidCardOrPin,
    PinRequired,
    ShopifyUnavailableError,
    ViiUnavailableError,
    vii_refusal,
)
from app.sync.shadow.result import ApplyResult
from app.sync.shadow.secrets import new_apply_token

REHOLD_EMPTY_TRIES = 3


async def resize(
    deps: ShadowDeps,
    session: AsyncSession,
    request: ApplyRequest,
    live: Any,
    attempt: attempts.Attempt | None,
) -> ApplyResult:
    apply_token = await _prove(deps, session, request, live, attempt)
    try:
        return await _resize_proved(deps, session, request, live, apply_token)
    except card_moves.MoveNotConfirmed:
        raise ShopifyUnavailableError(
            "Shopify did not confirm the re-size; try again.", retry_after=5
        ) from None
    except vii_hold.CaptureUnconfirmed:
        raise ViiUnavailableError("Vii did not answer; try again shortly.", retry_after=5) from None


async def _resize_proved(
    deps: ShadowDeps, session: AsyncSession, request: ApplyRequest, live: Any, apply_token: str
) -> ApplyResult:
    live = await card_moves.confirm_pending_move(deps, session, live)
    balance = await card_moves.read_balance_minor(deps, live)
    plan = amounts.resize(
        cart=to_minor(request.cart_total),
        balance=balance,
        loaded=live.loaded_minor,
        captured=live.captured_amount_minor,
        hold=live.hold_amount_minor,
        vii_balance=live.vii_balance_minor,
    )
    if plan.needs_new_hold:
        if request.pin is None:
            raise PinRequired("The cart grew beyond the amount held; the PIN is needed.")
        return await _rehold(deps, session, request, live, balance, apply_token)
    new_balance = plan.new_balance
    await card_moves.move(
        deps, session, live, new_balance - balance, "apply", applied_after=new_balance
    )
    return _answer(
        deps, live, new_balance, live.vii_balance_minor, live.hold_amount_minor, apply_token
    )


async def _prove(
    deps: ShadowDeps,
    session: AsyncSession,
    request: ApplyRequest,
    live: Any,
    attempt: attempts.Attempt | None,
) -> str:
    """The PIN (a counted attempt) or the apply token; the token to answer with.

    A wrong apply token is refused but not counted: it is 192 random bits, nothing to guess,
    and the PIN limits exist for what can be guessed.
    """
    if request.pin is not None and attempt is not None:
        stored = deps.secrets.open_pin(live.id, live.pin_ciphertext)
        if not constant_time_equal(stored, request.pin):
            await attempts.failed(session, attempt)
            raise InvalidCardOrPin(WRONG_CARD_OR_PIN)
        # Proved by PIN: the caller may have lost its token, so it gets a fresh one.
        token = new_apply_token()
        async with session.begin():
            await attempts.forget(session, attempt)
            await rows.set_fields(
                session, live.id, apply_token_hash=deps.secrets.apply_token_hash(live.id, token)
            )
        return token
    if request.apply_token is None:
        raise PinRequired("The PIN or the apply token is needed to change this card.")
    if not deps.secrets.apply_token_matches(live.id, live.apply_token_hash, request.apply_token):
        raise InvalidCardOrPin(WRONG_CARD_OR_PIN)
    return request.apply_token


async def _rehold(
    deps: ShadowDeps,
    session: AsyncSession,
    request: ApplyRequest,
    live: Any,
    balance: int,
    apply_token: str,
) -> ApplyResult:
    assert request.pin is not None
    # Nothing may be spent while no hold backs the card: empty it first. A refund can land on
    # the card between the read and the debit, so it is read again until it shows nothing.
    for _ in range(REHOLD_EMPTY_TRIES):
        await card_moves.move(deps, session, live, -balance, "rehold-empty")
        live = await _fresh(session, live.id)
        balance = await card_moves.read_balance_minor(deps, live)
        if balance == 0:
            break
    else:
        raise ShopifyUnavailableError(
            "The card kept changing while it was re-sized; try again.", retry_after=5
        )
    async with session.begin():
        # The old hold is about to be taken and cancelled: a lost answer below may have used
        # it up, so from here the card counts on no hold until a new one is confirmed.
        await rows.set_fields(session, live.id, hold_amount_minor=0)
    live = await _fresh(session, live.id)
    try:
        # The card is empty now, so all it was given and not yet taken was spent.
        due = amounts.owed(live.loaded_minor, 0, live.captured_amount_minor)
        await vii_hold.capture(deps, session, live, due, why="rehold")
        await vii_hold.release_hold(deps, session, await _fresh(session, live.id))
        found = await deps.vii.check_balance(request.card_number, request.pin)
    except vii_hold.CaptureRefused:
        raise ViiUnavailableError("Vii refused to take what was spent; ask the shop.") from None
    except UpstreamError as exc:
        raise vii_refusal(exc) from None
    available = to_minor(Decimal(found.available))
    new_hold = amounts.first_apply(available, to_minor(request.cart_total))
    if new_hold <= 0:
        async with session.begin():
            await lifecycle.request_close(session, live.id, "released")
        raise CardEmpty("This gift card has no balance left.")
    live = await _hold_again(deps, session, request, live.id, new_hold, available)
    await card_moves.move(deps, session, live, new_hold, "rehold-fill", applied_after=new_hold)
    return _answer(deps, live, new_hold, available, new_hold, apply_token)


async def _hold_again(
    deps: ShadowDeps,
    session: AsyncSession,
    request: ApplyRequest,
    shadow_id: Any,
    amount_minor: int,
    available_minor: int,
) -> Any:
    """A new pre-authorisation, its tran id committed first (with a job that undoes it)."""
    assert request.pin is not None
    tran_id = deps.vii.new_tran_id()
    recovery = f"shadow:{shadow_id}:recover:{tran_id}"
    async with session.begin():
        await rows.set_fields(session, shadow_id, hold_tran_id=tran_id, hold_code=None)
        await lifecycle.arm_recovery(session, shadow_id, recovery, tran_id=tran_id)
    try:
        hold = await deps.vii.pre_auth(
            request.card_number,
            request.pin,
            from_minor(amount_minor),
            f"shadow:{shadow_id}",
            tran_id=tran_id,
        )
    except UnknownOutcome:
        raise ViiUnavailableError("Vii did not answer; try again shortly.", retry_after=5) from None
    except UpstreamError as exc:
        raise vii_refusal(exc) from None
    async with session.begin():
        await rows.set_fields(
            session,
            shadow_id,
            hold_code=hold.pre_auth_code,
            hold_amount_minor=amount_minor,
            vii_balance_minor=available_minor,
        )
        await lifecycle.disarm_recovery(session, recovery)
        return await rows.get(session, shadow_id)


async def _fresh(session: AsyncSession, shadow_id: Any) -> Any:
    async with session.begin():
        return await rows.get(session, shadow_id)


def _answer(
    deps: ShadowDeps, row: Any, applied: int, vii_balance: int, hold: int, apply_token: str
) -> ApplyResult:
    code = deps.secrets.open_code(row.id, row.shopify_code_ciphertext)
    return ApplyResult.of(
        applied_minor=applied,
        code=code,
        vii_last4=row.vii_last4,
        vii_balance_minor=vii_balance,
        available_minor=vii_balance - hold,
        expires_at=row.expires_at,
        apply_token=apply_token,
    )
