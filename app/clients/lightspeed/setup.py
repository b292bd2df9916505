"""The merchant's set-up a gift card sale names, read back from Lightspeed and judged.

A sale names a shop, a register and an employee, and balances the card's payment with a payment
type of the merchant's (`LIGHTSPEED_SHOP_ID`, `_REGISTER_ID`, `_EMPLOYEE_ID`, `_PAYMENT_TYPE_ID`).
Each is checked against what the account holds; so are the gift card payment type and whether
codes come back unmasked. A failed `error` check blocks every write (`SetupGate`, in
`app/clients/setup_checks.py`); a `warning` is shown and nothing more.

Sources: sale.md (the three foreign keys), register.md (a register is in one shop),
tutorials/gift-cards.md (not a register named `eCom`, case sensitive; the gift card type),
paymenttype.md (types: cash, credit card, gift card, credit account, user defined),
creditaccount.md and access-scopes.md (codes are masked without the scope below).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.clients.lightspeed.errors import LightspeedUnavailable
from app.clients.lightspeed.models import as_bool, as_list
from app.clients.setup_checks import SETUP_TTL_S, SetupCheck, check

GIFT_CARD_SCOPE = "employee:customers_view_gift_card_numbers"
ECOM_REGISTER_NAME = "eCom"

Reader = Callable[[str, dict[str, str] | None], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class SaleSetup:
    """The ids every gift card sale names; None where the setting is not given."""

    shop_id: str | None = None
    register_id: str | None = None
    employee_id: str | None = None
    payment_type_id: str | None = None


class LightspeedSetupError(LightspeedUnavailable):
    """A write was not sent: the set-up it would name fails a check (see `/readyz`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=SETUP_TTL_S)


async def _shop_and_register(read: Reader, setup: SaleSetup) -> list[SetupCheck]:
    shop_setting, register_setting = "LIGHTSPEED_SHOP_ID", "LIGHTSPEED_REGISTER_ID"
    checks: list[SetupCheck] = []
    registers: dict[str, dict[str, Any]] = {}
    if setup.shop_id is None:
        checks.append(check("lightspeed_shop", False, "not set", setting=shop_setting))
    else:
        # One read for the shop and its registers: shop.md's `Registers` relation.
        body = await read(f"Shop/{setup.shop_id}.json", {"load_relations": '["Registers"]'})
        shop = next(iter(as_list(body.get("Shop") if body else None)), None)
        if shop is None:
            detail = f"no shop {setup.shop_id} on this account"
        elif as_bool(shop.get("archived")):
            detail = f"shop {setup.shop_id} is archived"
        else:
            detail = f"shop {setup.shop_id} ({shop.get('name', '')})"
            holder = shop.get("Registers")
            nested = holder.get("Register") if isinstance(holder, dict) else None
            registers = {str(r.get("registerID")): r for r in as_list(nested)}
        ok = detail.startswith(f"shop {setup.shop_id} (")
        checks.append(
            check("lightspeed_shop", ok, detail, setting=shop_setting, value=setup.shop_id)
        )
    if setup.register_id is None:
        checks.append(check("lightspeed_register", False, "not set", setting=register_setting))
        return checks
    register = registers.get(setup.register_id)
    if register is None:
        body = await read(f"Register/{setup.register_id}.json", None)
        register = next(iter(as_list(body.get("Register") if body else None)), None)
    checks.append(
        check(
            "lightspeed_register",
            *_judge_register(register, setup),
            setting=register_setting,
            value=setup.register_id,
        )
    )
    return checks


def _judge_register(register: dict[str, Any] | None, setup: SaleSetup) -> tuple[bool, str]:
    if register is None:
        return False, f"no register {setup.register_id} on this account"
    name = str(register.get("name", ""))
    if name == ECOM_REGISTER_NAME:
        # tutorials/gift-cards.md: "must not be named (case sensitive) eCom".
        return False, f"register {setup.register_id} is named eCom: gift card sales refuse it"
    if as_bool(register.get("archived")):
        return False, f"register {setup.register_id} ({name}) is archived"
    in_shop = str(register.get("shopID", ""))
    if setup.shop_id is not None and in_shop != setup.shop_id:
        return False, f"register {setup.register_id} ({name}) is in shop {in_shop}"
    return True, f"register {setup.register_id} ({name})"


