"""Applying a Vii card at checkout: a new shadow card, or the same one re-sized (DESIGN 1.B).

All of it runs while this request holds the Vii card (`CardGate`), on the one connection that
holds it. A new card is first written as a durable intent (`pending`, with a recovery job)
before any hold is placed, so whatever fails afterwards, even an unexpected exception, leaves
something the worker completes or reverses. The code goes back only to a request that proved
the PIN or carries the apply token the first apply returned.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

import app.sync.shadow.amounts as amounts
import app.sync.shadow.attempts as attempts
import app.sync.shadow.lifecycle as lifecycle
from app.clients.errors import UnknownOutcome, UpstreamError
from app.clients.vii import ViiInvalidPin, ViiUnknownCard
from app.db import records
from app.db import shadow_cards as rows
from app.db.sql import sql
from app.logging import get_logger
from app.money import to_minor
from app.sync.shadow.deps import ApplyRequest, ShadowDeps, bound_session
from app.sync.shadow.errors import (
    CardEmpty,
    PinRequired,
    ShadowCardError,
    ShopifyUnavailableError,
    ViiUnavailableError,
    vii_refusal,
)
from app.sync.shadow.resize import resize
from app.sync.shadow.result import ApplyResult
from app.sync.shadow.secrets import new_apply_token, new_shadow_code

log = get_logger(__name__)

CHECKOUT_THROTTLE_WAIT_S = 5.0
"""Seconds a checkout may wait on Shopify's throttle in total before answering 503."""


@dataclass(frozen=True)
class _Planned:
    shadow_id: uuid.UUID
    card_id: uuid.UUID
    code: str
    apply_token: str
    tran_id: str
    amount_minor: int
    available_minor: int


async def apply(deps: ShadowDeps, request: ApplyRequest) -> ApplyResult:
    vii_hash = deps.secrets.card_hash(request.card_number)
    async with deps.gate.hold(vii_hash) as connection:
        session = bound_session(connection)
        with deps.shopify.wait_budget(CHECKOUT_THROTTLE_WAIT_S):
            # One transaction: the live card (if any) and, with a PIN, the attempt counted.
            async with session.begin():
                live = None
                if request.checkout_token is not None:
                    live = await rows.live_for_checkout(session, request.checkout_token, vii_hash)
                attempt = None
                if request.pin is not None:
                    attempt = await attempts.reserve(
                        session, vii_hash, request.card_number[-4:], request.client
                    )
            if live is not None:
                return await resize(deps, session, request, live, attempt)
            return await _apply_new(deps, session, request, vii_hash, attempt)


async def _apply_new(
    deps: ShadowDeps,
    session: AsyncSession,
    request: ApplyRequest,
    vii_hash: str,
    attempt: attempts.Attempt | None,
) -> ApplyResult:
    if request.pin is None or attempt is None:
        raise PinRequired("The PIN is needed to apply this card.")
    vii_last4 = request.card_number[-4:]
    try:
        balance = await deps.vii.check_balance(request.card_number, request.pin)
    except (ViiInvalidPin, ViiUnknownCard) as exc:
        await attempts.failed(session, attempt)
        raise vii_refusal(exc) from None
    except UpstreamError as exc:
        await attempts.succeeded(session, attempt)
        raise vii_refusal(exc) from None
    available = to_minor(Decimal(balance.available))
    if available <= 0:
        await attempts.succeeded(session, attempt)
        raise CardEmpty("This gift card has no balance left.")
    plan = _Planned(
        shadow_id=uuid.uuid4(),
        card_id=uuid.uuid4(),
        code=new_shadow_code(vii_last4),
        apply_token=new_apply_token(),
        tran_id=deps.vii.new_tran_id(),
        amount_minor=amounts.first_apply(available, to_minor(request.cart_total)),
        available_minor=available,
    )
    expires_at = datetime.now(UTC) + deps.settings.shadow_card_ttl
    await _write_intent(deps, session, request, vii_hash, plan, expires_at, attempt)
    try:
        return await _hold_and_create(deps, session, request, plan, expires_at)
    except BaseException:
        # Whatever went wrong, the worker reverses the intent now rather than in a while.
        await _recover_soon(deps, plan.shadow_id)
        raise


async def _write_intent(
    deps: ShadowDeps,
    session: AsyncSession,
    request: ApplyRequest,
    vii_hash: str,
    plan: _Planned,
    expires_at: datetime,
    attempt: attempts.Attempt,
) -> None:
    """The PIN proved right (Vii said so) and the intent, in one transaction."""
    assert request.pin is not None
    shadow_id = plan.shadow_id
    async with session.begin():
        await attempts.forget(session, attempt)
        await rows.insert_intent(
            session,
            rows.NewIntent(
                shadow_id=shadow_id,
                card_id=plan.card_id,
                checkout_token=request.checkout_token or f"anon-{shadow_id}",
                vii_card_hash=vii_hash,
                vii_last4=request.card_number[-4:],
                hold_tran_id=plan.tran_id,
                amount_minor=plan.amount_minor,
                vii_balance_minor=plan.available_minor,
                pin_sealed=deps.secrets.seal_pin(shadow_id, request.pin),
                number_sealed=deps.secrets.seal_number(shadow_id, request.card_number),
                code_sealed=deps.secrets.seal_code(shadow_id, plan.code),
                code_last4=plan.code[-4:],
                apply_token_hash=deps.secrets.apply_token_hash(shadow_id, plan.apply_token),
                currency=deps.currency,
                expires_at=expires_at,
            ),
        )
        await lifecycle.arm_recovery(session, shadow_id, _recovery_key(shadow_id))


