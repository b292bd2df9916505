"""The POS set-up read back and named for `/readyz` and `giftsync pos check` (issue 15).

An unknown id, a register named `eCom`, masked codes, a missing OnSite product or payment
method are `error` checks; a balancing payment type of type `cash` is a `warning`; a POS that
cannot be read is one `error` check, never an exception, and never stops giftsync from starting.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import typer
from typer.testing import CliRunner, Result

from app.cli_pos import pos
from app.readiness import readiness
from app.runtime import Runtime
from app.sandbox.faults import Faults
from app.sandbox.lightspeed import LightspeedSimulator
from app.sandbox.lightspeed_merchant import GIFT_CARD_SCOPE
from app.sandbox.onsite import OnSiteReadings, OnSiteSimulator
from app.settings import PosKind
from app.sync.pos import setup as pos_setup
from app.sync.pos.setup import failed_errors, pos_setup_checks
from tests.conftest import make_settings
from tests.pos_support import ls_client, onsite_client

RETAIL = make_settings(pos_kind="retail")
ONSITE = make_settings(pos_kind="onsite")


async def test_a_correct_r_series_set_up_reads_ok_by_name() -> None:
    sim = LightspeedSimulator(drip_rate=1000)
    sim.add_gift_card("2000000000000001", Decimal("5"))
    client = ls_client(sim)
    try:
        checks = await pos_setup_checks(RETAIL, client)
    finally:
        await client.aclose()
    assert list(checks) == [
        "lightspeed_shop",
        "lightspeed_register",
        "lightspeed_employee",
        "lightspeed_gift_card_type",
        "lightspeed_payment_type",
        "lightspeed_gift_card_codes",
    ]
    assert failed_errors(checks) == []
    assert checks["lightspeed_register"] == {
        "ok": True,
        "severity": "error",
        "detail": "register 4 (Online Gift Cards)",
        "setting": "LIGHTSPEED_REGISTER_ID",
        "value": "4",
    }


@pytest.mark.parametrize(
    ("set_up", "scope_withdrawn", "failed"),
    [
        ({"shop_id": "9"}, False, ["lightspeed_shop", "lightspeed_register"]),
        ({"register_id": "3"}, False, ["lightspeed_register"]),
        ({"employee_id": "42"}, False, ["lightspeed_employee"]),
        ({"payment_type_id": "99"}, False, ["lightspeed_payment_type"]),
        ({}, True, ["lightspeed_gift_card_codes"]),
    ],
    ids=["unknown-shop", "ecom-register", "unknown-employee", "unknown-type", "masked-codes"],
)
async def test_each_r_series_problem_is_an_error_by_name(
    set_up: dict[str, str], scope_withdrawn: bool, failed: list[str]
) -> None:
    sim = LightspeedSimulator(drip_rate=1000)
    sim.add_gift_card("2000000000000001", Decimal("5"))
    if scope_withdrawn:
        sim.withdraw_scope(GIFT_CARD_SCOPE)
    client = ls_client(sim, set_up={**sim.correct_set_up(), **set_up})
    try:
        checks = await pos_setup_checks(RETAIL, client)
    finally:
        await client.aclose()
    assert failed_errors(checks) == failed


async def test_a_cash_balancing_type_is_only_a_warning() -> None:
    sim = LightspeedSimulator(drip_rate=1000)
    client = ls_client(sim, set_up={**sim.correct_set_up(), "payment_type_id": "1"})
    try:
        checks = await pos_setup_checks(RETAIL, client)
    finally:
        await client.aclose()
    assert failed_errors(checks) == []
    assert checks["lightspeed_payment_type"]["ok"] is False
    assert checks["lightspeed_payment_type"]["severity"] == "warning"


@pytest.mark.parametrize(
    ("readings", "set_up", "failed"),
    [
        (OnSiteReadings.strict(), {}, []),
        (OnSiteReadings.strict(), {"gift_card_product_code": "NOPE"}, ["onsite_gift_card_product"]),
        (OnSiteReadings.lenient(), {"payment_method": "Bitcoin"}, ["onsite_payment_method"]),
    ],
    ids=["correct", "missing-product", "missing-method"],
)
async def test_each_onsite_problem_is_an_error_by_name(
    readings: OnSiteReadings, set_up: dict[str, str], failed: list[str]
) -> None:
    sim = OnSiteSimulator(readings=readings)
    client = onsite_client(sim, **set_up)
    try:
        checks = await pos_setup_checks(ONSITE, client)
    finally:
        await client.aclose()
    assert list(checks) == [
        "onsite_gift_card_product",
        "onsite_payment_method",
        "onsite_modified_filter",
    ]
    assert failed_errors(checks) == failed


async def test_a_pos_that_cannot_be_read_is_one_error_and_is_not_asked_again_at_once() -> None:
    sim = OnSiteSimulator(Faults(error_rate=1.0))
    client = onsite_client(sim, read_attempts=1)
    try:
        first = await pos_setup_checks(ONSITE, client)
        asked = len(sim.request_log)
        again = await pos_setup_checks(ONSITE, client)
    finally:
        await client.aclose()
    assert list(first) == ["pos_setup"] and first == again
    assert (first["pos_setup"]["ok"], first["pos_setup"]["severity"]) == (False, "error")
    assert "could not read the POS set-up" in first["pos_setup"]["detail"]
    assert len(sim.request_log) == asked
    pos_setup._failures.clear()


async def test_no_pos_means_no_checks() -> None:
    assert await pos_setup_checks(make_settings(pos_kind="none"), None) == {}
    unwired = await pos_setup_checks(RETAIL, None)
    assert failed_errors(unwired) == ["pos_setup"]


async def test_readyz_is_503_on_a_pos_error_and_ready_on_a_warning(runtime: Runtime) -> None:
    sim = LightspeedSimulator(drip_rate=1000)
    wrong = ls_client(sim, set_up={**sim.correct_set_up(), "register_id": "3"})
    cash = ls_client(sim, set_up={**sim.correct_set_up(), "payment_type_id": "1"})
    runtime.settings = runtime.settings.model_copy(update={"pos_kind": PosKind.RETAIL})
    try:
        refused = await readiness(runtime, extra=lambda: pos_setup_checks(runtime.settings, wrong))
        warned = await readiness(runtime, extra=lambda: pos_setup_checks(runtime.settings, cash))
    finally:
        await wrong.aclose()
        await cash.aclose()
    assert refused["checks"]["lightspeed_register"]["ok"] is False
    assert "eCom" in refused["checks"]["lightspeed_register"]["detail"]
    assert refused["status"] == "not_ready"
    pos_checks = {k: v for k, v in warned["checks"].items() if k.startswith("lightspeed_")}
    assert pos_checks["lightspeed_payment_type"]["severity"] == "warning"
    assert pos_checks["lightspeed_payment_type"]["ok"] is False
    # A warning never counts against readiness: no POS check is a failed error.
    assert failed_errors(pos_checks) == []


# ---- giftsync pos check ------------------------------------------------------------------------


# As the lead registers it in app/cli.py: `cli.add_typer(cli_pos.pos, name="pos")`.
giftsync = typer.Typer()
giftsync.add_typer(pos, name="pos")


def _invoke(database_url: str, **env: str) -> Result:
    return CliRunner().invoke(
        giftsync,
        ["pos", "check"],
        env={
            "DATABASE_URL": database_url,
            "SANDBOX": "true",
            "LOG_JSON": "true",
            "LOG_LEVEL": "WARNING",
            "COLUMNS": "220",
            **env,
        },
    )


async def test_pos_check_prints_the_checks_and_exits_0_on_the_sandboxs_set_up(
    database_url: str, clean_env: pytest.MonkeyPatch
) -> None:
    result = await asyncio.to_thread(_invoke, database_url, POS_KIND="retail")
    assert result.exit_code == 0, result.output
    for name in ("lightspeed_shop", "lightspeed_register", "lightspeed_payment_type"):
        assert name in result.output
    assert "Online Gift Cards" in result.output


async def test_pos_check_names_the_problem_and_exits_1(
    database_url: str, clean_env: pytest.MonkeyPatch
) -> None:
    result = await asyncio.to_thread(
        _invoke, database_url, POS_KIND="retail", LIGHTSPEED_REGISTER_ID="3"
    )
    assert result.exit_code == 1
    assert "eCom" in result.output and "lightspeed_register" in result.output


async def test_pos_check_onsite_sandbox_passes(
    database_url: str, clean_env: pytest.MonkeyPatch
) -> None:
    result = await asyncio.to_thread(_invoke, database_url, POS_KIND="onsite")
    assert result.exit_code == 0, result.output
    assert "onsite_gift_card_product" in result.output
