"""Vii shadow cards after checkout (DESIGN 1.B): capture when paid, findings when refunded.

Webhook handlers only decide and enqueue: one capture job per Shopify gift card transaction,
keyed by order and transaction, so Shopify's duplicate deliveries and the two topics that
report the same payment (`orders/paid`, `order_transactions/create`) enqueue it once. The job
captures from the Vii hold under the shadow card's advisory lock and writes the outcome in the
same transaction. Vii has no documented refund, so a refund to a captured card is a finding for
staff; a cancellation before capture retires the card like an abandoned checkout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.clients.errors import UnknownOutcome, UpstreamRejected
from app.crypto import SecretBox
from app.db import jobs, records
from app.db.engine import SessionFactory, transaction
from app.db.locks import lock_for_transaction
from app.logging import get_logger
from app.money import from_minor, to_minor
from app.settings import Settings
from app.sync.inbox import Delivery, TopicHandler
from app.sync.shadow_cards import CLOSE_JOB, UNDO_JOB
from app.worker import RetryLater

if TYPE_CHECKING:
    from app.runtime import Runtime

log = get_logger(__name__)

CAPTURE_JOB = "shadow.capture"
GIFT_CARD_GATEWAY = "gift_card"
CHARGE_KINDS = frozenset({"sale", "capture"})
RETRY_AFTER_UNKNOWN = timedelta(seconds=5)
UNDO_ARMED_FOR = timedelta(minutes=10)
REFUND_NOTE = "refund_needs_staff"
TOPIC_PAID = "orders/paid"
TOPIC_TRANSACTION = "order_transactions/create"
TOPIC_REFUND = "refunds/create"
TOPIC_CANCELLED = "orders/cancelled"


class CaptureVii(Protocol):
    async def redeem(
        self,
        card_number: str,
        pin: str,
        amount: Decimal,
        external_reference: str,
        *,
        pre_auth_code: str | None = None,
        tran_id: str | None = None,
    ) -> Any: ...
    @staticmethod
    def new_tran_id() -> str: ...


class OrderReader(Protocol):
    async def get_order(self, order_id: str | int) -> Any: ...
    async def find_gift_cards_by_last_characters(self, last_characters: str) -> list[Any]: ...


@dataclass(frozen=True)
class GiftCardPayment:
    """One gift card transaction on an order, normalised from REST payloads or GraphQL."""

    order_id: str
    txn_id: str
    kind: str
    status: str
    amount: Decimal
    gift_card_id: str | None
    """As a `gid://shopify/GiftCard/{id}`, the form stored on shadow cards."""
    last_characters: str | None

    @property
    def subject(self) -> str:
        return f"order:{self.order_id}:txn:{self.txn_id}"

    @property
    def is_charge(self) -> bool:
        return self.kind in CHARGE_KINDS and self.status == "success"

    @property
    def is_refund(self) -> bool:
        return self.kind == "refund" and self.status == "success"


def legacy_id(value: object) -> str:
    """`gid://shopify/Order/12` and `12` name the same thing; keys use the bare number."""
    return str(value).rsplit("/", 1)[-1]


def _card_gid(value: object) -> str | None:
    if value in (None, ""):
        return None
    return f"gid://shopify/GiftCard/{legacy_id(value)}"


def _amount(value: object) -> Decimal | None:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount > 0 else None


def payment_from_rest(payload: dict[str, Any], order_id: object = None) -> GiftCardPayment | None:
    """A REST transaction (webhook payload) paid by gift card, or None for anything else."""
    if str(payload.get("gateway") or "") != GIFT_CARD_GATEWAY:
        return None
    amount = _amount(payload.get("amount"))
    txn_id = payload.get("id")
    order = payload.get("order_id") or order_id
    if amount is None or txn_id in (None, "") or order in (None, ""):
        return None
    receipt = payload.get("receipt")
    receipt = receipt if isinstance(receipt, dict) else {}
    last = receipt.get("gift_card_last_characters")
    return GiftCardPayment(
        order_id=legacy_id(order),
        txn_id=legacy_id(txn_id),
        kind=str(payload.get("kind") or "").lower(),
        status=str(payload.get("status") or "").lower(),
        amount=amount,
        gift_card_id=_card_gid(receipt.get("gift_card_id")),
        last_characters=str(last).lower() if last else None,
    )


def payment_from_order_transaction(order_id: str, txn: Any) -> GiftCardPayment | None:
    """An `OrderTransaction` from the Shopify client's `get_order`, or None if not a gift card."""
    if txn.gateway != GIFT_CARD_GATEWAY or txn.amount <= 0:
        return None
    return GiftCardPayment(
        order_id=legacy_id(order_id),
        txn_id=legacy_id(txn.id),
        kind=txn.kind.lower(),
        status=txn.status.lower(),
        amount=txn.amount,
        gift_card_id=_card_gid(txn.gift_card_id),
        last_characters=(
            txn.gift_card_last_characters.lower() if txn.gift_card_last_characters else None
        ),
    )