async def _hold_and_create(
    deps: ShadowDeps,
    session: AsyncSession,
    request: ApplyRequest,
    plan: _Planned,
    expires_at: datetime,
) -> ApplyResult:
    assert request.pin is not None
    reference = f"shadow:{plan.shadow_id}"
    amount = Decimal(plan.amount_minor) / 100
    try:
        hold = await deps.vii.pre_auth(
            request.card_number, request.pin, amount, reference, tran_id=plan.tran_id
        )
    except UnknownOutcome:
        raise ViiUnavailableError(
            "Vii did not answer; nothing was applied.", retry_after=5
        ) from None
    except UpstreamError as exc:
        await _abandon_now(deps, session, plan, request.card_number, hold_code=None)
        raise vii_refusal(exc) from None
    async with session.begin():
        await rows.set_fields(
            session,
            plan.shadow_id,
            hold_code=hold.pre_auth_code,
            hold_amount_minor=plan.amount_minor,
        )
    try:
        created = await deps.shopify.create_gift_card(amount, code=plan.code, note=reference)
    except UpstreamError as exc:
        log.warning("shadow_apply_shopify_failed", error_type=type(exc).__name__)
        if not isinstance(exc, UnknownOutcome):
            # Shopify surely made no card: the hold can go now. A create whose outcome is
            # unknown keeps its hold until the recovery job's search shows no card.
            await _abandon_now(
                deps, session, plan, request.card_number, hold_code=hold.pre_auth_code
            )
        raise ShopifyUnavailableError(
            "Shopify could not create the card; nothing was applied.", retry_after=5
        ) from None
    async with session.begin():
        await _record_applied(deps, session, plan, created.card.id)
    log.info(
        "shadow_card_applied", shadow_id=str(plan.shadow_id), vii_last4=request.card_number[-4:]
    )
    return ApplyResult.of(
        applied_minor=plan.amount_minor,
        code=plan.code,
        vii_last4=request.card_number[-4:],
        vii_balance_minor=plan.available_minor,
        available_minor=plan.available_minor - plan.amount_minor,
        expires_at=expires_at,
        apply_token=plan.apply_token,
    )


async def _abandon_now(
    deps: ShadowDeps,
    session: AsyncSession,
    plan: _Planned,
    card_number: str,
    *,
    hold_code: str | None,
) -> None:
    """No Shopify card exists: free the hold and close the intent, or leave both to recovery."""
    try:
        if hold_code is not None:
            await deps.vii.cancel_pre_auth(card_number, hold_code, f"shadow:{plan.shadow_id}")
    except UpstreamError:
        return  # the recovery job cancels it
    async with session.begin():
        await rows.transition(session, plan.shadow_id, ("pending",), "abandoned")
        await rows.mark_settled(
            session, plan.shadow_id, final_balance_minor=None, refunds_on_card_minor=0
        )
        await session.execute(
            sql("UPDATE gift_cards SET state = 'deactivated' WHERE id = :c"), {"c": plan.card_id}
        )
        await lifecycle.disarm_recovery(session, _recovery_key(plan.shadow_id))


async def _record_applied(
    deps: ShadowDeps, session: AsyncSession, plan: _Planned, shopify_id: str
) -> None:
    if not await rows.mark_applied(
        session, plan.shadow_id, shopify_gift_card_id=shopify_id, amount_minor=plan.amount_minor
    ):
        raise ShadowCardError("The shadow card was closed while it was being applied.")
    await session.execute(
        sql(
            """
            WITH link AS (
                INSERT INTO card_links (card_id, system, external_id, code_last4,
                                        last_seen_balance_minor, last_seen_at)
                VALUES (:card, 'shopify', :shopify, :last4, :amount, now())
            )
            INSERT INTO sync_base (card_id, balance_minor) VALUES (:card, :amount)
            """
        ),
        {
            "card": plan.card_id,
            "shopify": shopify_id,
            "last4": plan.code[-4:],
            "amount": plan.amount_minor,
        },
    )
    await records.add_ledger_entry(
        session,
        card_id=plan.card_id,
        system="shopify",
        amount_minor=plan.amount_minor,
        key=f"shadow:{plan.shadow_id}:create",
        cause="apply",
    )
    await lifecycle.disarm_recovery(session, _recovery_key(plan.shadow_id))


async def _recover_soon(deps: ShadowDeps, shadow_id: uuid.UUID) -> None:
    """Best effort, on a connection of its own: the recovery job exists already either way."""
    try:
        async with deps.sessions() as session, session.begin():
            await lifecycle.recover_soon(session, _recovery_key(shadow_id))
    except Exception as exc:  # the job still runs at its original time
        log.warning("shadow_recover_soon_failed", error_type=type(exc).__name__)


def _recovery_key(shadow_id: uuid.UUID) -> str:
    return f"shadow:{shadow_id}:recover"
