"""Vii shadow cards at checkout (DESIGN 1.B): apply, re-size, release, expire, close.

Every apply for one Vii card runs under a transaction-scoped advisory lock on the card hash,
held across the upstream calls, so two checkouts never hold more than the card has and twenty
identical requests make one hold and one Shopify card. The shadow card row is written in that
same transaction, so it is committed before the answer leaves. Whatever a failure leaves half
done is handed to a job committed in its own transaction (it must survive the rollback).
"""

from __future__ import annotations

import functools
import secrets
import string
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.clients.errors import UnknownOutcome, UpstreamError, UpstreamUnavailable
from app.crypto import SecretBox, card_hash, constant_time_equal
from app.db import jobs, records
from app.db.engine import SessionFactory, transaction
from app.db.locks import lock_key
from app.logging import get_logger
from app.money import format_minor, from_minor, to_minor
from app.settings import Settings
from app.worker import RetryLater

log = get_logger(__name__)

# Seconds a checkout call may wait on Shopify's throttle in total before answering 503.
CHECKOUT_THROTTLE_WAIT_S = 5.0

CLOSE_JOB = "shadow.close"
UNDO_JOB = "vii.undo"
PIN_FAILURE_LIMIT = 5
PIN_FAILURE_WINDOW = timedelta(minutes=15)
CREATE_SEARCH_GRACE = timedelta(minutes=2)
LOCK_TIMEOUT = "10s"
_CODE_ALPHABET = string.ascii_lowercase + string.digits
_CODE_RANDOM_CHARS = 13  # 13 * log2(36) = 67 random bits, above the 64 DESIGN asks for
# text() parses its SQL for bind parameters on every call; the checkout runs the same few
# statements on every request, so each is built once (the statements here are all constants).
_sql = functools.cache(text)


class ViiPort(Protocol):
    async def check_balance(self, card_number: str, pin: str) -> Any: ...
    async def pre_auth(
        self,
        card_number: str,
        pin: str,
        amount: Decimal,
        external_reference: str,
        *,
        tran_id: str | None = None,
    ) -> Any: ...
    async def cancel_pre_auth(
        self, card_number: str, pre_auth_code: str, external_reference: str
    ) -> None: ...
    async def undo(self, card_number: str, tran_id_to_undo: str) -> bool: ...
    @staticmethod
    def new_tran_id() -> str: ...


class ShopifyPort(Protocol):
    async def create_gift_card(
        self, initial_value: Decimal, *, code: str | None = None, note: str | None = None
    ) -> Any: ...
    async def credit_gift_card(
        self, card_id: str, amount: Decimal, currency: str, *, idempotency_key: str
    ) -> Any: ...
    async def debit_gift_card(
        self, card_id: str, amount: Decimal, currency: str, *, idempotency_key: str
    ) -> Any: ...
    async def deactivate_gift_card(self, card_id: str) -> Any: ...
    async def find_gift_card_by_code(self, code: str) -> Any: ...
    async def get_gift_card(self, card_id: str) -> Any: ...
    def wait_budget(self, seconds: float) -> AbstractContextManager[None]: ...


class ShadowCardError(Exception):
    """A refusal the checkout understands; `code` is DESIGN 3's stable problem code."""

    status = 400
    code = "shadow_card_error"

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class CardEmpty(ShadowCardError):
    status, code = 402, "card_empty"


class InvalidCardOrPin(ShadowCardError):
    status, code = 403, "invalid_card_or_pin"


class CardNotActive(ShadowCardError):
    status, code = 409, "card_not_active"


class PinRequired(ShadowCardError):
    status, code = 409, "pin_required"


class TooManyAttempts(ShadowCardError):
    status, code = 429, "too_many_attempts"


class ViiUnavailableError(ShadowCardError):
    status, code = 503, "vii_unavailable"


class ShopifyUnavailableError(ShadowCardError):
    status, code = 503, "shopify_unavailable"


class ShadowCardNotFound(ShadowCardError):
    status, code = 404, "not_found"


