"""Phase 3 of a run: every omni card checked against its base, repaired through omni sync.

The snapshot is walked in card-id order in batches. A card whose balances equal its base on
both sides is in sync and costs no write. Any other card goes to `sync_card` with the
snapshot's states and the version read at T0; if the base moved since (an event merged
meanwhile), `sync_card` drops the snapshot and reads live under the card's lock, so a snapshot
older than the base can never be merged. A card that lost a link row is re-linked when
giftsync's own marks (the note it wrote, the serial it derived) name exactly one twin.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.clients.errors import UpstreamError
from app.db import card_links
from app.db import reconcile_snapshot as snapshot
from app.db.engine import transaction
from app.db.locks import lock_for_transaction
from app.logging import get_logger
from app.sync.omni.common import SHOPIFY
from app.sync.omni.merge import MergePlan, SystemState, in_sync, plan_merge
from app.sync.omni.sync import sync_card
from app.sync.reconcile.common import Execution, error_text, system_status

log = get_logger(__name__)

Repair = Callable[[], Awaitable[None]]


async def check_omni_cards(ex: Execution, conn: AsyncConnection) -> None:
    """Walk the cards in id order, a batch at a time, checkpointing after each batch.

    PostgreSQL counts the cards whose balances equal their base on both sides (the vast
    majority); only the others come back to Python, for the merge to judge.
    """
    assert ex.omni is not None
    done = int(ex.reporter.progress.get("cards_done") or 0)
    total = await snapshot.base_count(conn) + done
    ex.report("cards", done, total)
    after = ex.after or str(uuid.UUID(int=0))
    while True:
        last = await snapshot.batch_end(conn, after, ex.r.batch_size)
        if last is None:
            return
        counted = await snapshot.batch_counts(conn, after, last, ex.currency)
        ex.count("checked", counted.settled)
        ex.count("in_sync", counted.settled)
        rows = await snapshot.batch_suspects(conn, after, last, ex.currency)
        repairs = [repair for row in rows if (repair := await _omni_card(ex, conn, row))]
        await _run_bounded(ex, repairs)
        # Every repair of the batch is committed: the cursor may pass it. A crash before
        # this line redoes the batch (repairs are idempotent; cards repaired before the
        # crash then count as pending or in sync).
        done += counted.cards
        after = ex.after = str(last)
        await ex.checkpoint(cards_done=done, cards_total=total)
        ex.report("cards", done, total)


async def _run_bounded(ex: Execution, repairs: Sequence[Repair]) -> None:
    """Repairs of different cards in parallel: each is its own transaction under its own
    card lock, and most of its time is PostgreSQL's (commits), not ours."""
    if not repairs:
        return
    slots = asyncio.Semaphore(ex.r.repair_concurrency)

    async def one(repair: Repair) -> None:
        async with slots:
            await repair()

    try:
        async with asyncio.TaskGroup() as group:
            for repair in repairs:
                group.create_task(one(repair))
    except ExceptionGroup as failed:
        # The others were cancelled, each rolled back whole: report the cause as is.
        raise failed.exceptions[0] from None


async def _omni_card(ex: Execution, conn: AsyncConnection, row: Any) -> Repair | None:
    """Check one card from the snapshot; returns its repair when it needs one.

    The snapshot connection is used here, one card at a time; the repairs returned never
    touch it, so they can run side by side.
    """
    assert ex.omni is not None and ex.pos_system is not None
    card_id: uuid.UUID = row.card_id
    if row.pending:
        ex.count("pending")
        ex.tally.unchecked.append(card_id)
        return None
    ex.count("checked")
    if row.shopify_id is None or row.pos_id is None:
        await _missing_link(ex, conn, row)
        return None
    if row.s_id is None or row.p_id is None:
        return lambda: _absent(ex, row)
    if not row.s_enabled and not row.p_enabled and row.card_state == "deactivated":
        # Over everywhere: no money can move on it again. Merging balances the systems
        # keep after deactivation (OnSite redeems the rest, Shopify keeps it) would only
        # move the base back and forth, one ledger entry per run.
        ex.count("in_sync")
        return None
    states = [
        SystemState(SHOPIFY, row.s_balance, system_status(row.s_enabled), row.s_currency),
        SystemState(
            ex.pos_system, row.p_balance, system_status(row.p_enabled), ex.r.settings.currency
        ),
    ]
    plan = plan_merge(str(card_id), row.balance_minor, row.version, states)
    settled = in_sync(plan) and plan.new_base_version == row.version
    if settled and (row.card_state == "deactivated" or any(s.status == "enabled" for s in states)):
        ex.count("in_sync")
        return None
    version: int = row.version
    return lambda: _sync(ex, card_id, states, version)


