"""Omni gift cards, Flow A: sold in store, sold online, every move mirrored, merged, deactivated.

Real PostgreSQL; Shopify and each POS kind (R-Series with both balance signs, OnSite) are the
simulators. Pollers and jobs run as the worker runs them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.runtime import Runtime
from app.settings import Settings
from app.sync.omni import MOVE_JOB, SHOPIFY, export_shopify_card, serial_for_shopify_card, sync_card
from app.sync.omni.moves import run_move
from tests.conftest import make_settings
from tests.omni_wiring import POS_VARIANT_IDS, POS_VARIANTS, Omni, omni_upstreams

SERIAL = "gc20261123a1"


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        create_update_shopify_gift_cards=True,
        download_shopify_gift_cards=True,
        send_gift_card_notifications=True,
        shopify_serial_prefix="7000",
        pos_kind="retail",
    )


@pytest.fixture(params=POS_VARIANTS, ids=POS_VARIANT_IDS)
async def flow(request: pytest.FixtureRequest, runtime: Runtime) -> AsyncIterator[Omni]:
    kind, sign, reading = request.param
    async with omni_upstreams(runtime, kind, sign, reading) as omni:
        yield omni


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(text(sql), params)).all())


async def linked(flow: Omni, external_id: str) -> uuid.UUID:
    card_id = await flow.omni.linked_card(flow.pos.system, external_id)
    assert card_id is not None
    return card_id


async def shopify_id(engine: AsyncEngine, card_id: uuid.UUID) -> str:
    found = await rows(
        engine,
        "SELECT external_id FROM card_links WHERE card_id = :c AND system = 'shopify'",
        c=card_id,
    )
    return str(found[0].external_id)


async def refresh_pos(flow: Omni) -> None:
    """What a POS poll reads first (OnSite answers balances from its projection)."""
    async for _ in flow.pos.changes_since(None):
        pass


async def sold_in_store_and_linked(
    flow: Omni, engine: AsyncEngine, amount: str = "50.00", serial: str = SERIAL
) -> tuple[str, uuid.UUID, str]:
    external_id = flow.sell_in_store(serial, amount)
    await flow.pollers.poll_pos()
    card_id = await linked(flow, external_id)
    return external_id, card_id, await shopify_id(engine, card_id)


# --- sold in store -> Shopify ---------------------------------------------------------------


async def test_card_sold_in_store_appears_in_shopify_with_the_same_code(
    flow: Omni, engine: AsyncEngine
) -> None:
    _, card_id, gid = await sold_in_store_and_linked(flow, engine)

    card = flow.shopify_card(gid)
    assert card["code"].lower() == SERIAL
    assert card["balance"] == Decimal("50.00")
    base = await rows(
        engine, "SELECT balance_minor, version FROM sync_base WHERE card_id = :c", c=card_id
    )
    assert [(b.balance_minor, b.version) for b in base] == [(5000, 0)]
    ledger = await rows(
        engine, "SELECT cause, amount_minor FROM ledger WHERE card_id = :c", c=card_id
    )
    assert [(e.cause, e.amount_minor) for e in ledger] == [("card_created", 5000)]
    links = await rows(
        engine, "SELECT system, code_last4, code_hash FROM card_links WHERE card_id = :c", c=card_id
    )
    assert {link.system for link in links} == {SHOPIFY, flow.pos.system}
    assert all(link.code_last4 == SERIAL[-4:] for link in links)
    # A serial is a card number: never stored in the clear.
    dump = await rows(engine, "SELECT row_to_json(card_links)::text AS j FROM card_links")
    assert not any(SERIAL in row.j.lower() for row in dump)


async def test_polling_again_creates_nothing_twice(flow: Omni, engine: AsyncEngine) -> None:
    await sold_in_store_and_linked(flow, engine)
    await flow.pollers.poll_pos()
    await flow.pollers.poll_pos()
    await flow.drain()

    assert len(flow.shop_sim.shop.gift_cards) == 1
    assert len(await rows(engine, "SELECT id FROM gift_cards")) == 1


async def test_unusable_serial_becomes_a_finding_not_an_altered_code(
    flow: Omni, engine: AsyncEngine
) -> None:
    flow.sell_in_store("GC-2026-1123", "20.00")
    flow.sell_in_store("ab12", "20.00") if flow.pos_kind == "onsite" else None
    await flow.pollers.poll_pos()

    assert flow.shop_sim.shop.gift_cards == {}
    findings = await rows(engine, "SELECT type, evidence FROM findings")
    assert findings and all(f.type == "unusable_serial" for f in findings)
    assert all("GC-2026-1123" not in str(f.evidence) for f in findings)


async def test_notification_finds_or_creates_the_customer_and_sends_the_email(
    flow: Omni, engine: AsyncEngine
) -> None:
    customer = flow.add_customer("Ada", "Lovelace", "Ada@Example.com")
    external_id = flow.sell_in_store(SERIAL, "30.00", customer)
    await flow.pollers.poll_pos()
    await flow.drain()

    card_id = await linked(flow, external_id)
    card = flow.shopify_card(await shopify_id(engine, card_id))
    assert card["customer_id"] is not None
    assert card["notifications_sent"] == 1
    email = await rows(engine, "SELECT customer_email FROM gift_cards WHERE id = :c", c=card_id)
    assert email[0].customer_email == "ada@example.com"


# --- sold online -> POS ---------------------------------------------------------------------


async def test_card_bought_online_appears_on_the_pos_with_a_prefixed_serial(
    flow: Omni, engine: AsyncEngine
) -> None:
    await flow.pollers.poll_shopify()  # first poll: live sync starts now
    order = flow.shop_sim.create_order(
        [], [Decimal("25.00")], name="#1042", shipping_name="Grace Hopper", email="g@example.com"
    )
    await asyncio.sleep(0)
    await flow.pollers.poll_shopify()

    bought = order["purchased_gift_cards"][0]
    card_id = await flow.omni.linked_card(SHOPIFY, bought["id"])
    assert card_id is not None
    serial = flow.omni.pos_serial_for(bought["id"])
    assert serial.startswith("7000") and len(serial) == 20 and serial.isdigit()
    # Derived under CARD_HASH_KEY: the Shopify id alone (it is in order receipts) does not
    # give away the serial that spends the card in store.
    assert serial != serial_for_shopify_card("7000", bought["id"], key="another-key")
    assert bought["id"].rsplit("/", 1)[-1] not in serial[4:]
    pos_card = await flow.pos.find_by_serial(serial)
    assert pos_card is not None and pos_card.balance_minor == 2500
    if flow.ls_sim is not None:
        raw = flow.ls_sim.card(pos_card.external_id)
        assert bought["code"][-4:].lower() in raw["description"].lower()
        assert "#1042" in raw["description"]
    email = await rows(engine, "SELECT customer_email FROM gift_cards WHERE id = :c", c=card_id)
    assert email[0].customer_email == "g@example.com"


async def test_export_is_idempotent_and_skips_giftsync_cards(
    flow: Omni, engine: AsyncEngine
) -> None:
    _, _, gid = await sold_in_store_and_linked(flow, engine)
    order = flow.shop_sim.create_order([], [Decimal("10.00")])
    bought = order["purchased_gift_cards"][0]
    card = await flow.shop.get_gift_card(bought["id"])
    assert card is not None

    first = await export_shopify_card(flow.omni, card)
    again = await export_shopify_card(flow.omni, card)
    ours = await flow.shop.get_gift_card(gid)
    assert ours is not None
    skipped = await export_shopify_card(flow.omni, ours)

    assert first.status == "moved"
    assert again.status == "already_linked" and again.card_id == first.card_id
    assert skipped.status in ("already_linked", "skipped")
    assert len(await rows(engine, "SELECT id FROM gift_cards")) == 2


# --- mirroring ------------------------------------------------------------------------------


async def test_store_redemption_reaches_shopify(flow: Omni, engine: AsyncEngine) -> None:
    external_id, card_id, gid = await sold_in_store_and_linked(flow, engine)

    flow.spend_in_store(external_id, SERIAL, "12.50")
    await flow.pollers.poll_pos()
    await flow.drain()

    assert flow.shopify_card(gid)["balance"] == Decimal("37.50")
    base = await rows(engine, "SELECT balance_minor FROM sync_base WHERE card_id = :c", c=card_id)
    assert base[0].balance_minor == 3750


async def test_several_store_moves_in_one_poll_window_become_one_shopify_move(
    flow: Omni, engine: AsyncEngine
) -> None:
    external_id, _, gid = await sold_in_store_and_linked(flow, engine)

    flow.spend_in_store(external_id, SERIAL, "5.00")
    flow.spend_in_store(external_id, SERIAL, "7.00")
    flow.reload_in_store(external_id, SERIAL, "20.00")
    await flow.pollers.poll_pos()
    await flow.drain()

    card = flow.shopify_card(gid)
    assert card["balance"] == Decimal("58.00")
    assert [t["kind"] for t in card["transactions"]] == ["credit"]


async def test_online_spend_reaches_the_pos_through_the_webhook(
    flow: Omni, engine: AsyncEngine
) -> None:
    external_id, _, gid = await sold_in_store_and_linked(flow, engine)

    order = flow.shop_sim.create_order([(gid, Decimal("20.00"))])
    for payload in order["webhooks"]["order_transactions/create"]:
        await flow.pollers.on_transaction(payload, None)  # type: ignore[arg-type]
    await flow.drain()

    assert flow.pos_money(external_id, SERIAL) == Decimal("30.00")


async def test_both_sides_spending_between_polls_is_merged(flow: Omni, engine: AsyncEngine) -> None:
    external_id, card_id, gid = await sold_in_store_and_linked(flow, engine)

    flow.spend_in_store(external_id, SERIAL, "10.00")
    flow.shop_sim.spend(gid, Decimal("15.00"))
    await flow.pollers.poll_pos()
    await flow.drain()
    await flow.pollers.poll_pos()
    await flow.drain()

    assert flow.shopify_card(gid)["balance"] == Decimal("25.00")
    assert flow.pos_money(external_id, SERIAL) == Decimal("25.00")
    again = await sync_card(flow.omni, card_id)
    assert again.status == "in_sync"


async def test_overspent_on_both_sides_zeroes_both_and_reports_an_overdraft(
    flow: Omni, engine: AsyncEngine
) -> None:
    external_id, card_id, gid = await sold_in_store_and_linked(flow, engine)

    flow.spend_in_store(external_id, SERIAL, "40.00")
    flow.shop_sim.spend(gid, Decimal("30.00"))
    await flow.pollers.poll_pos()
    await flow.drain()

    assert flow.shopify_card(gid)["balance"] == Decimal("0.00")
    assert flow.pos_money(external_id, SERIAL) == Decimal("0.00")
    findings = await rows(
        engine, "SELECT type, evidence FROM findings WHERE card_id = :c", c=card_id
    )
    assert [f.type for f in findings] == ["overdraft"]
    assert findings[0].evidence["shortfall_minor"] == 2000


async def test_a_move_refused_after_a_concurrent_spend_is_merged_again(
    flow: Omni, engine: AsyncEngine
) -> None:
    """The Shopify debit is planned, then the shopper spends online before it lands."""
    external_id, card_id, gid = await sold_in_store_and_linked(flow, engine)

    flow.spend_in_store(external_id, SERIAL, "30.00")
    await flow.pollers.poll_pos()  # plans: debit Shopify 30
    flow.shop_sim.spend(gid, Decimal("45.00"))  # Shopify now holds 5: the debit must fail
    await flow.drain()

    # 50 - 30 in store - 45 online = -25: both end at 0, and staff hear of the shortfall.
    assert flow.shopify_card(gid)["balance"] == Decimal("0.00")
    assert flow.pos_money(external_id, SERIAL) == Decimal("0.00")
    findings = await rows(
        engine, "SELECT type, evidence FROM findings WHERE card_id = :c", c=card_id
    )
    assert [f.type for f in findings] == ["overdraft"]
    assert findings[0].evidence["shortfall_minor"] == 2500


async def test_deactivated_in_shopify_is_deactivated_on_the_pos(
    flow: Omni, engine: AsyncEngine
) -> None:
    external_id, card_id, gid = await sold_in_store_and_linked(flow, engine)

    await flow.shop.deactivate_gift_card(gid)
    await sync_card(flow.omni, card_id)
    await flow.drain()

    pos_card = await flow.pos.get_card(external_id)
    assert pos_card is not None and pos_card.status == "disabled"
    state = await rows(engine, "SELECT state FROM gift_cards WHERE id = :c", c=card_id)
    assert state[0].state == "deactivated"


async def test_merging_twice_and_running_a_move_twice_changes_nothing(
    flow: Omni, engine: AsyncEngine
) -> None:
    external_id, card_id, gid = await sold_in_store_and_linked(flow, engine)
    flow.spend_in_store(external_id, SERIAL, "10.00")

    await refresh_pos(flow)
    first = await sync_card(flow.omni, card_id)
    second = await sync_card(flow.omni, card_id)  # the move has not landed yet
    jobs = await rows(engine, "SELECT payload FROM jobs WHERE kind = :k", k=MOVE_JOB)
    await run_move(flow.omni, jobs[0].payload)
    await run_move(flow.omni, jobs[0].payload)
    await flow.drain()

    assert first.status == "repaired" and second.status == "pending"
    assert len(jobs) == 1
    assert flow.shopify_card(gid)["balance"] == Decimal("40.00")
    assert (await sync_card(flow.omni, card_id)).status == "in_sync"


async def test_concurrent_merges_plan_the_moves_once(flow: Omni, engine: AsyncEngine) -> None:
    external_id, card_id, gid = await sold_in_store_and_linked(flow, engine)
    flow.spend_in_store(external_id, SERIAL, "10.00")

    await refresh_pos(flow)
    outcomes = await asyncio.gather(*(sync_card(flow.omni, card_id) for _ in range(5)))
    await flow.drain()

    assert sorted(o.status for o in outcomes).count("repaired") == 1
    assert flow.shopify_card(gid)["balance"] == Decimal("40.00")
    moves = await rows(engine, "SELECT id FROM jobs WHERE kind = :k", k=MOVE_JOB)
    assert len(moves) == 1


async def test_shopify_down_during_a_move_is_retried_until_it_lands(
    flow: Omni, engine: AsyncEngine
) -> None:
    external_id, card_id, gid = await sold_in_store_and_linked(flow, engine)
    flow.spend_in_store(external_id, SERIAL, "10.00")
    await refresh_pos(flow)
    await sync_card(flow.omni, card_id)

    flow.shop_sim.faults.error_rate = 1.0
    await flow.drain(rounds=1)
    assert flow.shopify_card(gid)["balance"] == Decimal("50.00")
    failed = await rows(engine, "SELECT state, attempts FROM jobs WHERE kind = :k", k=MOVE_JOB)
    assert failed[0].state == "queued" and failed[0].attempts == 1

    flow.shop_sim.faults.error_rate = 0.0
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE jobs SET run_at = now()"))
    await flow.drain()
    assert flow.shopify_card(gid)["balance"] == Decimal("40.00")


async def test_pollers_are_singletons_across_workers(flow: Omni, engine: AsyncEngine) -> None:
    from app.worker import run_as_singleton

    flow.sell_in_store(SERIAL, "50.00")
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_poll() -> None:
        started.set()
        await release.wait()

    first = asyncio.create_task(run_as_singleton(flow.runtime.sessions, "omni-poll-pos", slow_poll))
    await started.wait()
    second = await run_as_singleton(flow.runtime.sessions, "omni-poll-pos", flow.pollers.poll_pos)
    release.set()
    assert await first is True
    assert second is False


async def test_a_poller_that_fell_behind_catches_up_without_skipping(
    flow: Omni, engine: AsyncEngine
) -> None:
    cards = [(flow.sell_in_store(f"gc0000{n:04d}x", "10.00"), f"gc0000{n:04d}x") for n in range(12)]
    await flow.pollers.poll_pos()
    for external_id, serial in cards:
        flow.spend_in_store(external_id, serial, "1.00")
    await flow.pollers.poll_pos()
    await flow.drain()

    balances = [
        flow.shopify_card(await shopify_id(engine, await linked(flow, ext)))["balance"]
        for ext, _ in cards
    ]
    assert balances == [Decimal("9.00")] * 12


async def test_a_pos_card_giftsync_exported_is_never_imported_back(
    flow: Omni, engine: AsyncEngine
) -> None:
    """An export that crashed after creating the POS card but before linking it: the POS
    poller must not make a second Shopify card for the same money."""
    order = flow.shop_sim.create_order([], [Decimal("15.00")])
    serial = flow.omni.pos_serial_for(order["purchased_gift_cards"][0]["id"])
    flow.sell_in_store(serial, "15.00")

    await flow.pollers.poll_pos()

    assert len(flow.shop_sim.shop.gift_cards) == 1
    assert await rows(engine, "SELECT id FROM gift_cards") == []