@dataclass
class ShadowCaptureService:
    sessions: SessionFactory
    settings: Settings
    vii: CaptureVii
    shopify: OrderReader

    def __post_init__(self) -> None:
        assert self.settings.pin_encryption_key is not None
        self._box = SecretBox(self.settings.pin_encryption_key.get_secret_value())

    # ---- webhook topics ------------------------------------------------------------------

    async def on_order_paid(self, payload: dict[str, Any], delivery: Delivery) -> None:
        """`orders/paid` carries no transactions: read them from Shopify."""
        payments = await self._order_payments(payload)
        await self._enqueue_captures(p for p in payments if p.is_charge)

    async def on_transaction(self, payload: dict[str, Any], delivery: Delivery) -> None:
        payment = payment_from_rest(payload)
        if payment is None:
            return
        if payment.is_charge:
            await self._enqueue_captures([payment])
        elif payment.is_refund:
            # The same refund also arrives as `refunds/create`; the ledger key makes it once.
            await self._record_refunds([payment])

    async def on_refund(self, payload: dict[str, Any], delivery: Delivery) -> None:
        order_id = payload.get("order_id")
        payments = [
            payment_from_rest(txn, order_id)
            for txn in payload.get("transactions") or []
            if isinstance(txn, dict)
        ]
        await self._record_refunds(p for p in payments if p is not None and p.is_refund)

    async def on_order_cancelled(self, payload: dict[str, Any], delivery: Delivery) -> None:
        """Cancelled before capture: retire the shadow card so the hold is released.

        A captured card is left to `refunds/create`, which is how the money comes back.
        """
        payments = await self._order_payments(payload)
        order_id = legacy_id(payload.get("id"))
        for payment in payments:
            if not payment.is_charge:
                continue
            async with transaction(self.sessions) as session:
                shadow = await self._match(session, payment, lock=True)
                if shadow is None or shadow.state != "applied":
                    continue
                await session.execute(
                    text(
                        """
                        UPDATE shadow_cards SET state = 'released', pin_ciphertext = NULL,
                               updated_at = now()
                        WHERE id = :id AND state = 'applied'
                        """
                    ),
                    {"id": shadow.id},
                )
                await self._ledger(
                    session,
                    shadow.card_id,
                    0,
                    f"order:{order_id}:shadow:{shadow.id}:cancelled",
                    "order_cancelled",
                    {"order_id": order_id, "shadow_id": str(shadow.id)},
                )
                await jobs.enqueue(
                    session, CLOSE_JOB, {"shadow_id": str(shadow.id)}, f"shadow:{shadow.id}:close"
                )
            log.info("shadow_card_cancelled", order_id=order_id, shadow_id=str(shadow.id))

    # ---- the capture job -----------------------------------------------------------------

    async def capture(self, payload: dict[str, Any]) -> None:
        """Job: capture exactly the charged amount from the Vii hold of one shadow card."""
        shadow_id = str(payload["shadow_id"])
        subject = f"order:{payload['order_id']}:txn:{payload['txn_id']}"
        key = f"{subject}:capture"
        amount_minor = int(payload["amount_minor"])
        async with transaction(self.sessions) as session:
            await lock_for_transaction(session, f"shadow:{shadow_id}")
            row = (
                await session.execute(
                    text("SELECT * FROM shadow_cards WHERE id = :id FOR UPDATE"),
                    {"id": shadow_id},
                )
            ).one_or_none()
            if row is None or await self._ledger_exists(session, key):
                return
            if row.state != "applied":
                await self._not_capturable(session, row, payload, subject)
                return
            if await self._undo_pending(session, shadow_id):
                # UPSTREAMS: a lost redemption is undone before anything is redeemed again.
                await self._fire_undos(shadow_id)
                raise RetryLater("waiting for Vii to undo a lost capture", RETRY_AFTER_UNKNOWN)
            pin = self._box.open(row.pin_ciphertext, f"pin:{row.id}")
            card_number = self._box.open(row.card_number_ciphertext, f"number:{row.id}")
            tran_id = await self._redeem(row, card_number, pin, amount_minor, subject)
            if tran_id is None:
                await self._finding(
                    session,
                    "unrepairable",
                    subject,
                    row.card_id,
                    {
                        "reason": "vii_refused_capture",
                        "shadow_id": shadow_id,
                        "amount": f"{from_minor(amount_minor):.2f}",
                        "vii_last4": row.vii_last4,
                    },
                )
                return
            await session.execute(
                text(
                    "UPDATE jobs SET state = 'done', finished_at = now() "
                    "WHERE idempotency_key = :key AND state = 'queued'"
                ),
                {"key": f"vii:undo:{tran_id}"},
            )
            await session.execute(
                text(
                    """
                    UPDATE shadow_cards SET state = 'captured', captured_amount_minor = :amount,
                           pin_ciphertext = NULL, card_number_ciphertext = NULL,
                           version = version + 1, updated_at = now()
                    WHERE id = :id AND state = 'applied'
                    """
                ),
                {"amount": amount_minor, "id": row.id},
            )
            await self._ledger(
                session,
                row.card_id,
                -amount_minor,
                key,
                "capture",
                {"tran_id": tran_id, "shadow_id": shadow_id},
            )
            await jobs.enqueue(
                session, CLOSE_JOB, {"shadow_id": shadow_id}, f"shadow:{shadow_id}:close"
            )
            await self._findings_for_earlier_refunds(session, row)
        log.info(
            "shadow_card_captured",
            shadow_id=shadow_id,
            order_id=str(payload["order_id"]),
            amount=f"{from_minor(amount_minor):.2f}",
            vii_last4=row.vii_last4,
        )

    async def _redeem(
        self, row: Any, card_number: str, pin: str, amount_minor: int, subject: str
    ) -> str | None:
        """The Vii tran id of the capture, or None when Vii refused it for good."""
        amount = from_minor(amount_minor)
        reference = f"shadow:{row.id}"
        hold_code: str | None = row.hold_code
        while True:
            tran_id = self.vii.new_tran_id()
            # Armed before sending: if this process dies after Vii approves and before the
            # capture commits, the retry finds this Undo and fires it before redeeming again.
            await self._enqueue_undo(
                row.id, tran_id, card_number, run_at=datetime.now(UTC) + UNDO_ARMED_FOR
            )
            try:
                await self.vii.redeem(
                    card_number, pin, amount, reference, pre_auth_code=hold_code, tran_id=tran_id
                )
            except UnknownOutcome:
                await self._fire_undos(row.id)
                raise RetryLater(
                    "Vii did not answer a capture; undoing it before a new attempt",
                    RETRY_AFTER_UNKNOWN,
                ) from None
            except UpstreamRejected as exc:
                await self._disarm_undo(tran_id)
                if hold_code is not None and type(exc).__name__ == "ViiHoldNotFound":
                    # The hold is gone (Vii expired it, or an undone lost capture used it up):
                    # the shopper was charged on Shopify, so redeem the card directly.
                    log.warning("shadow_capture_hold_gone", shadow_id=str(row.id), subject=subject)
                    hold_code = None
                    continue
                log.warning(
                    "shadow_capture_refused",
                    shadow_id=str(row.id),
                    subject=subject,
                    error_type=type(exc).__name__,
                )
                return None
            return tran_id

    async def _not_capturable(
        self, session: AsyncSession, row: Any, payload: dict[str, Any], subject: str
    ) -> None:
        """Another charge on a captured card, or a charge after the hold was released."""
        cancelled = await self._ledger_exists(
            session, f"order:{payload['order_id']}:shadow:{row.id}:cancelled"
        )
        if cancelled:
            return
        await self._finding(
            session,
            "unrepairable",
            subject,
            row.card_id,
            {
                "reason": f"shadow_card_{row.state}",
                "shadow_id": str(row.id),
                "amount": f"{from_minor(int(payload['amount_minor'])):.2f}",
                "vii_last4": row.vii_last4,
            },
        )
        log.warning("shadow_capture_not_possible", shadow_id=str(row.id), state=row.state)

    # ---- helpers -------------------------------------------------------------------------

    async def _findings_for_earlier_refunds(self, session: AsyncSession, row: Any) -> None:
        """Refunds that reached the Shopify card before capture now need staff too."""
        notes = (
            await session.execute(
                text(
                    """
                    SELECT idempotency_key, detail FROM ledger
                    WHERE card_id = :card AND cause = :cause
                    """
                ),
                {"card": row.card_id, "cause": REFUND_NOTE},
            )
        ).all()
        for note in notes:
            subject = note.idempotency_key.removesuffix(":refund")
            await self._refund_finding(session, subject, row.card_id, note.detail)

    async def _refund_finding(
        self, session: AsyncSession, subject: str, card_id: Any, evidence: dict[str, Any]
    ) -> None:
        await self._finding(session, "refund_needs_staff", subject, card_id, evidence)
        log.warning(
            "shadow_refund_needs_staff", subject=subject, vii_last4=evidence.get("vii_last4")
        )

    async def _order_payments(self, payload: dict[str, Any]) -> list[GiftCardPayment]:
        order_id = payload.get("id") or payload.get("admin_graphql_api_id")
        if order_id in (None, ""):
            return []
        order = await self.shopify.get_order(legacy_id(order_id))
        if order is None:
            log.warning("shadow_order_not_found", order_id=legacy_id(order_id))
            return []
        payments = (
            payment_from_order_transaction(legacy_id(order_id), txn) for txn in order.transactions
        )
        return [p for p in payments if p is not None]

    async def _enqueue_captures(self, payments: Iterable[GiftCardPayment]) -> None:
        async with transaction(self.sessions) as session:
            for payment in payments:
                shadow = await self._match(session, payment, lock=False)
                if shadow is None:
                    continue
                created = await jobs.enqueue(
                    session,
                    CAPTURE_JOB,
                    {
                        "order_id": payment.order_id,
                        "txn_id": payment.txn_id,
                        "shadow_id": str(shadow.id),
                        "amount_minor": to_minor(payment.amount),
                    },
                    f"{payment.subject}:capture",
                )
                if created is not None:
                    log.info(
                        "shadow_capture_enqueued", subject=payment.subject, shadow_id=str(shadow.id)
                    )

    async def _record_refunds(self, payments: Iterable[GiftCardPayment]) -> None:
        for payment in payments:
            async with transaction(self.sessions) as session:
                shadow = await self._match(session, payment, lock=True)
                if shadow is None:
                    continue
                if shadow.state not in ("applied", "captured"):
                    # Released before capture: Vii was never charged, nothing to give back.
                    continue
                evidence = {
                    "order_id": payment.order_id,
                    "txn_id": payment.txn_id,
                    "amount": f"{payment.amount:.2f}",
                    "vii_last4": shadow.vii_last4,
                    "shadow_id": str(shadow.id),
                }
                # A note, not a move: Vii has no refund. Before capture it waits for the
                # capture (a cancellation releases the hold and the note needs nobody).
                first = await self._ledger(
                    session,
                    shadow.card_id,
                    0,
                    f"{payment.subject}:refund",
                    REFUND_NOTE,
                    evidence,
                )
                if first and shadow.state == "captured":
                    await self._refund_finding(session, payment.subject, shadow.card_id, evidence)

    async def _match(self, session: AsyncSession, payment: GiftCardPayment, *, lock: bool) -> Any:
        """The shadow card paid with: by Shopify card id, else (no id) by last characters."""
        if lock:
            # Cancels and refunds wait for a capture in flight on the same card.
            probe = await self._match(session, payment, lock=False)
            if probe is None:
                return None
            await lock_for_transaction(session, f"shadow:{probe.id}")
            return (
                await session.execute(
                    text("SELECT * FROM shadow_cards WHERE id = :id FOR UPDATE"),
                    {"id": probe.id},
                )
            ).one()
        if payment.gift_card_id is not None:
            return (
                await session.execute(
                    text("SELECT * FROM shadow_cards WHERE shopify_gift_card_id = :gid"),
                    {"gid": payment.gift_card_id},
                )
            ).first()
        if not payment.last_characters:
            return None
        rows = (
            await session.execute(
                text(
                    """
                    SELECT * FROM shadow_cards
                    WHERE shopify_code_last4 = :last4 AND state = 'applied'
                    """
                ),
                {"last4": payment.last_characters[-4:]},
            )
        ).all()
        if len(rows) != 1:
            if rows:
                log.warning("shadow_match_ambiguous", subject=payment.subject, matches=len(rows))
            return None
        # A shadow code ends in the Vii card's last 4, so an ordinary card can share them:
        # only when Shopify knows no other card ending so is the payment surely this one.
        same_ending = await self.shopify.find_gift_cards_by_last_characters(
            payment.last_characters[-4:]
        )
        if [card.id for card in same_ending] != [rows[0].shopify_gift_card_id]:
            log.warning("shadow_match_ambiguous", subject=payment.subject, matches=len(same_ending))
            return None
        return rows[0]

    async def _undo_pending(self, session: AsyncSession, shadow_id: str) -> bool:
        pending = await session.scalar(
            text(
                """
                SELECT count(*) FROM jobs
                WHERE kind = :kind AND payload->>'shadow_id' = :id AND state <> 'done'
                """
            ),
            {"kind": UNDO_JOB, "id": shadow_id},
        )
        return bool(pending)

    async def _fire_undos(self, shadow_id: Any) -> None:
        """Make every armed Undo of this card due now (committed on its own)."""
        async with transaction(self.sessions) as session:
            await session.execute(
                text(
                    """
                    UPDATE jobs SET run_at = now() WHERE kind = :kind AND state = 'queued'
                      AND payload->>'shadow_id' = :id AND run_at > now()
                    """
                ),
                {"kind": UNDO_JOB, "id": str(shadow_id)},
            )

    async def _disarm_undo(self, tran_id: str) -> None:
        """Vii refused the attempt outright: there is nothing to undo."""
        async with transaction(self.sessions) as session:
            await session.execute(
                text(
                    "UPDATE jobs SET state = 'done', finished_at = now() "
                    "WHERE idempotency_key = :key AND state = 'queued'"
                ),
                {"key": f"vii:undo:{tran_id}"},
            )

    async def _enqueue_undo(
        self, shadow_id: Any, tran_id: str, card_number: str, *, run_at: datetime | None = None
    ) -> None:
        """Committed on its own: the capture's transaction rolls back when it retries."""
        async with transaction(self.sessions) as session:
            await jobs.enqueue(
                session,
                UNDO_JOB,
                {
                    "tran_id": tran_id,
                    "shadow_id": str(shadow_id),
                    "card_sealed": self._box.seal(card_number, "job:card").hex(),
                },
                f"vii:undo:{tran_id}",
                run_at=run_at,
            )

    @staticmethod
    async def _ledger_exists(session: AsyncSession, key: str) -> bool:
        return await records.ledger_entry_exists(session, key)

    @staticmethod
    async def _ledger(
        session: AsyncSession,
        card_id: Any,
        amount_minor: int,
        key: str,
        cause: str,
        detail: dict[str, Any],
    ) -> bool:
        """True when this entry is new (a re-run delivery finds it already written)."""
        return await records.add_ledger_entry(
            session,
            card_id=card_id,
            system="vii",
            amount_minor=amount_minor,
            key=key,
            cause=cause,
            detail=detail,
        )

    @staticmethod
    async def _finding(
        session: AsyncSession, kind: str, subject: str, card_id: Any, evidence: dict[str, Any]
    ) -> None:
        await records.open_finding(
            session, finding_type=kind, subject=subject, card_id=card_id, evidence=evidence
        )


