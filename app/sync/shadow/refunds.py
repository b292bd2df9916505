"""Refunds to a shadow card: netted by the close when they reached the card in time, else staff's.

Vii has no documented credit. A refund Shopify put back on the card before it was deactivated
lowers what the card spent, so the close captures less: given back. Each refund Shopify reports
is noted (ledger, amount 0); once the card is settled, the refunds not covered by the credits
found on the card become `refund_needs_staff` findings, never a silent difference.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import findings, records
from app.db.sql import sql
from app.logging import get_logger
from app.money import format_minor, to_minor
from app.sync.shadow.payments import GiftCardPayment

log = get_logger(__name__)

REFUND_NOTE = "refund_seen"


async def note_refund(session: AsyncSession, row: Any, payment: GiftCardPayment) -> None:
    """Remember a refund Shopify reported (once per transaction); findings if already settled."""
    await records.add_ledger_entry(
        session,
        card_id=row.card_id,
        system="vii",
        amount_minor=0,
        key=f"{payment.subject}:refund",
        cause=REFUND_NOTE,
        detail={
            "amount_minor": to_minor(payment.amount),
            "order_id": payment.order_id,
            "txn_id": payment.txn_id,
        },
    )
    if row.settled_at is not None:
        await refund_findings(session, row)


async def refund_findings(session: AsyncSession, row: Any) -> None:
    """Refunds reported for a settled card, beyond the credits the card received before close."""
    notes = (
        await session.execute(
            sql(
                "SELECT idempotency_key, detail FROM ledger "
                "WHERE card_id = :card AND cause = :cause ORDER BY id"
            ),
            {"card": row.card_id, "cause": REFUND_NOTE},
        )
    ).all()
    covered = row.refunds_on_card_minor
    for note in notes:
        amount = int(note.detail["amount_minor"])
        taken = min(amount, covered)
        covered -= taken
        if amount > taken:
            subject = note.idempotency_key.removesuffix(":refund")
            opened = await findings.open_finding(
                session,
                finding_type="refund_needs_staff",
                subject=subject,
                card_id=row.card_id,
                evidence={
                    "amount": format_minor(amount - taken),
                    "vii_last4": row.vii_last4,
                    "shadow_id": str(row.id),
                    "reason": "refunded after Vii was charged; Vii has no refund",
                },
            )
            if opened:
                log.warning("shadow_refund_needs_staff", subject=subject, vii_last4=row.vii_last4)