async def _employee(read: Reader, setup: SaleSetup) -> SetupCheck:
    setting = "LIGHTSPEED_EMPLOYEE_ID"
    if setup.employee_id is None:
        return check("lightspeed_employee", False, "not set", setting=setting)
    body = await read(f"Employee/{setup.employee_id}.json", None)
    employee = next(iter(as_list(body.get("Employee") if body else None)), None)
    value = setup.employee_id
    if employee is None:
        return check(
            "lightspeed_employee", False, f"no employee {value}", setting=setting, value=value
        )
    name = f"{employee.get('firstName', '')} {employee.get('lastName', '')}".strip()
    if as_bool(employee.get("archived")):
        return check(
            "lightspeed_employee", False, f"employee {value} ({name}) is archived",
            setting=setting, value=value,
        )  # fmt: skip
    limited = str(employee.get("limitToShopID") or "0")
    if limited not in ("0", setup.shop_id):
        # employee.md's limitToShopID: such an employee works in one other shop only.
        return check(
            "lightspeed_employee", False, f"employee {value} ({name}) is limited to shop {limited}",
            setting=setting, value=value, severity="warning",
        )  # fmt: skip
    return check(
        "lightspeed_employee", True, f"employee {value} ({name})", setting=setting, value=value
    )


async def _payment_types(read: Reader, setup: SaleSetup) -> list[SetupCheck]:
    body = await read("PaymentType.json", {"archived": "true"})
    types = {
        str(t.get("paymentTypeID")): t for t in as_list(body.get("PaymentType") if body else None)
    }
    gift = [t for t in types.values() if _kind(t) == "gift card" and not as_bool(t.get("archived"))]
    checks = [
        check(
            "lightspeed_gift_card_type",
            bool(gift),
            f"payment type {gift[0].get('paymentTypeID')} ({gift[0].get('name', '')})"
            if gift
            else "the account has no payment type of type 'gift card'",
        )
    ]
    setting, value = "LIGHTSPEED_PAYMENT_TYPE_ID", setup.payment_type_id
    chosen = types.get(value) if value is not None else None
    if value is None:
        checks.append(check("lightspeed_payment_type", False, "not set", setting=setting))
    elif chosen is None or as_bool(chosen.get("archived")):
        what = "is archived" if chosen is not None else "does not exist"
        checks.append(
            check(
                "lightspeed_payment_type",
                False,
                f"payment type {value} {what}",
                setting=setting,
                value=value,
            )
        )
    else:
        kind, name = _kind(chosen), str(chosen.get("name", ""))
        label = f"payment type {value} ({name}, type {kind})"
        if kind in ("gift card", "credit account"):
            checks.append(
                check("lightspeed_payment_type", False, f"{label} moves a card or an account, "
                       "it cannot balance one", setting=setting, value=value)
            )  # fmt: skip
        elif kind == "cash":
            # register.md: each register keeps a cash count per payment type; online money
            # booked as cash makes the drawer's count wrong.
            checks.append(
                check("lightspeed_payment_type", False, f"{label} puts online money in the "
                       "register drawer's count", setting=setting, value=value, severity="warning")
            )  # fmt: skip
        else:
            checks.append(
                check("lightspeed_payment_type", True, label, setting=setting, value=value)
            )
    return checks


def _kind(payment_type: dict[str, Any]) -> str:
    return str(payment_type.get("type", "")).strip().lower()


def codes_check(masked: bool | None) -> SetupCheck:
    if masked is None:
        return check("lightspeed_gift_card_codes", True, "no gift card read yet to tell")
    if masked:
        return check(
            "lightspeed_gift_card_codes",
            False,
            f"gift card codes come back masked: grant the scope {GIFT_CARD_SCOPE}",
        )
    return check("lightspeed_gift_card_codes", True, "gift card codes come back whole")


async def read_checks(read: Reader, setup: SaleSetup) -> list[SetupCheck]:
    """Every set-up check but the codes one, in four requests (about 4.2 bucket units)."""
    checks = await _shop_and_register(read, setup)
    checks.append(await _employee(read, setup))
    checks.extend(await _payment_types(read, setup))
    return checks


async def probe_codes(read: Reader) -> bool | None:
    """Whether one gift card's code comes back masked (None: the account has none yet)."""
    body = await read("CreditAccount.json", {"giftCard": "true", "archived": "true", "limit": "1"})
    for card in as_list(body.get("CreditAccount") if body else None):
        return "*" in str(card.get("code", ""))
    return None