@dataclass(frozen=True)
class ChainedTopicHandler:
    """Runs the topic's earlier handler (another feature may own the topic too), then ours."""

    previous: TopicHandler | None
    handler: TopicHandler

    async def __call__(self, payload: dict[str, Any], delivery: Delivery) -> None:
        if self.previous is not None:
            await self.previous(payload, delivery)
        await self.handler(payload, delivery)


def install_capture(runtime: Runtime) -> ShadowCaptureService | None:
    """Register the capture job and the order topics; a no-op without shadow cards.

    Installing again replaces what an earlier install registered instead of adding to it.
    """
    shadow_cards = runtime.shadow_cards
    if shadow_cards is None:
        return None
    # The shadow card service holds the concrete Vii and Shopify clients, which also capture
    # and read orders; its ports only name what checkout needs.
    service = ShadowCaptureService(
        runtime.sessions,
        runtime.settings,
        cast(CaptureVii, shadow_cards.vii),
        cast(OrderReader, shadow_cards.shopify),
    )
    runtime.handlers[CAPTURE_JOB] = service.capture
    topics: dict[str, TopicHandler] = {
        TOPIC_PAID: service.on_order_paid,
        TOPIC_TRANSACTION: service.on_transaction,
        TOPIC_REFUND: service.on_refund,
        TOPIC_CANCELLED: service.on_order_cancelled,
    }
    for topic, handler in topics.items():
        existing = runtime.topic_handlers.get(topic)
        previous = existing.previous if isinstance(existing, ChainedTopicHandler) else existing
        runtime.topic_handlers[topic] = ChainedTopicHandler(previous, handler)
    return service
