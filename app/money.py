"""Money at the edges: decimal strings in, integer minor units inside, two-place strings out."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

CENT = Decimal("0.01")
# ASCII digits only: Decimal() would accept other scripts' digits and exponents.
_PLAIN_DECIMAL = re.compile(r"-?[0-9]{1,15}(\.[0-9]+)?", re.ASCII)


def parse_amount(raw: object, *, maximum: Decimal | None = None) -> Decimal:
    """A non-negative amount with at most two places, from a string or a JSON number.

    JSON numbers arrive as floats; their shortest repr is what the sender wrote, so
    `Decimal(repr(x))` recovers it without binary noise. Booleans are not numbers here.
    """
    if isinstance(raw, bool) or raw is None:
        raise ValueError("must be a decimal amount such as 12.50")
    text = repr(raw) if isinstance(raw, float) else str(raw).strip()
    if text.lower() in {"nan", "inf", "-inf", "infinity", "-infinity"}:
        raise ValueError("must be a finite amount")
    if not _PLAIN_DECIMAL.fullmatch(text):
        raise ValueError("must be a decimal amount such as 12.50")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError("must be a decimal amount such as 12.50") from None
    if not value.is_finite():
        raise ValueError("must be a finite amount")
    if value < 0:
        raise ValueError("must not be negative")
    if value.adjusted() >= 15:
        raise ValueError("is too large")
    if value != value.quantize(CENT):
        raise ValueError("at most two decimal places")
    if maximum is not None and value > maximum:
        raise ValueError(f"must not exceed {maximum:.2f}")
    return value.quantize(CENT)


def to_minor(amount: Decimal) -> int:
    if amount != amount.quantize(CENT):
        raise ValueError("amount has more than two decimal places")
    return int(amount * 100)


def from_minor(minor: int) -> Decimal:
    return (Decimal(minor) / 100).quantize(CENT)


def format_minor(minor: int) -> str:
    return f"{from_minor(minor):.2f}"
