"""Query parameters of Lightspeed's API V3 as the simulator reads them: filters, sorting,
relations, paging and what each costs (query-parameters.md, pagination.md, relations.md)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from app.sandbox.lightspeed_merchant import Readings, Refusal

MAX_LIMIT = 100
# query-parameters.md: the operator goes in the value, `field=<op>,<value>` (URL-encoded).
_OPERATORS = (">=", "<=", "!=", "><", "!~", ">", "<", "~", "=")
# query-parameters.md: 'YYYY-MM-DDTHH:MM:SS-00:00'; searching.md also shows '-0400'.
_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")


@dataclass(frozen=True)
class Endpoint:
    """What one endpoint's page documents: sortable fields and relations (to-one or many)."""

    sortable: tuple[str, ...]
    relations: Mapping[str, bool]
    """Relation name -> True when it is X-to-many."""


# Each endpoint page's "Sortable Fields" and "Relations" lists.
ENDPOINTS = {
    "CreditAccount": Endpoint(
        ("creditAccountID", "timeStamp", "customerID"),
        {"Contact": False, "WithdrawalPayments": True},
    ),
    "Sale": Endpoint(
        ("saleID", "timeStamp", "completeTime", "updatetime"),
        {
            "SaleLines": True,
            "SaleLines.Note": False,
            "SaleLines.Item": False,
            "SaleNotes": True,
            "SalePayments": True,
            "SalePayments.PaymentType": False,
            "SalePayments.SaleAccounts": True,
            "Customer": False,
            "Customer.Contact": False,
        },
    ),
    "SalePayment": Endpoint(
        ("salePaymentID", "timeStamp", "saleID"),
        {"PaymentType": False, "CCCharge": False, "SaleAccounts": True, "Signatures": True},
    ),
    "PaymentType": Endpoint(("paymentTypeID",), {}),
    "Register": Endpoint(("registerID",), {}),
    "Shop": Endpoint(("shopID",), {"Registers": True, "Contact": False}),
    "Employee": Endpoint(("employeeID", "timeStamp"), {"Contact": False}),
    "Customer": Endpoint(("customerID", "timeStamp"), {"Contact": False}),
}


def split_operator(raw: str) -> tuple[str, str]:
    for operator in _OPERATORS:
        if raw.startswith(operator + ","):
            return operator, raw[len(operator) + 1 :]
    return "=", raw


def parse_time(raw: str, readings: Readings) -> datetime:
    match = _TIMESTAMP.match(raw.strip())
    if match is None:
        raise Refusal(400, "timeStamp must be YYYY-MM-DDTHH:MM:SS with an offset")
    whole, fraction, zone = match.groups()
    if fraction and readings.fractional_timestamps == "reject":
        raise Refusal(400, "timeStamp must have whole seconds")
    if zone and zone != "Z" and ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    moment = datetime.fromisoformat(whole + ("+00:00" if zone in (None, "Z") else zone))
    return moment.astimezone(UTC)


def time_matches(actual: datetime, raw: str, readings: Readings) -> bool:
    operator, value = split_operator(raw)
    if operator == "><":
        low, _, high = value.partition(",")
        return parse_time(low, readings) <= actual <= parse_time(high, readings)
    return compare(actual, parse_time(value, readings), operator)


def value_matches(actual: str, raw: str) -> bool:
    operator, value = split_operator(raw)
    if operator in ("=", "!="):
        return (actual == value) == (operator == "=")
    if operator == "><":
        low, _, high = value.partition(",")
        return _number(low) <= _number(actual) <= _number(high)
    if operator in ("~", "!~"):
        # `%` is the wildcard of the like operators.
        pattern = "^" + ".*".join(re.escape(part) for part in value.split("%")) + "$"
        return bool(re.match(pattern, actual)) == (operator == "~")
    return compare(_number(actual), _number(value), operator)


def compare(left: Any, right: Any, operator: str) -> bool:
    comparisons: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: bool(a == b),
        "!=": lambda a, b: bool(a != b),
        ">": lambda a, b: bool(a > b),
        ">=": lambda a, b: bool(a >= b),
        "<": lambda a, b: bool(a < b),
        "<=": lambda a, b: bool(a <= b),
    }
    return comparisons[operator](left, right)


def _number(raw: str) -> Decimal:
    try:
        return Decimal(raw)
    except InvalidOperation as exc:
        raise Refusal(400, "a range operator needs a number") from exc


def sort_key(endpoint: str, raw: str | None, default: str) -> tuple[str, bool]:
    """pagination.md: only the endpoint's sortable fields; any other is an error naming them."""
    given = raw or default
    field_name = given.lstrip("-")
    allowed = ENDPOINTS[endpoint].sortable
    if field_name not in allowed:
        raise Refusal(400, f"sort must be one of {', '.join(allowed)}")
    return field_name, given.startswith("-")


def relations(endpoint: str, raw: str | None, readings: Readings) -> set[str]:
    """relations.md: `load_relations` is a JSON array of the endpoint's documented relations."""
    if not raw:
        return set()
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise Refusal(400, "load_relations must be a JSON array") from exc
    names = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    known = ENDPOINTS[endpoint].relations
    unknown = [name for name in names if name not in known]
    if unknown and readings.refuse_unknown_relations:
        raise Refusal(400, f"{endpoint} has no relation {unknown[0]}")
    return {name for name in names if name in known}


def relations_cost(endpoint: str, loaded: set[str], *, query: bool) -> float:
    """relations.md: +0.1 per X-to-one, +0.2 per X-to-many, doubled on a query endpoint."""
    known = ENDPOINTS[endpoint].relations
    cost = sum(0.2 if known[name] else 0.1 for name in loaded)
    return cost * (2 if query else 1)


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": position}).encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> int:
    try:
        padded = raw + "=" * (-len(raw) % 4)
        return max(int(json.loads(base64.urlsafe_b64decode(padded))["o"]), 0)
    except (ValueError, KeyError, TypeError) as exc:
        raise Refusal(400, "invalid cursor") from exc


def page_limit(raw: str | None) -> int:
    """query-parameters.md: limit 0 to 100, default 100."""
    if raw is None:
        return MAX_LIMIT
    if not raw.isdigit() or int(raw) > MAX_LIMIT:
        raise Refusal(400, "limit must be between 0 and 100")
    return int(raw)
