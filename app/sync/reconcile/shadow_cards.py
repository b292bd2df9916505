"""Phase 4 of a run: Vii shadow cards, whose Shopify card must be enabled exactly while a hold
backs it (Vii cannot list holds, so giftsync's own hold state is the other side).

An enabled Shopify card without an open hold is deactivated (`orphan_shadow_card`); an open
hold whose Shopify card is disabled is handed to the shadow close job (`hold_without_card`).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.clients.errors import UpstreamError
from app.db import jobs
from app.db import reconcile_snapshot as snapshot
from app.db.engine import transaction
from app.sync.findings import record_finding
from app.sync.omni.common import shopify_state
from app.sync.reconcile.common import DEACTIVATE_SHADOW_JOB, Execution, error_text
from app.sync.shadow.lifecycle import CLOSE_JOB, request_close


async def check_shadow_cards(ex: Execution, conn: AsyncConnection) -> None:
    checked, busy = await snapshot.busy_shadow_cards(conn)
    ex.tally.unchecked.extend(busy)
    problems = await snapshot.shadow_problems(conn)
    ex.count("checked", checked)
    ex.count("in_sync", checked - len(problems))
    for number, row in enumerate(problems, 1):
        if row.state != "applied":
            await _orphan(ex, row)
        else:
            await _hold_without_card(ex, row)
        ex.report("shadow", number, len(problems))


async def _orphan(ex: Execution, row: Any) -> None:
    """Enabled in Shopify, yet the hold behind it is closed: spendable money nobody backs.

    The row left `applied` before the snapshot and nothing is in flight for it, and rows
    never return to `applied`: nothing in giftsync would ever deactivate this card.
    """
    subject = f"card:{row.card_id}"
    evidence = {
        "shadow_id": str(row.shadow_id),
        "shadow_state": row.state,
        "shopify_id": row.shopify_id,
        "shopify_last4": row.last4,
        "shopify_balance_minor": row.balance_minor,
        "applied_minor": row.applied_amount_minor,
        "vii_last4": row.vii_last4,
        "repair": "deactivate the Shopify card",
    }
    if not row.settled:
        # Its close never finished: the close job deactivates, then captures what the
        # card spent. Deactivating alone would free money the card may have spent.
        evidence["repair"] = "finish the shadow close job"
        await _close_shadow(ex, row, "orphan_shadow_card", subject, evidence)
        return
    await deactivate_orphan(ex, subject, row.card_id, row.shopify_id, evidence)


async def deactivate_orphan(
    ex: Execution,
    subject: str,
    card_id: uuid.UUID | None,
    shopify_id: str,
    evidence: dict[str, Any],
) -> None:
    """Report the orphan and queue its deactivation in Shopify, in one transaction."""
    if ex.dry_run:
        ex.would_be("orphan_shadow_card", subject, card_id, evidence)
        ex.repaired_with("orphan_shadow_card")
        return
    async with transaction(ex.r.sessions) as session:
        await record_finding(
            session,
            ex.run_id,
            finding_type="orphan_shadow_card",
            subject=subject,
            card_id=card_id,
            evidence=evidence,
        )
        await jobs.enqueue(
            session,
            DEACTIVATE_SHADOW_JOB,
            {
                "shopify_id": shopify_id,
                "card_id": None if card_id is None else str(card_id),
                "subject": subject,
                "run_id": str(ex.run_id),
            },
            # Once per Shopify card ever: deactivation is final.
            f"reconcile:deactivate:{shopify_id}",
        )
    ex.repaired_with("orphan_shadow_card")


async def _hold_without_card(ex: Execution, row: Any) -> None:
    """A hold is open but its Shopify card cannot be spent (disabled) or is gone."""
    subject = f"card:{row.card_id}"
    evidence: dict[str, Any] = {
        "shadow_id": str(row.shadow_id),
        "shopify_id": row.shopify_id,
        "vii_last4": row.vii_last4,
        "applied_minor": row.applied_amount_minor,
    }
    found = bool(row.found)
    if not found:
        try:
            live = await ex.r.shopify.get_gift_card(row.shopify_id)
        except UpstreamError as exc:
            await ex.finding(
                "unrepairable", subject, row.card_id, {**evidence, "error": error_text(exc)}
            )
            ex.tally.unchecked.append(row.card_id)
            return
        if live is not None and shopify_state(live).status == "enabled":
            ex.count("in_sync")  # the export missed it; it is fine
            return
        found = live is not None
    if not found:
        # Nothing to deactivate, and the close job needs the card: staff decide.
        evidence["problem"] = "Shopify has no card with this id; the hold stays open"
        await ex.finding("hold_without_card", subject, row.card_id, evidence)
        return
    evidence["repair"] = "release the hold through the shadow close job"
    if ex.dry_run:
        ex.would_be("hold_without_card", subject, row.card_id, evidence)
        ex.repaired_with("hold_without_card")
        return
    await _close_shadow(ex, row, "hold_without_card", subject, evidence)


async def _close_shadow(
    ex: Execution, row: Any, finding_type: str, subject: str, evidence: dict[str, Any]
) -> None:
    """Repair through the shadow card's own close: deactivate, capture what was spent."""
    if ex.dry_run:
        ex.would_be(finding_type, subject, row.card_id, evidence)
        ex.repaired_with(finding_type)
        return
    async with transaction(ex.r.sessions) as session:
        closing = await request_close(session, row.shadow_id, "released")
        if not closing and row.state == "applied":
            # Closed meanwhile by its own flow, whose close job does the rest.
            ex.count("in_sync")
            return
        if not closing:
            await jobs.enqueue(
                session,
                CLOSE_JOB,
                {"shadow_id": str(row.shadow_id)},
                f"shadow:{row.shadow_id}:close:reconcile:{ex.run_id}",
            )
        await record_finding(
            session,
            ex.run_id,
            finding_type=finding_type,
            subject=subject,
            card_id=row.card_id,
            evidence=evidence,
        )
    ex.repaired_with(finding_type)
