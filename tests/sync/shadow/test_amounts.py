"""The pure shadow money rules (app/sync/shadow/amounts.py), without PostgreSQL.

Exact examples pin each rule; properties check that any sequence of re-sizes and spends keeps
the open-card invariant (hold + captured >= what the card was given) and that the close takes
exactly what was spent.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.sync.shadow import amounts
from tests.pure import clean_database  # noqa: F401


@pytest.mark.parametrize(
    ("available", "cart", "applied"),
    [(5000, 12000, 5000), (5000, 4000, 4000), (5000, 5000, 5000), (0, 100, 0), (100, 0, 0)],
)
def test_first_apply_is_min_of_available_and_cart(available: int, cart: int, applied: int) -> None:
    assert amounts.first_apply(available, cart) == applied


def test_owed_is_spent_less_captured() -> None:
    assert amounts.owed(loaded=5000, balance=2000, captured=1000) == 2000
    assert amounts.owed(loaded=5000, balance=5000, captured=0) == 0


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # Shrink: the hold stays, the card drops.
        (
            dict(cart=2000, balance=5000, loaded=5000, captured=0, hold=5000, vii_balance=5000),
            amounts.Resize(2000, False),
        ),
        # Grow within the hold after a 1000 spend: 4000 is all the hold still backs.
        (
            dict(cart=5000, balance=1000, loaded=2000, captured=0, hold=5000, vii_balance=5000),
            amounts.Resize(4000, False),
        ),
        # Grow above the hold while Vii had more: a new hold (needs the PIN).
        (
            dict(cart=6000, balance=5000, loaded=5000, captured=0, hold=5000, vii_balance=9000),
            amounts.Resize(5000, True),
        ),
        # Exactly the room: no new hold.
        (
            dict(cart=4000, balance=1000, loaded=2000, captured=0, hold=5000, vii_balance=9000),
            amounts.Resize(4000, False),
        ),
        # Vii had nothing more: the card gets what the hold backs.
        (
            dict(cart=6000, balance=3000, loaded=5000, captured=0, hold=5000, vii_balance=5000),
            amounts.Resize(3000, False),
        ),
        # After a re-hold captured 1000: the new hold backs the card alone.
        (
            dict(cart=3000, balance=4000, loaded=5000, captured=1000, hold=4000, vii_balance=4000),
            amounts.Resize(3000, False),
        ),
    ],
)
def test_resize_examples(kwargs: dict[str, int], expected: amounts.Resize) -> None:
    assert amounts.resize(**kwargs) == expected


def test_close_takes_what_was_spent_less_what_was_taken() -> None:
    assert amounts.close(loaded=5000, final_balance=0, captured=0) == 5000
    assert amounts.close(loaded=5000, final_balance=1500, captured=1000) == 2500
    assert amounts.close(loaded=5000, final_balance=5000, captured=0) == 0
    # Refunded onto the card after a re-hold took 3000: more was taken than finally spent.
    assert amounts.close(loaded=3000, final_balance=1000, captured=3000) == -1000


STEPS = st.lists(
    st.tuples(st.sampled_from(["resize", "spend"]), st.integers(0, 10_000)), max_size=20
)


@given(available=st.integers(1, 10_000), first_cart=st.integers(1, 10_000), steps=STEPS)
def test_any_resizes_and_spends_keep_the_hold_covering_and_close_exactly(
    available: int, first_cart: int, steps: list[tuple[str, int]]
) -> None:
    hold = loaded = balance = amounts.first_apply(available, first_cart)
    spent = 0
    for action, value in steps:
        if action == "spend":
            amount = min(value, balance)
            balance -= amount
            spent += amount
        else:
            plan = amounts.resize(
                cart=value,
                balance=balance,
                loaded=loaded,
                captured=0,
                hold=hold,
                vii_balance=hold,
            )
            assert not plan.needs_new_hold  # Vii had nothing beyond the hold
            loaded += plan.new_balance - balance
            balance = plan.new_balance
            assert balance == min(value, hold - spent)
        assert hold >= spent + balance  # open: the hold covers spent plus spendable
        assert loaded - balance == spent
    assert amounts.close(loaded=loaded, final_balance=balance, captured=0) == spent
