"""What each finding means and what staff do about it, in words, for the console.

Every finding type a flow records (app/sync: merge, omni, reconcile, shadow) has an entry; an
unknown type still shows its evidence. Evidence is shown with money in currency units: keys
ending in `_minor` and the per-system `balances` are minor units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.money import format_minor


@dataclass(frozen=True)
class Explanation:
    meaning: str
    action: str


EXPLANATIONS: dict[str, Explanation] = {
    "status_conflict": Explanation(
        "One system has switched the card off while another changed its balance since they "
        "last agreed. giftsync cannot tell which is right, so it changed nothing.",
        "Decide with the shopper: switch the card off everywhere (archive it on the POS, "
        "deactivate it in Shopify), or switch it back on where it was switched off. Then "
        "re-run reconcile for the card: a run that sees it settled resolves this finding.",
    ),
    "overdraft": Explanation(
        "More was spent across the systems than the card held; giftsync set both sides to 0. "
        "The shortfall is money already spent twice.",
        "Chase the shortfall (see the evidence) with the shopper or write it off, then "
        "resolve with a note saying which.",
    ),
    "currency_mismatch": Explanation(
        "The systems hold this card in different currencies, so no balance can be compared.",
        "Correct the currency on the system that is wrong, then re-run reconcile for the card.",
    ),
    "missing_link": Explanation(
        "giftsync cannot tell which card in the other system is this card's twin (it is "
        "missing, or a different card already has its code).",
        "Look the card up by its last 4 in both systems; fix or deactivate the wrong one, then "
        "re-run reconcile. If nothing is wrong, resolve with a note.",
    ),
    "unusable_serial": Explanation(
        "A card sold on the POS has a serial Shopify cannot take as a code (8 to 20 letters "
        "and digits), so it exists on the POS only. giftsync never alters a code.",
        "Re-issue the card on the POS with a serial Shopify accepts and move the balance, "
        "then resolve with a note.",
    ),
    "unrepairable": Explanation(
        "A repair was refused by an upstream and will not succeed by retrying (the reason is "
        "in the evidence).",
        "Fix what the reason names in that system, then re-run reconcile for the card.",
    ),
    "refund_needs_staff": Explanation(
        "A refund was made to a Vii shadow card after the money was captured from Vii, and Vii "
        "has no way for giftsync to credit it back.",
        "Refund the shopper by hand (in Vii or at the till) for the amount in the evidence, "
        "then resolve with a note.",
    ),
    "orphan_shadow_card": Explanation(
        "A Shopify card made for a checkout had no Vii hold behind it; reconcile deactivated "
        "it so it cannot be spent.",
        "Nothing to do unless a shopper complains; resolve with a note once checked.",
    ),
    "hold_without_card": Explanation(
        "A Vii hold stayed open while its Shopify card was switched off; reconcile closed the "
        "checkout so the hold is captured or released.",
        "Nothing to do unless the shopper's Vii balance looks wrong; resolve once checked.",
    ),
}


def explain(finding_type: str) -> Explanation | None:
    return EXPLANATIONS.get(finding_type)


def evidence_rows(evidence: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs with money as money and lists and maps spelled out."""
    rows = []
    for key, value in evidence.items():
        label = key.removesuffix("_minor").replace("_", " ")
        rows.append((label, _value(key, value)))
    return rows


def _value(key: str, value: Any) -> str:
    if key.endswith("_minor") and isinstance(value, int) and not isinstance(value, bool):
        return format_minor(value)
    if key == "balances" and isinstance(value, dict):
        return ", ".join(f"{system} {_money(amount)}" for system, amount in value.items())
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "—" if value is None else str(value)


def _money(amount: Any) -> str:
    if isinstance(amount, int) and not isinstance(amount, bool):
        return format_minor(amount)
    return str(amount)
