"""The shadow card money rules as pure functions of minor units (no I/O, mutation-tested).

Names: `loaded` is what giftsync put on the Shopify card (create + credits - debits), `balance`
what the card holds now, so `loaded - balance` is what orders spent (net of refunds to it);
`captured` is what Vii already took; `hold` the open pre-authorisation.
"""

from __future__ import annotations

from dataclasses import dataclass


def first_apply(available: int, cart: int) -> int:
    """A new card holds and shows what Vii has, up to the cart."""
    return max(min(available, cart), 0)


def owed(loaded: int, balance: int, captured: int) -> int:
    """Spent through Shopify and not yet taken from Vii: the hold must keep backing it."""
    return loaded - balance - captured


@dataclass(frozen=True)
class Resize:
    new_balance: int
    """What the Shopify card should hold after this call (when no new hold is needed)."""
    needs_new_hold: bool
    """The cart wants more than the hold can back and Vii had more: grow the hold (PIN)."""


def resize(
    *, cart: int, balance: int, loaded: int, captured: int, hold: int, vii_balance: int
) -> Resize:
    """Re-size within the hold: the hold backs what is owed first, the card gets the rest."""
    room = hold - owed(loaded, balance, captured)
    if cart > room and vii_balance > hold:
        return Resize(new_balance=balance, needs_new_hold=True)
    return Resize(new_balance=max(min(cart, room), 0), needs_new_hold=False)


def close(*, loaded: int, final_balance: int, captured: int) -> int:
    """What the close captures: everything the dead card spent, less what was taken already.

    Negative when more was taken (at a re-hold) than the card finally spent: a refund reached
    the card after that capture, and Vii has no credit, so staff must give it back.
    """
    return loaded - final_balance - captured
