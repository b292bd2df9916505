from __future__ import annotations

from decimal import Decimal

import pytest

from app.money import format_minor, parse_amount, to_minor
from tests.pure import clean_database  # noqa: F401


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("12.50", "12.50"), (12.5, "12.50"), (120, "120.00"), ("0.1", "0.10"), (0.1, "0.10")],
)
def test_amounts_from_strings_and_json_numbers(raw: object, expected: str) -> None:
    assert f"{parse_amount(raw)}" == expected


@pytest.mark.parametrize(
    "raw",
    [
        "12.505",
        10.005,
        "-1",
        -0.01,
        "NaN",
        float("nan"),
        "Infinity",
        "1e400",
        True,
        None,
        "",
        "abc",
        "1e-7",
        "٣٣",
    ],
)
def test_bad_amounts_are_refused(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_amount(raw)


def test_maximum_is_enforced() -> None:
    with pytest.raises(ValueError, match=r"exceed 100\.00"):
        parse_amount("100.01", maximum=Decimal("100.00"))


def test_minor_units_round_trip() -> None:
    assert to_minor(Decimal("12.50")) == 1250
    assert format_minor(1250) == "12.50" and format_minor(-5) == "-0.05"
