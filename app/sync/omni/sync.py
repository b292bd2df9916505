"""Merging one linked card: read both sides, plan with the rule of `merge.py`, queue the moves.

Every change, whichever way it is noticed, ends here. The base moves forward and the moves are
queued in one transaction under the card's lock, and never while an earlier move of the card
is unfinished: the plan of base version v assumes every move planned from v-1 has landed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import card_links, gift_cards, jobs, sync_base
from app.db.engine import transaction
from app.db.findings import open_finding
from app.db.locks import lock_for_transaction
from app.db.records import add_ledger_entry
from app.logging import get_logger
from app.sync.omni.common import (
    DEACTIVATE_JOB,
    MOVE_JOB,
    SHOPIFY,
    SyncOutcome,
    SyncStatus,
    pos_state,
    shopify_state,
)
from app.sync.omni.flow import OmniSync
from app.sync.omni.merge import MergePlan, SystemState, deactivate_key, plan_merge

log = get_logger(__name__)


async def read_states(
    omni: OmniSync, session: AsyncSession, card_id: uuid.UUID
) -> list[SystemState]:
    """Every linked system's balance and status now; a missing card raises LookupError."""
    systems = await card_links.external_ids(session, card_id)
    if SHOPIFY not in systems or omni.pos.system not in systems:
        raise LookupError(f"card {card_id} is not linked on both sides")
    shopify_card = await omni.shopify.get_gift_card(systems[SHOPIFY])
    if shopify_card is None:
        raise LookupError(f"Shopify card of {card_id} not found")
    pos_card = await omni.pos.get_card(systems[omni.pos.system])
    if pos_card is None:
        raise LookupError(f"{omni.pos.system} card of {card_id} not found")
    return [
        shopify_state(shopify_card),
        pos_state(pos_card, omni.pos.system, omni.settings.currency),
    ]


async def sync_card(
    omni: OmniSync,
    card_id: uuid.UUID,
    *,
    states: Sequence[SystemState] | None = None,
    dry_run: bool = False,
    run_id: uuid.UUID | None = None,
    expected_version: int | None = None,
) -> SyncOutcome:
    """Merge the card's systems and queue the moves; the base moves in the same commit.

    `expected_version`: the base version `states` were read against (reconcile reads in
    bulk, before this lock). If the base moved since, a move planned meanwhile may or may
    not be in those states, so they are dropped and the systems are read again here.
    """
    async with transaction(omni.sessions) as session:
        await lock_for_transaction(session, f"omni-card:{card_id}")
        if await jobs.unfinished_for_card(session, card_id, [MOVE_JOB, DEACTIVATE_JOB]):
            return SyncOutcome("pending")
        base = await sync_base.get(session, card_id)
        if base is None:
            return SyncOutcome("not_found")
        if expected_version is not None and base.version != expected_version:
            states = None
        if states is None:
            try:
                states = await read_states(omni, session, card_id)
            except LookupError as exc:
                if not dry_run:
                    await _missing_link(session, card_id, str(exc), run_id)
                return SyncOutcome("not_found")
        plan = plan_merge(str(card_id), base.balance_minor, base.version, states)
        if dry_run:
            return SyncOutcome(_status(plan), plan)
        await _apply_plan(omni, session, card_id, plan, states, run_id)
    if plan.moves or plan.deactivate:
        log.info(
            "omni_merged",
            card_id=str(card_id),
            target=plan.target_minor,
            moves=len(plan.moves),
            deactivate=list(plan.deactivate),
        )
    return SyncOutcome(_status(plan), plan)


async def _apply_plan(
    omni: OmniSync,
    session: AsyncSession,
    card_id: uuid.UUID,
    plan: MergePlan,
    states: Sequence[SystemState],
    run_id: uuid.UUID | None,
) -> None:
    links = await card_links.external_ids(session, card_id)
    await _record_observed(session, card_id, plan, states)
    await _queue_moves(omni, session, card_id, plan, links)
    for finding in plan.findings:
        await open_finding(
            session,
            finding_type=finding.type,
            subject=f"card:{card_id}",
            card_id=card_id,
            evidence={**finding.evidence, "run_id": str(run_id) if run_id else None},
            run_id=run_id,
        )
    disabled_everywhere = plan.deactivate or all(s.status == "disabled" for s in states)
    await sync_base.advance(session, card_id, plan.target_minor, plan.new_base_version)
    for state in states:
        await card_links.record_seen(
            session, card_id, state.system, state.balance_minor, state.status
        )
    if disabled_everywhere:
        await gift_cards.mark_deactivated(session, card_id)


async def _record_observed(
    session: AsyncSession, card_id: uuid.UUID, plan: MergePlan, states: Sequence[SystemState]
) -> None:
    """What each system did on its own since the last agreement, for the audit."""
    if plan.new_base_version == plan.base_version:
        return
    version = plan.base_version
    for state in states:
        seen = state.balance_minor - plan.base_minor
        if seen:
            await add_ledger_entry(
                session,
                card_id=card_id,
                system=state.system,
                amount_minor=seen,
                key=f"seen:{card_id}:v{version}:{state.system}",
                cause="observed",
                detail={"base_minor": plan.base_minor, "balance_minor": state.balance_minor},
            )


async def _queue_moves(
    omni: OmniSync,
    session: AsyncSession,
    card_id: uuid.UUID,
    plan: MergePlan,
    links: dict[str, str],
) -> None:
    """One ledger entry and one job per planned move, one job per deactivation."""
    version = plan.base_version
    for move in plan.moves:
        await add_ledger_entry(
            session,
            card_id=card_id,
            system=move.system,
            amount_minor=move.amount_minor,
            key=move.idempotency_key,
            cause="merge",
            detail={"target_minor": plan.target_minor, "base_version": version},
        )
        await jobs.enqueue(
            session,
            MOVE_JOB,
            {
                "card_id": str(card_id),
                "system": move.system,
                "external_id": links[move.system],
                "amount_minor": move.amount_minor,
                "key": move.idempotency_key,
                "currency": omni.settings.currency,
            },
            move.idempotency_key,
        )
    for system in plan.deactivate:
        await jobs.enqueue(
            session,
            DEACTIVATE_JOB,
            {"card_id": str(card_id), "system": system, "external_id": links[system]},
            deactivate_key(str(card_id), version, system),
        )


async def _missing_link(
    session: AsyncSession, card_id: uuid.UUID, problem: str, run_id: uuid.UUID | None
) -> None:
    await open_finding(
        session,
        finding_type="missing_link",
        subject=f"card:{card_id}",
        card_id=card_id,
        evidence={"problem": problem, "run_id": str(run_id) if run_id else None},
        run_id=run_id,
    )


def _status(plan: MergePlan) -> SyncStatus:
    if plan.findings:
        return "finding"
    if plan.moves or plan.deactivate:
        return "repaired"
    return "in_sync"