async def _sync(
    ex: Execution,
    card_id: uuid.UUID,
    states: Sequence[SystemState] | None,
    version: int | None,
    *,
    relinked: bool = False,
) -> None:
    """Hand one card to omni sync, with the snapshot's states when they are still valid.

    `relinked`: a link row was just restored, a repair even if the balances agree.
    """
    assert ex.omni is not None
    try:
        outcome = await sync_card(
            ex.omni,
            card_id,
            states=states,
            dry_run=ex.dry_run,
            run_id=None if ex.dry_run else ex.run_id,
            expected_version=version,
        )
    except UpstreamError as exc:
        # Only a live re-read reaches an upstream here; the card stays as it was.
        await ex.finding(
            "unrepairable",
            f"card:{card_id}",
            card_id,
            {"repair": "merge", "error": error_text(exc)},
        )
        ex.tally.unchecked.append(card_id)
        return
    if outcome.status == "pending":
        ex.count("pending")
        ex.tally.unchecked.append(card_id)
        return
    if outcome.status == "not_found":
        # Read live and found missing: omni recorded the finding (with this run's id).
        ex.noted_finding(
            "missing_link", f"card:{card_id}", card_id, {"problem": "not found when re-read"}
        )
        return
    plan = outcome.plan
    assert plan is not None
    _plan_outcome(ex, card_id, plan, relinked=relinked)


def _plan_outcome(ex: Execution, card_id: uuid.UUID, plan: MergePlan, *, relinked: bool) -> None:
    if plan.moves or plan.deactivate or relinked:
        ex.count("repaired")
        ex.tally.drift_minor += sum(abs(move.amount_minor) for move in plan.moves)
    elif not plan.findings:
        ex.count("in_sync")
    for finding in plan.findings:
        # sync_card recorded it (or, dry, would have): count it and list it if dry.
        ex.noted_finding(finding.type, f"card:{card_id}", card_id, dict(finding.evidence))


async def _missing_link(ex: Execution, conn: AsyncConnection, row: Any) -> None:
    """A card lost a link row: re-link its twin when giftsync's own marks name exactly one."""
    assert ex.pos_system is not None
    card_id: uuid.UUID = row.card_id
    missing = [
        system
        for system, external_id in ((SHOPIFY, row.shopify_id), (ex.pos_system, row.pos_id))
        if external_id is None
    ]
    candidates = await _twins(ex, conn, row, missing)
    if len(candidates) != 1:
        evidence: dict[str, Any] = {
            "card_id": str(card_id),
            "shopify_id": row.shopify_id,
            "pos_system": ex.pos_system,
            "pos_external_id": row.pos_id,
            "missing_links": missing,
            "candidates": [c.external_id for c in candidates[:5]],
            "problem": (
                "no link row, and no unlinked card carries giftsync's mark for it"
                if not candidates
                else "no link row, and several unlinked cards could be its twin"
            ),
        }
        await ex.finding("missing_link", f"card:{card_id}", card_id, evidence)
        return
    twin = candidates[0]
    log.warning(
        "reconcile_relink",
        card_id=str(card_id),
        system=missing[0],
        external_id=twin.external_id,
        dry_run=ex.dry_run,
    )
    if ex.dry_run:
        ex.count("repaired")
        return
    if not await _relink(ex, card_id, missing[0], twin, row):
        # Linked by someone else meanwhile: the next run looks again.
        ex.tally.unchecked.append(card_id)
        return
    await _after_relink(ex, card_id, missing[0], twin, row)