class _CommitThenRaise(Exception):
    """Upstreams already moved: commit what the session recorded of it, then refuse."""

    def __init__(self, error: ShadowCardError) -> None:
        super().__init__(error.detail)
        self.error = error


@dataclass(frozen=True)
class ApplyRequest:
    card_number: str
    pin: str | None
    cart_total: Decimal
    checkout_token: str | None
    client_address: str


@dataclass(frozen=True)
class ApplyResult:
    amount_applied: Decimal
    code: str
    code_last4: str
    status: str
    vii_last4: str
    vii_balance: Decimal
    available_balance: Decimal
    expires_at: datetime


def new_shadow_code(vii_last4: str) -> str:
    """Random part first, Vii last 4 at the end: what Shopify shows is what the shopper knows."""
    random_part = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_RANDOM_CHARS))
    return random_part + vii_last4


def _classify_vii_error(exc: Exception) -> ShadowCardError | None:
    """Map the Vii client's typed refusals onto checkout answers by their class names.

    By name, so this module depends on the Vii client only through ViiPort.
    """
    name = type(exc).__name__
    if name in {"ViiInvalidPin", "ViiUnknownCard"}:
        return InvalidCardOrPin("The card number or PIN is not right.")
    if name == "ViiCardInactive":
        return CardNotActive("This gift card is not active.")
    if name == "ViiInsufficientFunds":
        return CardEmpty("This gift card has no balance left.")
    return None


