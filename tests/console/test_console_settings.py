"""Merchant settings in the console: stored over the environment, validated, audited, in force
at once in this process and at the next refresh in any other (DESIGN 1.A and 4, issue 17)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import SessionFactory
from app.merchant_settings import MerchantSettings, apply_stored, merchant_settings
from app.runtime import Runtime
from app.settings import Plan, Settings
from app.sync import runs
from tests.conftest import make_settings
from tests.console.conftest import Console
from tests.omni_wiring import Omni, omni_upstreams

SERIAL = "4000123412341234"
ALL_OFF = {"plan": "enterprise", "shopify_serial_prefix": "1000"}


@pytest.fixture
def settings() -> Settings:
    return make_settings(pos_kind="retail", shopify_serial_prefix="2000")


@pytest.fixture
async def flow(runtime: Runtime) -> AsyncIterator[Omni]:
    async with omni_upstreams(runtime) as omni:
        yield omni


def _row(page: str, name: str) -> str:
    found = re.search(rf'<tr id="setting-{name}">(.*?)</tr>', page, re.S)
    assert found is not None, name
    return found.group(1)


async def _stored(engine: AsyncEngine) -> dict[str, tuple[str, str]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT name, value, updated_by FROM merchant_settings ORDER BY name")
        )
        return {row.name: (row.value, row.updated_by) for row in rows}


async def test_page_says_where_each_value_comes_from(flow: Omni, console: Console) -> None:
    page = (await console.http.get("/console/settings")).text
    assert "Create/Update Shopify gift cards" in page
    assert "Send gift card notifications" in page
    assert "Download Shopify gift cards" in page
    assert '<span class="pill">default</span>' in _row(page, "create_update_shopify_gift_cards")
    prefix = _row(page, "shopify_serial_prefix")
    assert '<span class="pill">environment</span>' in prefix
    assert 'value="2000"' in prefix


async def test_switching_a_direction_on_takes_effect_without_a_restart(
    flow: Omni, console: Console, engine: AsyncEngine
) -> None:
    external_id = flow.sell_in_store(SERIAL, "25.00")
    await flow.pollers.poll_pos()
    assert flow.shop_sim.shop.gift_cards == {}  # CREATE_UPDATE_SHOPIFY_GIFT_CARDS is off
    with pytest.raises(runs.DirectionDisabled):
        runs.backfill_plan(flow.runtime.settings, "to_shopify")

    saved = await console.post(
        "/console/settings",
        create_update_shopify_gift_cards="on",
        shopify_serial_prefix="2000",
        plan="enterprise",
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == "/console/settings?done=saved"

    # The flows hold the runtime's settings object: the switch is on for them at once.
    assert flow.runtime.settings.create_update_shopify_gift_cards is True
    assert flow.omni.to_shopify is True
    assert runs.backfill_plan(flow.runtime.settings, "to_shopify").directions == ["to_shopify"]
    flow.reload_in_store(external_id, SERIAL, "5.00")
    await flow.pollers.poll_pos()
    await flow.drain()
    codes = [
        card["code"].lower() for card in map(flow.shop_sim.card, flow.shop_sim.shop.gift_cards)
    ]
    assert codes == [SERIAL]
    ready = (await console.http.get("/readyz")).json()["checks"]["sync_directions"]
    assert ready["pos_to_shopify"] == {"state": "on"}

    assert await _stored(engine) == {"create_update_shopify_gift_cards": ("true", "admin")}
    page = (await console.http.get("/console/settings?done=saved")).text
    assert "Saved. It is in force now." in page
    row = _row(page, "create_update_shopify_gift_cards")
    assert '<span class="pill on">console</span> admin' in row
    assert "checked" in row
    async with engine.connect() as connection:
        audit = (
            await connection.execute(
                text("SELECT operator, action, status, detail FROM audit_log ORDER BY id")
            )
        ).all()
    changes = [row for row in audit if row.action == "merchant_settings.save"]
    assert [tuple(row) for row in changes] == [
        (
            "admin",
            "merchant_settings.save",
            200,
            {"set": {"create_update_shopify_gift_cards": "true"}, "reset": []},
        )
    ]
    assert ("admin", "POST /console/settings", 303) in [tuple(row)[:3] for row in audit]


async def test_reset_goes_back_to_the_environment(
    flow: Omni, console: Console, engine: AsyncEngine
) -> None:
    await console.post("/console/settings", shopify_serial_prefix="3000", plan="enterprise")
    assert flow.runtime.settings.shopify_serial_prefix == "3000"
    assert await _stored(engine) == {"shopify_serial_prefix": ("3000", "admin")}

    reset = await console.post("/console/settings", reset="shopify_serial_prefix")
    assert reset.headers["location"] == "/console/settings?done=reset"
    assert flow.runtime.settings.shopify_serial_prefix == "2000"
    assert await _stored(engine) == {}
    page = (await console.http.get("/console/settings")).text
    assert '<span class="pill">environment</span>' in _row(page, "shopify_serial_prefix")


@pytest.mark.parametrize(
    ("form", "message"),
    [
        (
            {"plan": "growth", "create_update_shopify_gift_cards": "on"},
            "CREATE_UPDATE_SHOPIFY_GIFT_CARDS: not available on PLAN=growth",
        ),
        (
            {"send_gift_card_notifications": "on"},
            "SEND_GIFT_CARD_NOTIFICATIONS: needs CREATE_UPDATE_SHOPIFY_GIFT_CARDS=true",
        ),
        ({"shopify_serial_prefix": "12a4"}, "SHOPIFY_SERIAL_PREFIX: must be exactly 4 digits"),
        ({"plan": "platinum"}, "PLAN: must be growth or enterprise"),
    ],
)
async def test_refused_combinations_are_named_and_not_stored(
    flow: Omni, console: Console, engine: AsyncEngine, form: dict[str, Any], message: str
) -> None:
    response = await console.post("/console/settings", **{**ALL_OFF, **form})
    assert response.status_code == 422
    assert message in response.text
    assert await _stored(engine) == {}
    assert flow.runtime.settings.plan is Plan.ENTERPRISE
    assert flow.runtime.settings.create_update_shopify_gift_cards is False


async def test_no_direction_without_a_pos(
    runtime: Runtime, console: Console, engine: AsyncEngine
) -> None:
    runtime.settings = make_settings()
    response = await console.post("/console/settings", download_shopify_gift_cards="on", **ALL_OFF)
    assert response.status_code == 422
    assert "POS_KIND: omni sync is switched on but POS_KIND=none" in response.text
    assert await _stored(engine) == {}


async def test_another_process_picks_the_change_up_at_its_refresh(
    runtime: Runtime, sessions: SessionFactory, engine: AsyncEngine
) -> None:
    here = merchant_settings(runtime)
    elsewhere = MerchantSettings(make_settings(pos_kind="retail", shopify_serial_prefix="2000"))
    assert (
        await here.save(
            sessions,
            {"download_shopify_gift_cards": True, "plan": "growth"},
            operator="dana",
            address="10.0.0.1",
        )
        == []
    )
    assert runtime.settings.download_shopify_gift_cards is True
    assert elsewhere.settings.download_shopify_gift_cards is False

    assert await elsewhere.refresh(sessions) == []
    assert elsewhere.settings.download_shopify_gift_cards is True
    assert elsewhere.settings.plan is Plan.GROWTH
    assert {row.name: row.source for row in elsewhere.shown()}["plan"] == "console"

    assert await here.save(sessions, {"plan": None}, operator="dana", address="10.0.0.1") == []
    await elsewhere.refresh(sessions)
    assert elsewhere.settings.plan is Plan.ENTERPRISE


async def test_a_stored_combination_the_environment_now_refuses_is_not_applied(
    runtime: Runtime, sessions: SessionFactory, engine: AsyncEngine
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO merchant_settings (name, value, updated_by) "
                "VALUES ('create_update_shopify_gift_cards', 'true', 'dana')"
            )
        )
    runtime.settings = make_settings(pos_kind="retail", plan="growth")
    problems = await apply_stored(runtime, sessions)
    assert problems == [
        "CREATE_UPDATE_SHOPIFY_GIFT_CARDS: not available on PLAN=growth "
        "(growth allows DOWNLOAD_SHOPIFY_GIFT_CARDS and SHOPIFY_SERIAL_PREFIX only)"
    ]
    assert runtime.settings.create_update_shopify_gift_cards is False


async def test_settings_page_shows_stored_values_not_in_force(
    runtime: Runtime, console: Console, engine: AsyncEngine
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO merchant_settings (name, value, updated_by) "
                "VALUES ('download_shopify_gift_cards', 'true', 'dana')"
            )
        )
    runtime.settings = make_settings()  # POS_KIND=none: no direction may be on
    page = (await console.http.get("/console/settings")).text
    assert "Saved settings not in force: POS_KIND: omni sync is switched on" in page
    assert runtime.settings.download_shopify_gift_cards is False


async def test_layer_follows_a_replaced_settings_object(runtime: Runtime) -> None:
    first = merchant_settings(runtime)
    assert merchant_settings(runtime) is first
    runtime.settings = make_settings()
    assert merchant_settings(runtime) is not first
    assert merchant_settings(runtime).settings is runtime.settings


async def test_every_process_keeps_its_settings_fresh(
    runtime: Runtime, sessions: SessionFactory
) -> None:
    import asyncio
    from datetime import timedelta

    from app.merchant_settings import keep_fresh

    saver = MerchantSettings(make_settings(pos_kind="retail"))
    assert await saver.save(sessions, {"plan": "growth"}, operator="dana", address="x") == []
    looked = asyncio.Event()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # one refresh done: stay here until cancelled
            looked.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(keep_fresh(runtime, sessions, timedelta(seconds=10), sleep=sleep))
    await looked.wait()
    task.cancel()
    assert runtime.settings.plan is Plan.GROWTH
    assert waits == [10.0, 10.0]