async def _twins(
    ex: Execution, conn: AsyncConnection, row: Any, missing: list[str]
) -> Sequence[Any]:
    """Unlinked cards on the side that lost its link that giftsync's marks tie to this card."""
    assert ex.pos_system is not None
    if len(missing) != 1:
        return ()
    if missing[0] == SHOPIFY:
        return await snapshot.shopify_twins(conn, row.pos_id, row.pos_code_hash)
    return await snapshot.pos_twins(conn, row.shopify_id, row.shopify_code_hash, ex.pos_system)


async def _relink(ex: Execution, card_id: uuid.UUID, system: str, twin: Any, row: Any) -> bool:
    # Sold in store: the Shopify code is the POS serial, so both links carry its hash.
    if system == SHOPIFY:
        code_hash = row.pos_code_hash if twin.imported else None
    else:
        code_hash = twin.serial_hash or (row.shopify_code_hash if twin.imported else None)
    async with transaction(ex.r.sessions) as session:
        await lock_for_transaction(session, f"omni-card:{card_id}")
        return await card_links.insert_unless_taken(
            session,
            card_id=card_id,
            system=system,
            external_id=twin.external_id,
            last4=twin.last4,
            code_hash=code_hash,
            balance_minor=twin.balance_minor,
            status=system_status(twin.enabled),
        )


async def _after_relink(
    ex: Execution, card_id: uuid.UUID, system: str, twin: Any, row: Any
) -> None:
    """Merge the re-linked card with the snapshot (the version check still guards it)."""
    assert ex.pos_system is not None
    currency = ex.r.settings.currency
    shopify: SystemState | None
    pos: SystemState | None
    if system == SHOPIFY:
        shopify = SystemState(
            SHOPIFY, twin.balance_minor, system_status(twin.enabled), twin.currency
        )
        pos = None
        if row.p_id is not None:
            pos = SystemState(ex.pos_system, row.p_balance, system_status(row.p_enabled), currency)
    else:
        pos = SystemState(ex.pos_system, twin.balance_minor, system_status(twin.enabled), currency)
        shopify = None
        if row.s_id is not None:
            shopify = SystemState(
                SHOPIFY, row.s_balance, system_status(row.s_enabled), row.s_currency
            )
    if shopify is None or pos is None:
        await _sync(ex, card_id, None, None, relinked=True)
    else:
        await _sync(ex, card_id, [shopify, pos], row.version, relinked=True)


async def _absent(ex: Execution, row: Any) -> None:
    """A linked card is not in the snapshot: confirm live before calling it missing."""
    assert ex.omni is not None and ex.pos_system is not None
    card_id: uuid.UUID = row.card_id
    absent: list[tuple[str, str]] = []
    try:
        if row.s_id is None and await ex.r.shopify.get_gift_card(row.shopify_id) is None:
            absent.append((SHOPIFY, row.shopify_id))
        if row.p_id is None and await ex.omni.pos.get_card(row.pos_id) is None:
            absent.append((ex.pos_system, row.pos_id))
    except UpstreamError as exc:
        await ex.finding(
            "unrepairable",
            f"card:{card_id}",
            card_id,
            {"repair": "confirm", "error": error_text(exc)},
        )
        ex.tally.unchecked.append(card_id)
        return
    if not absent:
        # The export missed it (created just before, or a page skipped): merge it live.
        await _sync(ex, card_id, None, None)
        return
    await ex.finding(
        "missing_link",
        f"card:{card_id}",
        card_id,
        {
            "card_id": str(card_id),
            "shopify_id": row.shopify_id,
            "pos_system": ex.pos_system,
            "pos_external_id": row.pos_id,
            "absent": [{"system": system, "external_id": ext} for system, ext in absent],
            "problem": "linked, but the upstream has no such card",
        },
    )