@dataclass
class ShadowCardService:
    sessions: SessionFactory
    settings: Settings
    vii: ViiPort
    shopify: ShopifyPort

    def __post_init__(self) -> None:
        assert self.settings.pin_encryption_key is not None
        assert self.settings.card_hash_key is not None
        self._box = SecretBox(self.settings.pin_encryption_key.get_secret_value())
        self._hash_key = self.settings.card_hash_key.get_secret_value()

    # ---- apply -------------------------------------------------------------------------

    async def apply(self, request: ApplyRequest) -> ApplyResult:
        vii_hash = card_hash(self._hash_key, request.card_number)
        # The old frontend may send no token: derive a stable one, so a retry after a timeout
        # finds the same shadow card instead of holding the card's funds a second time.
        checkout_token = request.checkout_token or (
            "anon-" + card_hash(self._hash_key, f"{vii_hash}|{request.client_address}")[:32]
        )
        # One transaction (one pooled connection) from the lockout check to the commit: the
        # shopper waits on every round trip, and a locked-out caller never queues for the lock.
        # A shopper cannot wait out Shopify's throttle like a backfill: past the budget the
        # checkout answers 503 (nothing unsent needs compensating).
        with self.shopify.wait_budget(CHECKOUT_THROTTLE_WAIT_S):
            return await self._apply_locked(request, vii_hash, checkout_token)

    async def _apply_locked(
        self, request: ApplyRequest, vii_hash: str, checkout_token: str
    ) -> ApplyResult:
        async with transaction(self.sessions) as session:
            await self._refuse_if_locked_out(session, vii_hash, request.client_address)
            await self._lock_card(session, vii_hash)
            live = await self._live_row(session, checkout_token, vii_hash)
            if live is None:
                return await self._apply_new(session, request, checkout_token, vii_hash)
            try:
                return await self._resize(session, request, live, vii_hash)
            except _CommitThenRaise as deferred:
                refusal = deferred.error
        # Reached only when upstream state already changed: what was recorded is committed.
        raise refusal

    async def _apply_new(
        self, session: AsyncSession, request: ApplyRequest, checkout_token: str, vii_hash: str
    ) -> ApplyResult:
        if request.pin is None:
            raise PinRequired("The PIN is needed to apply this card.")
        vii_last4 = request.card_number[-4:]
        balance = await self._vii_call(
            vii_hash, request, self.vii.check_balance(request.card_number, request.pin)
        )
        available = Decimal(balance.available)
        if available <= 0:
            raise CardEmpty("This gift card has no balance left.")
        amount = min(available, request.cart_total)
        shadow_id = uuid.uuid4()
        reference = f"shadow:{shadow_id}"
        tran_id = self.vii.new_tran_id()
        try:
            hold = await self.vii.pre_auth(
                request.card_number, request.pin, amount, reference, tran_id=tran_id
            )
        except UnknownOutcome:
            await self._enqueue_detached(
                UNDO_JOB,
                {"tran_id": tran_id, "shadow_id": str(shadow_id)},
                f"vii:undo:{tran_id}",
                secret_card=request.card_number,
            )
            raise ViiUnavailableError(
                "Vii did not answer; nothing was applied.", retry_after=5
            ) from None
        except UpstreamError as exc:
            raise await self._vii_refusal(exc, vii_hash, request) from None
        code = new_shadow_code(vii_last4)
        try:
            created = await self.shopify.create_gift_card(amount, code=code, note=reference)
        except UnknownOutcome:
            # The card may exist: deactivate it by code before the hold is released.
            await self._enqueue_close(shadow_id, request.card_number, hold.pre_auth_code, code=code)
            raise ShopifyUnavailableError(
                "Shopify did not answer; nothing was applied.", retry_after=5
            ) from None
        except UpstreamError as exc:
            log.warning(
                "shadow_apply_shopify_failed", error=str(exc), error_type=type(exc).__name__
            )
            await self._cancel_hold_now_or_later(
                shadow_id, request.card_number, hold.pre_auth_code, reference
            )
            raise ShopifyUnavailableError(
                "Shopify could not create the card; nothing was applied.", retry_after=5
            ) from None
        expires_at = datetime.now(UTC) + self.settings.shadow_card_ttl
        card_id = uuid.uuid4()
        amount_minor = to_minor(amount)
        # The card, its Shopify link, its sync base and the shadow row in one round trip (the
        # foreign keys are checked at the end of the statement, when all four exist).
        await session.execute(
            _sql(
                """
                WITH card AS (
                    INSERT INTO gift_cards (id, kind, currency)
                    VALUES (:card, 'vii_shadow', :currency)
                ), link AS (
                    INSERT INTO card_links (card_id, system, external_id, code_last4,
                                            last_seen_balance_minor, last_seen_at)
                    VALUES (:card, 'shopify', :shopify, :code_last4, :amount, now())
                ), base AS (
                    INSERT INTO sync_base (card_id, balance_minor) VALUES (:card, :amount)
                )
                INSERT INTO shadow_cards (id, card_id, checkout_token, vii_card_hash, vii_last4,
                    hold_code, hold_amount_minor, pin_ciphertext, shopify_gift_card_id,
                    shopify_code_ciphertext, shopify_code_last4, applied_amount_minor,
                    vii_balance_minor, card_number_ciphertext, state, expires_at)
                VALUES (:id, :card, :token, :hash, :last4, :hold, :amount, :pin, :shopify,
                    :code, :code_last4, :amount, :vii_balance, :number, 'applied', :expires)
                """
            ),
            {
                "id": shadow_id,
                "card": card_id,
                "currency": self.settings.currency,
                "token": checkout_token,
                "hash": vii_hash,
                "last4": vii_last4,
                "hold": hold.pre_auth_code,
                "amount": amount_minor,
                "pin": self._box.seal(request.pin, f"pin:{shadow_id}"),
                "shopify": created.card.id,
                "code": self._box.seal(code, f"code:{shadow_id}"),
                "code_last4": code[-4:],
                "vii_balance": to_minor(available),
                "number": self._box.seal(request.card_number, f"number:{shadow_id}"),
                "expires": expires_at,
            },
        )
        await self._ledger(
            session, card_id, "shopify", amount_minor, f"{reference}:create", "apply"
        )
        log.info("shadow_card_applied", shadow_id=str(shadow_id), vii_last4=vii_last4)
        return ApplyResult(
            amount_applied=amount,
            code=code,
            code_last4=code[-4:],
            status="enabled",
            vii_last4=vii_last4,
            vii_balance=available,
            available_balance=available - amount,
            expires_at=expires_at,
        )

    async def _resize(
        self, session: AsyncSession, request: ApplyRequest, live: Any, vii_hash: str
    ) -> ApplyResult:
        """Same checkout and card again: return the same code, re-sized to the new cart."""
        if request.pin is not None:
            stored_pin = self._box.open(live.pin_ciphertext, f"pin:{live.id}")
            if not constant_time_equal(stored_pin, request.pin):
                await self._record_pin_failure(vii_hash, request.client_address)
                raise InvalidCardOrPin("The card number or PIN is not right.")
        applied = live.applied_amount_minor
        if live.applied_unconfirmed:
            applied = await self._confirm_applied(session, live)
            live = await self._live_row(session, live.checkout_token, live.vii_card_hash)
        hold = live.hold_amount_minor
        vii_balance = live.vii_balance_minor
        target = to_minor(request.cart_total)
        if target > hold and vii_balance > hold:
            if request.pin is None:
                raise PinRequired("The cart grew beyond the amount held; the PIN is needed.")
            hold, vii_balance, applied = await self._rehold(
                session, request, live, vii_hash, target
            )
        reheld = hold != live.hold_amount_minor
        new_applied = min(target, hold)
        failure: ShadowCardError | None = None
        if new_applied != applied:
            try:
                await self._move_shopify(session, live, new_applied - applied, step="apply")
            except ShopifyUnavailableError as exc:
                if not reheld:
                    raise
                # The new hold exists and the card sits at zero: keep that, the next call
                # (same checkout) credits it up.
                failure, new_applied = exc, applied
        await session.execute(
            _sql(
                """
                UPDATE shadow_cards SET applied_amount_minor = :applied, hold_amount_minor = :hold,
                       vii_balance_minor = :balance, version = version + 1, updated_at = now()
                WHERE id = :id
                """
            ),
            {"applied": new_applied, "hold": hold, "balance": vii_balance, "id": live.id},
        )
        if failure is not None:
            raise _CommitThenRaise(failure)
        code = self._box.open(live.shopify_code_ciphertext, f"code:{live.id}")
        return ApplyResult(
            amount_applied=from_minor(new_applied),
            code=code,
            code_last4=code[-4:],
            status="enabled",
            vii_last4=live.vii_last4,
            vii_balance=from_minor(vii_balance),
            available_balance=from_minor(vii_balance - hold),
            expires_at=live.expires_at,
        )

    async def _rehold(
        self, session: AsyncSession, request: ApplyRequest, live: Any, vii_hash: str, target: int
    ) -> tuple[int, int, int]:
        """Grow the hold: a Vii hold cannot be resized, so cancel and pre-authorise again.

        The Shopify card is debited to zero first so that, while no hold exists, nothing on
        Shopify can spend the money being re-held (DESIGN: never free Vii funds while the
        Shopify card can still be spent).
        """
        assert request.pin is not None
        balance = await self._vii_call(
            vii_hash, request, self.vii.check_balance(request.card_number, request.pin)
        )
        vii_balance = to_minor(Decimal(balance.available)) + live.hold_amount_minor
        new_hold = min(target, vii_balance)
        if new_hold <= live.hold_amount_minor:
            return live.hold_amount_minor, vii_balance, live.applied_amount_minor
        reference = f"shadow:{live.id}"
        if live.applied_amount_minor > 0:
            await self._move_shopify(session, live, -live.applied_amount_minor, step="rehold")
        try:
            await self.vii.cancel_pre_auth(request.card_number, live.hold_code, reference)
        except UpstreamError:
            # The card is already at zero; the close job cancels the still-open hold.
            await self._give_up_after_failed_rehold(session, live, hold_still_open=True)
            raise _CommitThenRaise(
                ViiUnavailableError("Vii did not answer; the card was released.", retry_after=5)
            ) from None
        tran_id = self.vii.new_tran_id()
        try:
            hold = await self.vii.pre_auth(
                request.card_number, request.pin, from_minor(new_hold), reference, tran_id=tran_id
            )
        except UnknownOutcome:
            await self._enqueue_detached(
                UNDO_JOB,
                {"tran_id": tran_id, "shadow_id": str(live.id)},
                f"vii:undo:{tran_id}",
                secret_card=request.card_number,
            )
            await self._give_up_after_failed_rehold(session, live, hold_still_open=False)
            raise _CommitThenRaise(
                ViiUnavailableError("Vii did not answer; the card was released.", retry_after=5)
            ) from None
        except UpstreamError as exc:
            await self._give_up_after_failed_rehold(session, live, hold_still_open=False)
            raise _CommitThenRaise(await self._vii_refusal(exc, vii_hash, request)) from None
        await session.execute(
            _sql(
                "UPDATE shadow_cards SET hold_code = :hold, applied_amount_minor = 0 WHERE id = :id"
            ),
            {"hold": hold.pre_auth_code, "id": live.id},
        )
        return new_hold, vii_balance, 0

    async def _give_up_after_failed_rehold(
        self, session: AsyncSession, live: Any, *, hold_still_open: bool
    ) -> None:
        """Growing the hold failed with the Shopify card already at zero: retire the card.

        The close job then deactivates it and, if the old hold is still open, cancels it.
        """
        await session.execute(
            _sql(
                """
                UPDATE shadow_cards SET state = 'released', pin_ciphertext = NULL,
                       hold_code = CASE WHEN :open THEN hold_code ELSE NULL END,
                       applied_amount_minor = 0, updated_at = now()
                WHERE id = :id
                """
            ),
            {"id": live.id, "open": hold_still_open},
        )
        await jobs.enqueue(
            session,
            CLOSE_JOB,
            {"shadow_id": str(live.id)},
            f"shadow:{live.id}:close",
        )

    async def _confirm_applied(self, session: AsyncSession, live: Any) -> int:
        """After a re-size Shopify never confirmed: what the card really holds now."""
        try:
            card = await self.shopify.get_gift_card(live.shopify_gift_card_id)
        except UpstreamError:
            card = None
        if card is None:
            raise ShopifyUnavailableError(
                "Shopify could not confirm the card's amount; try again.", retry_after=5
            )
        applied = to_minor(card.balance)
        await session.execute(
            _sql(
                """
                UPDATE shadow_cards SET applied_amount_minor = :applied,
                       applied_unconfirmed = false WHERE id = :id
                """
            ),
            {"applied": applied, "id": live.id},
        )
        return applied

    async def _move_shopify(
        self, session: AsyncSession, live: Any, delta_minor: int, *, step: str
    ) -> None:
        key = f"shadow:{live.id}:v{live.version}:{step}"
        try:
            if delta_minor > 0:
                await self.shopify.credit_gift_card(
                    live.shopify_gift_card_id,
                    from_minor(delta_minor),
                    self.settings.currency,
                    idempotency_key=key,
                )
            else:
                await self.shopify.debit_gift_card(
                    live.shopify_gift_card_id,
                    from_minor(-delta_minor),
                    self.settings.currency,
                    idempotency_key=key,
                )
        except UnknownOutcome:
            # The card may or may not have moved: the recorded amount can no longer be
            # trusted, so the next call on this card reads Shopify's balance first.
            await session.execute(
                _sql("UPDATE shadow_cards SET applied_unconfirmed = true WHERE id = :id"),
                {"id": live.id},
            )
            raise _CommitThenRaise(
                ShopifyUnavailableError(
                    "Shopify did not confirm the re-size; try again.", retry_after=5
                )
            ) from None
        except UpstreamError:
            raise ShopifyUnavailableError(
                "Shopify could not re-size the card; it is unchanged.", retry_after=5
            ) from None
        await self._ledger(session, live.card_id, "shopify", delta_minor, key, "resize")
        await session.execute(
            _sql(
                "UPDATE sync_base SET balance_minor = balance_minor + :d, version = version + 1 "
                "WHERE card_id = :c"
            ),
            {"d": delta_minor, "c": live.card_id},
        )

    # ---- release and expiry --------------------------------------------------------------

    async def release(self, checkout_token: str, code: str) -> None:
        """Retire the shadow card of this checkout with this code; idempotent."""
        async with transaction(self.sessions) as session:
            rows = (
                await session.execute(
                    _sql(
                        """
                        SELECT id, state, shopify_code_ciphertext FROM shadow_cards
                        WHERE checkout_token = :token AND shopify_code_last4 = :last4
                        FOR UPDATE
                        """
                    ),
                    {"token": checkout_token, "last4": code.lower()[-4:]},
                )
            ).all()
            for row in rows:
                stored = self._box.open(row.shopify_code_ciphertext, f"code:{row.id}")
                if constant_time_equal(stored, code.lower()):
                    if row.state == "applied":
                        await self._retire(session, row.id, "released")
                    return
        raise ShadowCardNotFound("No shadow card with this checkout token and code.")

    async def expire_due(self, *, limit: int = 100) -> int:
        """Retire shadow cards past SHADOW_CARD_TTL; the close job then deactivates and cancels."""
        async with transaction(self.sessions) as session:
            due = (
                await session.execute(
                    _sql(
                        """
                        SELECT id FROM shadow_cards
                        WHERE state = 'applied' AND expires_at <= now()
                        ORDER BY expires_at LIMIT :limit FOR UPDATE SKIP LOCKED
                        """
                    ),
                    {"limit": limit},
                )
            ).all()
            for row in due:
                await self._retire(session, row.id, "expired")
        return len(due)

    async def _retire(self, session: AsyncSession, shadow_id: Any, state: str) -> None:
        """Move applied -> released/expired, keeping what the close job needs (not the PIN)."""
        await session.execute(
            _sql(
                """
                UPDATE shadow_cards SET state = :state, pin_ciphertext = NULL, updated_at = now()
                WHERE id = :id AND state = 'applied'
                """
            ),
            {"id": shadow_id, "state": state},
        )
        await jobs.enqueue(
            session, CLOSE_JOB, {"shadow_id": str(shadow_id)}, f"shadow:{shadow_id}:close"
        )

    async def close(self, payload: dict[str, Any]) -> None:
        """Job: deactivate the Shopify card, then (only then) cancel the Vii hold.

        Serves retired shadow cards (by `shadow_id`) and half-done applies that never got a
        row (`hold_code`, sealed card number and maybe the shadow `code` in the payload).
        """
        async with self.sessions() as session:
            row = (
                await session.execute(
                    _sql(
                        """
                        SELECT id, card_id, shopify_gift_card_id, hold_code, vii_last4,
                               card_number_ciphertext, applied_amount_minor, state
                        FROM shadow_cards WHERE id = :id
                        """
                    ),
                    {"id": payload["shadow_id"]},
                )
            ).one_or_none()
        shopify_id = row.shopify_gift_card_id if row is not None else None
        if shopify_id is None and payload.get("code_sealed"):
            code = self._box.open(bytes.fromhex(payload["code_sealed"]), "job:code")
            found = await self.shopify.find_gift_card_by_code(code)
            shopify_id = found.id if found is not None else None
            search_until = datetime.fromisoformat(
                payload.get("search_until", "1970-01-01T00:00:00+00:00")
            )
            if shopify_id is None and datetime.now(UTC) < search_until:
                # Search can lag a create: until the grace period ends, "not found" may only
                # mean "not indexed yet", and freeing the hold could leave a live card unbacked.
                raise RetryLater(
                    "the card may exist but not be searchable yet", timedelta(seconds=10)
                )
        spent_minor = 0
        if shopify_id is not None:
            final = await self.shopify.deactivate_gift_card(shopify_id)
            if row is not None and row.state != "captured":
                spent_minor = row.applied_amount_minor - to_minor(Decimal(final.balance))
        if spent_minor > 0 and row is not None:
            # Spent on Shopify but not yet captured (the paid webhook is late or lost): freeing
            # the hold now would give the shopper that money twice. Keep it, tell staff.
            await self._report_spent_before_close(row, spent_minor)
            return
        hold_code = (row.hold_code if row is not None else None) or payload.get("hold_code")
        card_number = self._sealed_card_number(row, payload)
        if hold_code and card_number:
            try:
                await self.vii.cancel_pre_auth(
                    card_number, hold_code, f"shadow:{payload['shadow_id']}"
                )
            except UpstreamError as exc:
                # Vii no longer knows the hold (expired or already cancelled): it is closed.
                if type(exc).__name__ != "ViiHoldNotFound":
                    raise
        if row is not None:
            async with transaction(self.sessions) as session:
                await session.execute(
                    _sql(
                        "UPDATE shadow_cards SET card_number_ciphertext = NULL, pin_ciphertext = NULL "
                        "WHERE id = :id AND state <> 'applied'"
                    ),
                    {"id": row.id},
                )
                await session.execute(
                    _sql(
                        "UPDATE gift_cards SET state = 'deactivated', updated_at = now() "
                        "WHERE id = :c"
                    ),
                    {"c": row.card_id},
                )

    async def _report_spent_before_close(self, row: Any, spent_minor: int) -> None:
        async with transaction(self.sessions) as session:
            await records.open_finding(
                session,
                finding_type="unrepairable",
                subject=f"shadow:{row.id}:spent-before-close",
                card_id=row.card_id,
                evidence={
                    "reason": "shadow card spent on Shopify but not captured on Vii; "
                    "the hold was kept",
                    "spent": format_minor(spent_minor),
                    "vii_last4": row.vii_last4,
                    "hold_code": row.hold_code,
                },
            )
        log.error("shadow_spent_before_close", shadow_id=str(row.id), spent_minor=spent_minor)

    async def undo(self, payload: dict[str, Any]) -> None:
        """Job: reverse a Vii transaction whose answer was lost (stored-value timeout rule)."""
        card_number = self._sealed_card_number(None, payload)
        assert card_number is not None
        await self.vii.undo(card_number, payload["tran_id"])

    def _sealed_card_number(self, row: Any, payload: dict[str, Any]) -> str | None:
        if row is not None and row.card_number_ciphertext is not None:
            return self._box.open(row.card_number_ciphertext, f"number:{row.id}")
        if payload.get("card_sealed"):
            return self._box.open(bytes.fromhex(payload["card_sealed"]), "job:card")
        return None

    # ---- helpers -----------------------------------------------------------------------

    async def _live_row(self, session: AsyncSession, checkout_token: str, vii_hash: str) -> Any:
        return (
            await session.execute(
                _sql(
                    """
                    SELECT * FROM shadow_cards
                    WHERE checkout_token = :token AND vii_card_hash = :hash AND state = 'applied'
                    FOR UPDATE
                    """
                ),
                {"token": checkout_token, "hash": vii_hash},
            )
        ).one_or_none()

    async def _vii_call(self, vii_hash: str, request: ApplyRequest, call: Any) -> Any:
        try:
            return await call
        except UpstreamError as exc:
            raise await self._vii_refusal(exc, vii_hash, request) from None

    async def _vii_refusal(
        self, exc: UpstreamError, vii_hash: str, request: ApplyRequest
    ) -> ShadowCardError:
        mapped = _classify_vii_error(exc)
        if isinstance(mapped, InvalidCardOrPin):
            await self._record_pin_failure(vii_hash, request.client_address)
            return mapped
        if mapped is not None:
            return mapped
        retry_after = int(exc.retry_after or 5) if isinstance(exc, UpstreamUnavailable) else 5
        return ViiUnavailableError(
            "Vii is not answering; try again shortly.", retry_after=retry_after
        )

    async def _lock_card(self, session: AsyncSession, vii_hash: str) -> None:
        """Hold the card's advisory lock until this transaction ends; wait at most LOCK_TIMEOUT.

        `lock_timeout` is set for the whole transaction (row locks included) in the same round
        trip that tries the lock, so an uncontended card costs one statement; only a card
        another checkout holds waits, in a second one.
        """
        key = lock_key(f"vii:{vii_hash}")
        _, locked = (
            await session.execute(
                _sql(
                    "SELECT set_config('lock_timeout', :timeout, true), "
                    "pg_try_advisory_xact_lock(:key)"
                ),
                {"timeout": LOCK_TIMEOUT, "key": key},
            )
        ).one()
        if not locked:
            await session.execute(_sql("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    async def _refuse_if_locked_out(
        self, session: AsyncSession, vii_hash: str, client_address: str
    ) -> None:
        row = (
            await session.execute(
                _sql(
                    """
                    SELECT
                      count(*) FILTER (WHERE vii_card_hash = :hash) AS by_card,
                      min(failed_at) FILTER (WHERE vii_card_hash = :hash) AS card_oldest,
                      count(*) FILTER (WHERE client_address = :addr) AS by_address,
                      min(failed_at) FILTER (WHERE client_address = :addr) AS addr_oldest,
                      now() AS now
                    FROM pin_failures
                    WHERE failed_at > now() - CAST(:window AS interval)
                      AND (vii_card_hash = :hash OR client_address = :addr)
                    """
                ),
                {"hash": vii_hash, "addr": client_address, "window": PIN_FAILURE_WINDOW},
            )
        ).one()
        for count, oldest in ((row.by_card, row.card_oldest), (row.by_address, row.addr_oldest)):
            if count >= PIN_FAILURE_LIMIT:
                wait = (oldest + PIN_FAILURE_WINDOW - row.now).total_seconds()
                raise TooManyAttempts(
                    "Too many wrong PINs; try again later.", retry_after=max(1, int(wait) + 1)
                )

    async def _record_pin_failure(self, vii_hash: str, client_address: str) -> None:
        async with transaction(self.sessions) as session:
            await session.execute(
                _sql("INSERT INTO pin_failures (vii_card_hash, client_address) VALUES (:h, :a)"),
                {"h": vii_hash, "a": client_address},
            )

    async def _ledger(
        self, session: AsyncSession, card_id: Any, system: str, amount: int, key: str, cause: str
    ) -> None:
        await records.add_ledger_entry(
            session, card_id=card_id, system=system, amount_minor=amount, key=key, cause=cause
        )

    async def _cancel_hold_now_or_later(
        self, shadow_id: uuid.UUID, card_number: str, hold_code: str, reference: str
    ) -> None:
        try:
            await self.vii.cancel_pre_auth(card_number, hold_code, reference)
        except UpstreamError:
            await self._enqueue_close(shadow_id, card_number, hold_code)

    async def _enqueue_close(
        self, shadow_id: uuid.UUID, card_number: str, hold_code: str, *, code: str | None = None
    ) -> None:
        payload: dict[str, Any] = {"shadow_id": str(shadow_id), "hold_code": hold_code}
        if code is not None:
            payload["code_sealed"] = self._box.seal(code, "job:code").hex()
            payload["search_until"] = (datetime.now(UTC) + CREATE_SEARCH_GRACE).isoformat()
        await self._enqueue_detached(
            CLOSE_JOB, payload, f"shadow:{shadow_id}:close", secret_card=card_number
        )

    async def _enqueue_detached(
        self, kind: str, payload: dict[str, Any], key: str, *, secret_card: str
    ) -> None:
        """Commit a compensation job in its own transaction so the caller's rollback keeps it.

        Vii needs the card number to cancel or undo, so it travels sealed, never in clear.
        """
        sealed = self._box.seal(secret_card, "job:card").hex()
        async with transaction(self.sessions) as session:
            await jobs.enqueue(session, kind, {**payload, "card_sealed": sealed}, key)
