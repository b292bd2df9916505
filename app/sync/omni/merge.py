"""The three-way balance merge of DESIGN 7, as a pure function.

Given the last agreed balance of a card (the base) and what each system holds now, every
system's change since the base is kept: the agreed balance is `base + sum(current - base)`.
Each system then gets at most one signed move to reach it. The plan is pure data; the caller
(reconciler, omni sync) turns it into jobs, so the moves carry idempotency keys derived from
(card, base version, system) and a retried plan writes nothing twice.

Status rule:
- All systems enabled: balance moves as above.
- Some disabled (deactivated or expired), some enabled: the card is over, so the plan
  deactivates the enabled systems and makes no balance moves (Shopify cannot move money on a
  deactivated card, and a card about to be deactivated needs none).
- `status_conflict`, the one case the rule cannot settle: a system is disabled while an enabled
  system holds more than the base, i.e. money was loaded after the last agreement. Deactivating
  would void value the shopper just paid for, and Shopify deactivation cannot be undone, so the
  plan does nothing and reports it for staff.
- All systems disabled: nothing to move or deactivate, and the base stays where it was.

Currencies that differ between systems make every amount meaningless: no moves, a
`currency_mismatch` finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

SystemStatus = Literal["enabled", "disabled"]
FindingType = Literal["overdraft", "status_conflict", "currency_mismatch"]


@dataclass(frozen=True, slots=True)
class SystemState:
    """What one system holds for the card now; balance in minor units."""

    system: str
    balance_minor: int
    status: SystemStatus
    currency: str


@dataclass(frozen=True, slots=True)
class Move:
    """One balance change on one system: positive credits, negative debits, never zero."""

    system: str
    amount_minor: int
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class MergeFinding:
    """Something the rule reports instead of (or besides) repairing silently."""

    type: FindingType
    # JSON-ready so it can be stored in `findings` as is; excluded from hashing (a dict).
    evidence: dict[str, object] = field(hash=False)


@dataclass(frozen=True, slots=True)
class MergePlan:
    card_id: str
    base_minor: int
    base_version: int
    target_minor: int
    moves: tuple[Move, ...]
    deactivate: tuple[str, ...]
    findings: tuple[MergeFinding, ...]
    new_base_version: int


def move_key(card_id: str, base_version: int, system: str) -> str:
    """Idempotency key of the balance move for `system` planned from `base_version`."""
    return f"merge:{card_id}:v{base_version}:{system}"


def deactivate_key(card_id: str, base_version: int, system: str) -> str:
    """Idempotency key of the deactivation of `system` planned from `base_version`."""
    return f"merge:{card_id}:v{base_version}:{system}:deactivate"


def in_sync(plan: MergePlan) -> bool:
    """Nothing to do upstream and nothing to report.

    A plan can be in sync and still advance the base (one system moved alone: the others
    already agree); the caller persists `target_minor` whenever `new_base_version` changed.
    """
    return not plan.moves and not plan.deactivate and not plan.findings


def _validate(
    card_id: str, base_minor: int, base_version: int, states: Sequence[SystemState]
) -> None:
    if not card_id:
        raise ValueError("card_id is empty")
    if base_minor < 0:
        raise ValueError("base balance is negative")
    if base_version < 0:
        raise ValueError("base version is negative")
    if not states:
        raise ValueError("no system states to merge")
    systems = [state.system for state in states]
    if len(set(systems)) != len(systems):
        raise ValueError("a system appears more than once")


def _balances(states: Sequence[SystemState]) -> dict[str, object]:
    return {state.system: state.balance_minor for state in states}


def _held(
    card_id: str, base_minor: int, base_version: int, findings: tuple[MergeFinding, ...]
) -> MergePlan:
    """Nothing moves and the base stays where it was."""
    return MergePlan(
        card_id=card_id,
        base_minor=base_minor,
        base_version=base_version,
        target_minor=base_minor,
        moves=(),
        deactivate=(),
        findings=findings,
        new_base_version=base_version,
    )


def _currency_mismatch(base_minor: int, states: Sequence[SystemState]) -> MergeFinding | None:
    currencies = {state.currency.strip().upper() for state in states}
    if len(currencies) <= 1:
        return None
    return MergeFinding(
        type="currency_mismatch",
        evidence={
            "base_minor": base_minor,
            "currencies": {state.system: state.currency for state in states},
            "balances": _balances(states),
        },
    )


def _status_conflict(
    base_minor: int,
    states: Sequence[SystemState],
    disabled: tuple[str, ...],
    enabled: Sequence[SystemState],
) -> MergeFinding | None:
    if not disabled:
        return None
    reloaded = [state for state in enabled if state.balance_minor > base_minor]
    if not reloaded:
        return None
    return MergeFinding(
        type="status_conflict",
        evidence={
            "base_minor": base_minor,
            "balances": _balances(states),
            "disabled": list(disabled),
            "reloaded": [state.system for state in reloaded],
        },
    )


def _overdraft(
    base_minor: int, base_version: int, states: Sequence[SystemState], raw_target: int
) -> tuple[MergeFinding, ...]:
    if raw_target >= 0:
        return ()
    return (
        MergeFinding(
            type="overdraft",
            evidence={
                "base_minor": base_minor,
                "base_version": base_version,
                "balances": _balances(states),
                "raw_target_minor": raw_target,
                "shortfall_minor": -raw_target,
            },
        ),
    )


def plan_merge(
    card_id: str, base_minor: int, base_version: int, states: Sequence[SystemState]
) -> MergePlan:
    """Plan the moves and deactivations that bring every system to the merged balance."""
    _validate(card_id, base_minor, base_version, states)
    mismatch = _currency_mismatch(base_minor, states)
    if mismatch is not None:
        return _held(card_id, base_minor, base_version, (mismatch,))

    disabled = tuple(state.system for state in states if state.status == "disabled")
    enabled = [state for state in states if state.status == "enabled"]
    if not enabled:
        # The card is over everywhere; what each system still shows (Shopify keeps a balance
        # after deactivation, OnSite spends it down) is no longer money to agree on, and
        # moving the base would flip it back and forth on every merge.
        return _held(card_id, base_minor, base_version, ())
    conflict = _status_conflict(base_minor, states, disabled, enabled)
    if conflict is not None:
        return _held(card_id, base_minor, base_version, (conflict,))

    raw_target = base_minor + sum(state.balance_minor - base_minor for state in states)
    target = max(raw_target, 0)
    moves: tuple[Move, ...] = ()
    deactivate: tuple[str, ...] = ()
    if disabled:
        deactivate = tuple(state.system for state in enabled)
    else:
        moves = tuple(
            Move(
                system=state.system,
                amount_minor=target - state.balance_minor,
                idempotency_key=move_key(card_id, base_version, state.system),
            )
            for state in states
            if state.balance_minor != target
        )

    changed = bool(moves or deactivate) or target != base_minor
    return MergePlan(
        card_id=card_id,
        base_minor=base_minor,
        base_version=base_version,
        target_minor=target,
        moves=moves,
        deactivate=deactivate,
        findings=_overdraft(base_minor, base_version, states, raw_target),
        new_base_version=base_version + 1 if changed else base_version,
    )
