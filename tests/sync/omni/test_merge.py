"""The three-way merge rule of DESIGN 7: worked examples, status and currency rules, properties."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.sync.omni.merge import (
    MergePlan,
    Move,
    SystemState,
    deactivate_key,
    in_sync,
    move_key,
    plan_merge,
)
from tests.pure import clean_database  # noqa: F401

# The autouse database fixture of conftest is function scoped; these tests never touch it.
PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def state(system: str, balance: int, status: str = "enabled", currency: str = "AUD") -> SystemState:
    return SystemState(system=system, balance_minor=balance, status=status, currency=currency)  # type: ignore[arg-type]


def two(shopify: int, pos: int) -> list[SystemState]:
    return [state("shopify", shopify), state("lightspeed", pos)]


def moves_by_system(plan: MergePlan) -> dict[str, int]:
    return {move.system: move.amount_minor for move in plan.moves}


def applied(states: list[SystemState], plan: MergePlan) -> dict[str, int]:
    changes = moves_by_system(plan)
    return {s.system: s.balance_minor + changes.get(s.system, 0) for s in states}


# --- DESIGN examples ------------------------------------------------------------------------


def test_both_sides_spent_merges_both_spends() -> None:
    plan = plan_merge("card-1", 100, 3, two(70, 80))
    assert plan.target_minor == 50
    assert plan.moves == (
        Move("shopify", -20, "merge:card-1:v3:shopify"),
        Move("lightspeed", -30, "merge:card-1:v3:lightspeed"),
    )
    assert plan.deactivate == ()
    assert plan.findings == ()
    assert plan.new_base_version == 4
    assert not in_sync(plan)


def test_one_side_reloaded_credits_the_other() -> None:
    plan = plan_merge("card-1", 100, 0, two(100, 150))
    assert plan.target_minor == 150
    assert moves_by_system(plan) == {"shopify": 50}
    assert plan.new_base_version == 1


def test_reload_on_one_side_and_spend_on_the_other() -> None:
    plan = plan_merge("card-1", 100, 0, two(60, 125))
    assert plan.target_minor == 85
    assert moves_by_system(plan) == {"shopify": 25, "lightspeed": -40}


def test_overdraft_sets_every_system_to_zero_and_reports_evidence() -> None:
    plan = plan_merge("card-1", 50, 7, two(10, 0))
    assert plan.target_minor == 0
    assert moves_by_system(plan) == {"shopify": -10}
    assert len(plan.findings) == 1
    finding = plan.findings[0]
    assert finding.type == "overdraft"
    assert finding.evidence == {
        "base_minor": 50,
        "base_version": 7,
        "balances": {"shopify": 10, "lightspeed": 0},
        "raw_target_minor": -40,
        "shortfall_minor": 40,
    }
    assert plan.new_base_version == 8
    assert not in_sync(plan)


def test_overdraft_with_both_already_empty_still_reported() -> None:
    plan = plan_merge("card-1", 50, 1, two(0, 0))
    assert plan.moves == ()
    assert plan.target_minor == 0
    assert [f.type for f in plan.findings] == ["overdraft"]
    assert plan.new_base_version == 2


def test_no_drift_is_in_sync_and_keeps_the_version() -> None:
    plan = plan_merge("card-1", 100, 5, two(100, 100))
    assert in_sync(plan)
    assert plan.target_minor == 100
    assert plan.new_base_version == 5


def test_single_system_drift_advances_base_without_moves() -> None:
    plan = plan_merge("card-1", 100, 5, [state("shopify", 40)])
    assert plan.target_minor == 40
    assert plan.moves == ()
    assert in_sync(plan)
    assert plan.new_base_version == 6


def test_three_systems_merge_every_delta() -> None:
    states = [state("shopify", 90), state("lightspeed", 100), state("onsite", 130)]
    plan = plan_merge("card-1", 100, 0, states)
    assert plan.target_minor == 120
    assert moves_by_system(plan) == {"shopify": 30, "lightspeed": 20, "onsite": -10}


# --- idempotency keys -----------------------------------------------------------------------


def test_keys_are_stable_for_the_same_inputs() -> None:
    first = plan_merge("card-9", 100, 2, two(70, 80))
    again = plan_merge("card-9", 100, 2, two(70, 80))
    assert first == again
    assert [m.idempotency_key for m in first.moves] == [
        move_key("card-9", 2, "shopify"),
        move_key("card-9", 2, "lightspeed"),
    ]


def test_keys_change_with_base_version_card_and_system() -> None:
    old = plan_merge("card-9", 100, 2, two(70, 80))
    new = plan_merge("card-9", 100, 3, two(70, 80))
    other_card = plan_merge("card-8", 100, 2, two(70, 80))
    keys = [m.idempotency_key for p in (old, new, other_card) for m in p.moves]
    assert len(set(keys)) == len(keys) == 6


def test_deactivate_key_differs_from_move_key() -> None:
    assert deactivate_key("c", 1, "shopify") != move_key("c", 1, "shopify")
    assert deactivate_key("c", 1, "shopify") == "merge:c:v1:shopify:deactivate"


def test_replanning_after_applying_is_in_sync() -> None:
    states = two(70, 80)
    plan = plan_merge("card-1", 100, 0, states)
    after = [state(s, b) for s, b in applied(states, plan).items()]
    replanned = plan_merge("card-1", plan.target_minor, plan.new_base_version, after)
    assert in_sync(replanned)
    assert replanned.new_base_version == plan.new_base_version


# --- currency -------------------------------------------------------------------------------


def test_currency_mismatch_makes_no_moves() -> None:
    states = [state("shopify", 70, currency="AUD"), state("lightspeed", 80, currency="NZD")]
    plan = plan_merge("card-1", 100, 4, states)
    assert plan.moves == ()
    assert plan.deactivate == ()
    assert plan.target_minor == 100
    assert plan.new_base_version == 4
    assert [f.type for f in plan.findings] == ["currency_mismatch"]
    assert plan.findings[0].evidence == {
        "base_minor": 100,
        "balances": {"shopify": 70, "lightspeed": 80},
        "currencies": {"shopify": "AUD", "lightspeed": "NZD"},
    }
    assert not in_sync(plan)


def test_currency_case_does_not_count_as_mismatch() -> None:
    states = [state("shopify", 70, currency="aud"), state("lightspeed", 80, currency="AUD")]
    assert plan_merge("card-1", 100, 0, states).findings == ()


# --- status ---------------------------------------------------------------------------------


def test_disabled_side_deactivates_the_enabled_side_without_moves() -> None:
    states = [state("shopify", 70, status="disabled"), state("lightspeed", 80)]
    plan = plan_merge("card-1", 100, 2, states)
    assert plan.deactivate == ("lightspeed",)
    assert plan.moves == ()
    assert plan.findings == ()
    assert plan.new_base_version == 3
    assert not in_sync(plan)


def test_disabled_side_with_unchanged_balances_still_deactivates() -> None:
    states = [state("shopify", 100), state("lightspeed", 100, status="disabled")]
    plan = plan_merge("card-1", 100, 2, states)
    assert plan.deactivate == ("shopify",)
    assert plan.new_base_version == 3


def test_all_disabled_is_settled() -> None:
    states = [state("shopify", 100, status="disabled"), state("lightspeed", 100, "disabled")]
    plan = plan_merge("card-1", 100, 2, states)
    assert in_sync(plan)
    assert plan.new_base_version == 2


def test_reload_on_enabled_side_while_other_disabled_is_a_status_conflict() -> None:
    states = [state("shopify", 100, status="disabled"), state("lightspeed", 160)]
    plan = plan_merge("card-1", 100, 2, states)
    assert plan.moves == ()
    assert plan.deactivate == ()
    assert plan.target_minor == 100
    assert plan.new_base_version == 2
    assert [f.type for f in plan.findings] == ["status_conflict"]
    assert plan.findings[0].evidence == {
        "base_minor": 100,
        "balances": {"shopify": 100, "lightspeed": 160},
        "disabled": ["shopify"],
        "reloaded": ["lightspeed"],
    }


# --- input validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("card_id", "base", "version", "states", "why"),
    [
        ("card-1", 100, 0, [], "no system states to merge"),
        (
            "card-1",
            100,
            0,
            [state("shopify", 1), state("shopify", 2)],
            "a system appears more than once",
        ),
        ("card-1", -1, 0, [state("shopify", 1)], "base balance is negative"),
        ("card-1", 100, -1, [state("shopify", 1)], "base version is negative"),
        ("", 100, 0, [state("shopify", 1)], "card_id is empty"),
    ],
)
def test_bad_inputs_are_rejected(
    card_id: str, base: int, version: int, states: list[SystemState], why: str
) -> None:
    with pytest.raises(ValueError) as raised:
        plan_merge(card_id, base, version, states)
    assert str(raised.value) == why


def test_every_plan_names_its_card_and_base() -> None:
    """Plans travel to jobs by card and base version: each kind of plan carries the ones it is for."""
    mismatch = [state("shopify", 70, currency="AUD"), state("lightspeed", 80, currency="NZD")]
    all_disabled = [state("shopify", 100, "disabled"), state("lightspeed", 90, "disabled")]
    conflict = [state("shopify", 100, status="disabled"), state("lightspeed", 160)]
    for states in (two(70, 80), two(10, 0), mismatch, two(100, 100), all_disabled, conflict):
        plan = plan_merge("card-9", 100, 1, states)
        assert (plan.card_id, plan.base_minor, plan.base_version) == ("card-9", 100, 1)


def test_a_card_disabled_everywhere_is_held_exactly_at_its_base() -> None:
    states = [state("shopify", 100, "disabled"), state("lightspeed", 90, "disabled")]
    assert plan_merge("card-9", 100, 1, states) == MergePlan(
        card_id="card-9",
        base_minor=100,
        base_version=1,
        target_minor=100,
        moves=(),
        deactivate=(),
        findings=(),
        new_base_version=1,
    )


def test_a_plan_with_only_a_finding_is_not_in_sync() -> None:
    plan = plan_merge(
        "card-1", 100, 1, [state("shopify", 100, currency="NZD"), state("lightspeed", 100)]
    )
    assert plan.moves == () and plan.deactivate == () and plan.findings != ()
    assert not in_sync(plan)


# --- properties -----------------------------------------------------------------------------

SYSTEMS = ["shopify", "lightspeed", "onsite", "other"]
amounts = st.integers(min_value=0, max_value=10_000_000)


@st.composite
def merge_inputs(draw: st.DrawFn) -> tuple[int, int, list[SystemState]]:
    base = draw(amounts)
    version = draw(st.integers(min_value=0, max_value=1_000))
    count = draw(st.integers(min_value=1, max_value=len(SYSTEMS)))
    states = [state(name, draw(amounts)) for name in SYSTEMS[:count]]
    return base, version, states


@PROPERTY
@given(merge_inputs())
def test_property_every_system_reaches_the_target(
    inputs: tuple[int, int, list[SystemState]],
) -> None:
    base, version, states = inputs
    plan = plan_merge("card-p", base, version, states)
    assert set(applied(states, plan).values()) == {plan.target_minor}
    assert plan.deactivate == ()


@PROPERTY
@given(merge_inputs())
def test_property_target_is_base_plus_deltas_or_zero_with_overdraft(
    inputs: tuple[int, int, list[SystemState]],
) -> None:
    base, version, states = inputs
    plan = plan_merge("card-p", base, version, states)
    raw = base + sum(s.balance_minor - base for s in states)
    if raw >= 0:
        assert plan.target_minor == raw
        assert plan.findings == ()
    else:
        assert plan.target_minor == 0
        assert [f.type for f in plan.findings] == ["overdraft"]
        assert plan.findings[0].evidence["raw_target_minor"] == raw


@PROPERTY
@given(merge_inputs())
def test_property_moves_are_nonzero_unique_and_conserve_money(
    inputs: tuple[int, int, list[SystemState]],
) -> None:
    base, version, states = inputs
    plan = plan_merge("card-p", base, version, states)
    assert all(m.amount_minor != 0 for m in plan.moves)
    systems = [m.system for m in plan.moves]
    assert len(systems) == len(set(systems))
    assert sum(m.amount_minor for m in plan.moves) == sum(
        plan.target_minor - s.balance_minor for s in states
    )
    assert all(m.idempotency_key == move_key("card-p", version, m.system) for m in plan.moves)


@PROPERTY
@given(merge_inputs())
def test_property_plan_is_deterministic_and_version_moves_only_on_change(
    inputs: tuple[int, int, list[SystemState]],
) -> None:
    base, version, states = inputs
    plan = plan_merge("card-p", base, version, states)
    assert plan == plan_merge("card-p", base, version, list(states))
    changed = bool(plan.moves) or plan.target_minor != base
    assert plan.new_base_version == (version + 1 if changed else version)


@PROPERTY
@given(merge_inputs(), st.data())
def test_property_any_disabled_system_never_yields_moves(
    inputs: tuple[int, int, list[SystemState]], data: st.DataObject
) -> None:
    base, version, states = inputs
    off = data.draw(st.sets(st.sampled_from([s.system for s in states]), min_size=1))
    states = [
        state(s.system, s.balance_minor, "disabled" if s.system in off else "enabled")
        for s in states
    ]
    plan = plan_merge("card-p", base, version, states)
    assert plan.moves == ()
    enabled = tuple(s.system for s in states if s.system not in off)
    if any(s.balance_minor > base for s in states if s.system not in off):
        assert [f.type for f in plan.findings] == ["status_conflict"]
        assert plan.deactivate == ()
    else:
        assert plan.deactivate == enabled


def test_a_card_disabled_everywhere_keeps_its_base_whatever_the_balances_show() -> None:
    """Shopify keeps 50 after deactivation, OnSite spent its copy down to 0: merging again
    and again must not flip the base between them."""
    states = [state("shopify", 5000, "disabled"), state("onsite", 0, "disabled")]

    first = plan_merge("card-1", 5000, 3, states)
    second = plan_merge("card-1", first.target_minor, first.new_base_version, states)

    assert (first.target_minor, first.new_base_version) == (5000, 3)
    assert (second.target_minor, second.new_base_version) == (5000, 3)
    assert in_sync(first) and in_sync(second)
