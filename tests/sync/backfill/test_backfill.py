"""Historical backfill: every card crosses once, a second run changes nothing, a killed run resumes.

Real PostgreSQL; Shopify and each POS kind (R-Series with both balance signs, OnSite) are the
simulators. The Lightspeed simulator's limits are raised and the client's sleeps recorded
instead of slept, so the tests do not wait out a 1 request/s code lookup limit; the pacing
itself is what bench/backfill.py measures.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli_runs import backfill_command
from app.db import jobs
from app.db.engine import transaction
from app.runtime import Runtime, install_features
from app.sandbox.faults import Faults
from app.settings import Settings
from app.sync import runs
from app.sync.backfill import (
    Backfill,
    BackfillBusy,
    BackfillProgress,
    sort_key,
)
from app.sync.omni import SHOPIFY, OmniSync, serial_for_shopify_card
from app.sync.pos import PosCard
from app.worker import RetryLater, Worker, run_as_singleton
from tests.conftest import make_settings
from tests.omni_wiring import POS_VARIANT_IDS, POS_VARIANTS, Omni, omni_upstreams

PREFIX = "7000"
HASH_KEY = "57f387c85fb633f1851f213a74ab906eebf2e168fc78961d7bcd89af05c70e04"  # make_settings() in tests/conftest.py


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        pos_kind="retail",  # each test's upstreams set the kind they run on
        create_update_shopify_gift_cards=True,
        download_shopify_gift_cards=True,
        shopify_serial_prefix=PREFIX,
    )


@pytest.fixture(params=POS_VARIANTS, ids=POS_VARIANT_IDS)
async def flow(request: pytest.FixtureRequest, runtime: Runtime) -> AsyncIterator[Omni]:
    kind, sign, reading = request.param
    async with omni_upstreams(runtime, kind, sign, reading) as omni:
        yield fast(omni)


@pytest.fixture
async def retail(runtime: Runtime) -> AsyncIterator[Omni]:
    async with omni_upstreams(runtime, "retail", "negative") as omni:
        yield fast(omni)


slept: dict[int, list[float]] = {}


def fast(flow: Omni) -> Omni:
    """Lightspeed limits high enough for a test, the client's sleeps recorded, not slept."""
    if flow.ls_sim is not None:
        flow.ls_sim.drip_rate = 10_000.0
        flow.ls_sim.code_lookup_interval_s = 0.0
        record: list[float] = []
        slept[id(flow)] = record

        async def no_sleep(seconds: float) -> None:
            record.append(seconds)

        flow.pos_client._sleep = no_sleep  # type: ignore[union-attr]
    return flow


def backfill_of(flow: Omni, **options: Any) -> Backfill:
    options.setdefault("bulk_poll_interval", 0.0)
    options.setdefault("concurrency", 4)
    return Backfill(flow.runtime.sessions, flow.runtime.settings, flow.omni, flow.shop, **options)


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(text(sql), params)).all())


async def start(flow: Omni, direction: runs.BackfillRequest = "both") -> uuid.UUID:
    return await runs.start_backfill(flow.runtime.sessions, flow.runtime.settings, direction)


# --- what each system holds ----------------------------------------------------------------


def pos_balances(flow: Omni) -> dict[str, Decimal]:
    """Every POS card by serial, with its money."""
    if flow.ls_sim is not None:
        return {card.code: card.money for card in flow.ls_sim.cards.values()}
    assert flow.onsite_sim is not None
    return dict(flow.onsite_sim._balances())


def shopify_cards(flow: Omni) -> dict[str, Any]:
    """Every Shopify card by code."""
    return {card.code: card for card in flow.shop_sim.shop.gift_cards.values()}


def sell(flow: Omni, serial: str, amount: str) -> str:
    return flow.sell_in_store(serial, amount)


def empty_pos_card(flow: Omni, serial: str) -> None:
    if flow.ls_sim is not None:
        flow.ls_sim.add_gift_card(serial, Decimal(0))
    else:
        flow.sell_in_store(serial, "10.00")
        flow.spend_in_store(flow.omni.code_hash(serial), serial, "10.00")


@dataclass
class Seeded:
    to_pos: dict[str, Decimal] = field(default_factory=dict)
    """Shopify card id -> the balance its POS card must get."""
    to_pos_skipped: dict[str, str] = field(default_factory=dict)
    to_shopify: dict[str, Decimal] = field(default_factory=dict)
    """POS serial -> the balance its Shopify card must get."""
    to_shopify_skipped: dict[str, str] = field(default_factory=dict)


def seed(flow: Omni) -> Seeded:
    shop = flow.shop_sim
    seeded = Seeded()
    order = shop.create_order(
        [],
        [Decimal("25.00"), Decimal("40.00")],
        name="#1001",
        shipping_name="Ann Shopper",
        email="ann@example.com",
    )
    for bought, value in zip(order["purchased_gift_cards"], ("25.00", "40.00"), strict=True):
        seeded.to_pos[bought["id"]] = Decimal(value)
    manual, _ = shop.create_gift_card(Decimal("15.00"))
    seeded.to_pos[manual] = Decimal("15.00")
    spent, _ = shop.create_gift_card(Decimal("30.00"))
    shop.spend(spent, Decimal("12.50"))
    seeded.to_pos[spent] = Decimal("17.50")
    empty, _ = shop.create_gift_card(Decimal("10.00"))
    shop.spend(empty, Decimal("10.00"))
    seeded.to_pos_skipped[empty] = "empty"
    off, _ = shop.create_gift_card(Decimal("20.00"))
    shop.shop.card(off).deactivated_at = datetime.now(UTC)
    seeded.to_pos_skipped[off] = "inactive"
    shadow = shop.shop.create_gift_card(Decimal("5.00"), note="giftsync: Vii shadow card")
    seeded.to_pos_skipped[f"gid://shopify/GiftCard/{shadow.id}"] = "made_by_giftsync"

    sell(flow, "gc20260001aa", "50.00")
    seeded.to_shopify["gc20260001aa"] = Decimal("50.00")
    sell(flow, "gc20260002bb", "20.00")
    seeded.to_shopify["gc20260002bb"] = Decimal("20.00")
    sell(flow, "GC-2026-0003", "10.00")
    seeded.to_shopify_skipped["GC-2026-0003"] = "unusable_serial"
    empty_pos_card(flow, "gc20260004cc")
    seeded.to_shopify_skipped["gc20260004cc"] = "empty"
    return seeded


def assert_every_card_crossed_once(flow: Omni, seeded: Seeded) -> None:
    pos = pos_balances(flow)
    for shopify_id, balance in seeded.to_pos.items():
        assert pos[serial_for_shopify_card(PREFIX, shopify_id, key=HASH_KEY)] == balance
    for shopify_id in seeded.to_pos_skipped:
        assert serial_for_shopify_card(PREFIX, shopify_id, key=HASH_KEY) not in pos
    cards = shopify_cards(flow)
    for serial, balance in seeded.to_shopify.items():
        assert cards[serial].balance == balance
    for serial in seeded.to_shopify_skipped:
        assert serial.lower() not in cards
    seeded_shopify = len(seeded.to_pos) + len(seeded.to_pos_skipped)
    seeded_pos = len(seeded.to_shopify) + len(seeded.to_shopify_skipped)
    assert len(flow.shop_sim.shop.gift_cards) == seeded_shopify + len(seeded.to_shopify)
    assert len(pos) == seeded_pos + len(seeded.to_pos)


# --- the backfill -------------------------------------------------------------------------------


async def test_both_directions_move_every_card_once_and_report_what_could_not(
    flow: Omni, engine: AsyncEngine
) -> None:
    seeded = seed(flow)
    run_id = await start(flow)
    seen: list[BackfillProgress] = []

    report = await backfill_of(flow).run(run_id, progress=seen.append)

    assert_every_card_crossed_once(flow, seeded)
    moved = len(seeded.to_pos) + len(seeded.to_shopify)
    skipped = len(seeded.to_pos_skipped) + len(seeded.to_shopify_skipped)
    # The POS cards the first pass made are offered by the second, already linked.
    assert report.counts == {
        "moved": moved,
        "already_linked": len(seeded.to_pos),
        "skipped": skipped,
    }
    assert report.passes["to_pos"].skipped_by_reason == {
        "empty": 1,
        "inactive": 1,
        "made_by_giftsync": 1,
    }
    assert report.passes["to_shopify"].skipped_by_reason == {"unusable_serial": 1, "empty": 1}
    assert report.passes["to_pos"].total == len(seeded.to_pos) + len(seeded.to_pos_skipped)
    assert {c["reason"] for c in report.passes["to_shopify"].skipped_cards} == {
        "unusable_serial",
        "empty",
    }
    assert seen[-1].finished and {p.direction for p in seen} == {"to_pos", "to_shopify"}

    run = await runs.get_run(flow.runtime.sessions, run_id)
    assert run is not None and run.status == "succeeded"
    assert run.counts == report.counts
    assert run.progress["to_shopify"]["skipped_by_reason"]["unusable_serial"] == 1
    assert [f.type for f in run.findings] == ["unusable_serial"]
    # Skipped cards are listed by id and last 4; a full serial is never stored.
    assert "GC-2026-0003" not in str(run.progress) + str(run.findings)
    ledger = await rows(engine, "SELECT cause, amount_minor FROM ledger ORDER BY id")
    assert [entry.cause for entry in ledger] == ["card_created"] * moved
    links = await rows(engine, "SELECT system FROM card_links")
    assert len(links) == 2 * moved
    exported = await flow.omni.linked_card(SHOPIFY, next(iter(seeded.to_pos)))
    assert exported is not None


async def test_a_second_backfill_changes_nothing(flow: Omni, engine: AsyncEngine) -> None:
    seeded = seed(flow)
    await backfill_of(flow).run(await start(flow))
    before = (
        len(flow.shop_sim.shop.gift_cards),
        dict(pos_balances(flow)),
        await rows(engine, "SELECT id FROM ledger ORDER BY id"),
        await rows(engine, "SELECT card_id, system, external_id FROM card_links ORDER BY 1, 2"),
    )

    second_id = await start(flow)
    report = await backfill_of(flow).run(second_id)

    after = (
        len(flow.shop_sim.shop.gift_cards),
        dict(pos_balances(flow)),
        await rows(engine, "SELECT id FROM ledger ORDER BY id"),
        await rows(engine, "SELECT card_id, system, external_id FROM card_links ORDER BY 1, 2"),
    )
    assert after == before
    assert report.counts["moved"] == 0
    shopify_total = len(flow.shop_sim.shop.gift_cards)
    assert report.counts["already_linked"] + report.counts["skipped"] == shopify_total + len(
        pos_balances(flow)
    )
    # The cards it imported are Shopify cards giftsync made: never sent back to the POS.
    assert report.passes["to_pos"].skipped_by_reason["made_by_giftsync"] == 1 + len(
        seeded.to_shopify
    )
    run = await runs.get_run(flow.runtime.sessions, second_id)
    assert run is not None and [f.type for f in run.findings] == ["unusable_serial"]
    assert_every_card_crossed_once(flow, seeded)


async def test_a_killed_backfill_resumes_and_creates_nothing_twice(
    flow: Omni, engine: AsyncEngine
) -> None:
    shopify_ids = [flow.shop_sim.create_gift_card(Decimal(10 + n))[0] for n in range(10)]
    serials = [f"gc2026kill{n:02d}" for n in range(10)]
    for n, serial in enumerate(serials):
        sell(flow, serial, f"{20 + n}.00")
    run_id = await start(flow)

    async def run_until_killed(direction: str, after: int) -> None:
        task: asyncio.Task[Any] | None = None

        def kill_at(step: BackfillProgress) -> None:
            if step.direction == direction and step.processed >= after and task is not None:
                task.cancel()

        backfill = backfill_of(flow, concurrency=3, checkpoint_every=2)
        task = asyncio.create_task(backfill.run(run_id, progress=kill_at))
        with pytest.raises(asyncio.CancelledError):
            await task

    await run_until_killed("to_pos", 4)
    stored = await runs.get_run(flow.runtime.sessions, run_id)
    assert stored is not None and stored.status == "running"
    assert 2 <= stored.progress["to_pos"]["processed"] < 10
    await run_until_killed("to_shopify", 5)
    report = await backfill_of(flow).run(run_id)

    pos = pos_balances(flow)
    for n, shopify_id in enumerate(shopify_ids):
        assert pos[serial_for_shopify_card(PREFIX, shopify_id, key=HASH_KEY)] == Decimal(10 + n)
    cards = shopify_cards(flow)
    for n, serial in enumerate(serials):
        assert cards[serial].balance == Decimal(20 + n)
    assert len(cards) == 20 and len(pos) == 20
    assert len(await rows(engine, "SELECT id FROM gift_cards")) == 20
    ledger = await rows(engine, "SELECT cause FROM ledger")
    assert [entry.cause for entry in ledger] == ["card_created"] * 20
    # Every card in both listings was counted exactly once across the three attempts.
    assert report.passes["to_pos"].processed == 10
    assert report.passes["to_shopify"].processed == 20
    assert report.counts["skipped"] == 0
    assert report.counts["moved"] + report.counts["already_linked"] == 30
    assert report.counts["moved"] <= 20


async def test_an_error_mid_way_keeps_the_checkpoint_and_the_next_attempt_continues(
    retail: Omni, engine: AsyncEngine
) -> None:
    for n in range(8):
        sell(retail, f"gc2026fail{n:02d}", "10.00")
    run_id = await start(retail, "to_shopify")

    def fail_at(step: BackfillProgress) -> None:
        if step.processed == 5:
            raise RuntimeError("the worker's host went away")

    with pytest.raises(RuntimeError):
        await backfill_of(retail, concurrency=2).run(run_id, progress=fail_at)
    stored = await runs.get_run(retail.runtime.sessions, run_id)
    assert stored is not None and stored.status == "running"
    # The failure stops the pass at card 5; the other worker may still count the card it had
    # finished before it is cancelled. Either way the checkpoint counts only cards handled.
    assert stored.progress["to_shopify"]["processed"] in (5, 6)

    report = await backfill_of(retail).run(run_id)

    assert report.passes["to_shopify"].processed == 8
    # The other worker's card landed after the checkpoint: offered again, already linked.
    assert report.counts["moved"] + report.counts["already_linked"] == 8
    assert report.counts["already_linked"] <= 1
    assert len(retail.shop_sim.shop.gift_cards) == 8


async def test_the_job_resumes_a_run_whose_worker_died(retail: Omni, engine: AsyncEngine) -> None:
    for n in range(6):
        sell(retail, f"gc2026lost{n:02d}", "10.00")
    run_id = await start(retail, "to_shopify")
    sessions = retail.runtime.sessions
    backfill = backfill_of(retail, concurrency=2, checkpoint_every=1)
    retail.runtime.backfill = backfill
    retail.runtime.rebind()
    async with transaction(sessions) as session:
        claimed = await jobs.claim(session, "worker-that-dies", limit=1, lease=timedelta(minutes=1))
    assert [job.kind for job in claimed] == [runs.BACKFILL_JOB]
    task: asyncio.Task[Any] | None = None

    def die(step: BackfillProgress) -> None:
        if step.processed >= 3 and task is not None:
            task.cancel()

    task = asyncio.create_task(backfill.run(run_id, progress=die))
    with pytest.raises(asyncio.CancelledError):
        await task
    async with transaction(sessions) as session:
        await session.execute(
            text("UPDATE jobs SET locked_until = now() - interval '1 second' WHERE id = :id"),
            {"id": claimed[0].id},
        )

    assert await Worker(sessions, retail.runtime.handlers).run_once() == 1

    run = await runs.get_run(sessions, run_id)
    assert run is not None and run.status == "succeeded"
    assert run.counts["moved"] + run.counts["already_linked"] == 6
    job = await rows(engine, "SELECT state FROM jobs WHERE id = :id", id=claimed[0].id)
    assert job[0].state == "done"
    assert len(retail.shop_sim.shop.gift_cards) == 6


async def test_a_listing_out_of_order_is_counted_again_from_the_start(
    retail: Omni, engine: AsyncEngine
) -> None:
    for n in range(6):
        sell(retail, f"gc2026rev{n:03d}", "10.00")
    reversed_omni = OmniSync(
        retail.runtime.sessions, retail.runtime.settings, retail.shop, Reversed(retail.pos)
    )
    run_id = await start(retail, "to_shopify")
    task: asyncio.Task[Any] | None = None

    def kill_at(step: BackfillProgress) -> None:
        if step.processed >= 3 and task is not None:
            task.cancel()

    backfill = Backfill(
        retail.runtime.sessions,
        retail.runtime.settings,
        reversed_omni,
        retail.shop,
        concurrency=1,
        checkpoint_every=1,
    )
    task = asyncio.create_task(backfill.run(run_id, progress=kill_at))
    with pytest.raises(asyncio.CancelledError):
        await task
    stored = await runs.get_run(retail.runtime.sessions, run_id)
    assert stored is not None and stored.progress["to_shopify"]["ordered"] is False

    report = await backfill.run(run_id)

    # The watermark of an unsorted listing proves nothing: every card is offered again.
    assert report.passes["to_shopify"].processed == 6
    assert report.counts["moved"] + report.counts["already_linked"] == 6
    assert len(retail.shop_sim.shop.gift_cards) == 6


class Reversed:
    """A POS adapter whose listing comes newest first (not what any real POS does)."""

    def __init__(self, pos: Any) -> None:
        self._pos = pos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pos, name)

    async def iter_cards(self) -> AsyncIterator[PosCard]:
        cards = [card async for card in self._pos.iter_cards()]
        for card in sorted(cards, key=lambda c: sort_key(c.external_id), reverse=True):
            yield card


async def test_unusable_serials_and_refused_cards_are_skipped_with_their_reason(
    retail: Omni, engine: AsyncEngine
) -> None:
    sell(retail, "GC-2026-0003", "10.00")  # dashes: Shopify takes a-z and 0-9 only
    # Over Shopify's gift card limit: refused for this card, not for all.
    sell(retail, "gc2026big001", "20000.00")
    sell(retail, "gc2026fine01", "10.00")
    run_id = await start(retail, "to_shopify")

    report = await backfill_of(retail).run(run_id)

    assert report.counts == {"moved": 1, "already_linked": 0, "skipped": 2}
    assert report.passes["to_shopify"].skipped_by_reason == {
        "unusable_serial": 1,
        "rejected_by_shopify:GREATER_THAN": 1,
    }
    assert {c["last4"] for c in report.passes["to_shopify"].skipped_cards} == {"0003", "g001"}
    run = await runs.get_run(retail.runtime.sessions, run_id)
    assert run is not None
    evidence = [f.evidence for f in run.findings if f.type == "unusable_serial"]
    assert evidence and evidence[0]["serial_last4"] == "0003"
    assert list(shopify_cards(retail)) == ["gc2026fine01"]


async def test_throttling_and_429_mid_way_slow_it_down_but_it_finishes(
    retail: Omni, engine: AsyncEngine
) -> None:
    for n in range(6):
        retail.shop_sim.create_gift_card(Decimal("10.00"))
        sell(retail, f"gc2026slow{n:02d}", "10.00")
    retail.shop_sim.faults = shopify_burst = Burst()
    assert retail.ls_sim is not None
    retail.ls_sim.faults = pos_burst = Burst()

    def throttle_mid_way(step: BackfillProgress) -> None:
        if step.processed == 2 and step.direction == "to_pos" and not pos_burst.armed:
            pos_burst.arm(3)
        if step.processed == 2 and step.direction == "to_shopify" and not shopify_burst.armed:
            shopify_burst.arm(3)

    report = await backfill_of(retail, concurrency=2).run(
        await start(retail), progress=throttle_mid_way
    )

    assert retail.ls_sim.rate_limited_count == 3
    assert retail.shop_sim.throttled_count == 3
    # The client waited out each 429's Retry-After before sending again.
    assert sum(s for s in slept[id(retail)] if s >= 1.0) >= 3.0
    assert report.counts["moved"] == 12
    assert len(shopify_cards(retail)) == 12 and len(pos_balances(retail)) == 12


class Burst(Faults):
    """Answers the next N requests as over the rate limit once armed, then behaves."""

    def __init__(self) -> None:
        self.remaining = 0
        self.armed = False
        super().__init__()

    def arm(self, requests: int) -> None:
        self.armed = True
        self.remaining = requests

    @property  # type: ignore[override]
    def force_throttle(self) -> bool:
        if self.remaining > 0:
            self.remaining -= 1
            return True
        return False

    @force_throttle.setter
    def force_throttle(self, value: bool) -> None:
        pass


async def test_a_card_spent_after_the_export_reaches_the_pos_at_its_new_balance(
    retail: Omni,
) -> None:
    first, _ = retail.shop_sim.create_gift_card(Decimal("30.00"))
    later, _ = retail.shop_sim.create_gift_card(Decimal("40.00"))

    def spend_the_later_card(step: BackfillProgress) -> None:
        if step.processed == 1:
            retail.shop_sim.spend(later, Decimal("15.00"))

    backfill = backfill_of(retail, concurrency=1, stale_after=timedelta(0))
    await backfill.run(await start(retail, "to_pos"), progress=spend_the_later_card)

    pos = pos_balances(retail)
    assert pos[serial_for_shopify_card(PREFIX, first, key=HASH_KEY)] == Decimal("30.00")
    assert pos[serial_for_shopify_card(PREFIX, later, key=HASH_KEY)] == Decimal("25.00")


# --- refusals and turns ---------------------------------------------------------------------


async def test_a_direction_that_is_off_is_refused(
    retail: Omni, engine: AsyncEngine, runtime: Runtime
) -> None:
    off = retail.runtime.settings.model_copy(update={"download_shopify_gift_cards": False})
    with pytest.raises(runs.DirectionDisabled):
        await runs.start_backfill(retail.runtime.sessions, off, "to_pos")
    assert await rows(engine, "SELECT id FROM runs") == []

    # Queued while on, switched off before it ran: the run fails and says which setting.
    retail.shop_sim.create_gift_card(Decimal("10.00"))
    run_id = await start(retail, "to_pos")
    backfill = Backfill(retail.runtime.sessions, off, retail.omni, retail.shop)
    with pytest.raises(runs.DirectionDisabled):
        await backfill.run(run_id)
    run = await runs.get_run(retail.runtime.sessions, run_id)
    assert run is not None and run.status == "failed"
    assert run.error is not None and "DOWNLOAD_SHOPIFY_GIFT_CARDS" in run.error
    assert len(pos_balances(retail)) == 0
    # The job gives up quietly: retrying cannot switch the setting on.
    await backfill.run_job({"run_id": str(run_id)})


async def test_both_with_one_direction_off_runs_the_other_and_says_so(retail: Omni) -> None:
    retail.shop_sim.create_gift_card(Decimal("10.00"))
    sell(retail, "gc2026only01", "10.00")
    settings = retail.runtime.settings.model_copy(
        update={"create_update_shopify_gift_cards": False}
    )
    run_id = await runs.start_backfill(retail.runtime.sessions, settings, "both")

    report = await Backfill(
        retail.runtime.sessions, settings, retail.omni, retail.shop, bulk_poll_interval=0.0
    ).run(run_id)

    assert list(report.passes) == ["to_pos"] and report.disabled == ["to_shopify"]
    assert report.counts == {"moved": 1, "already_linked": 0, "skipped": 0}
    assert list(shopify_cards(retail)) != [] and "gc2026only01" not in shopify_cards(retail)


async def test_one_backfill_at_a_time(retail: Omni, engine: AsyncEngine) -> None:
    sell(retail, "gc2026turn01", "10.00")
    run_id = await start(retail, "to_shopify")
    backfill = backfill_of(retail)
    holding = asyncio.Event()
    release = asyncio.Event()
    outcome: list[Exception] = []

    async def another_backfill() -> None:
        holding.set()
        await release.wait()

    async def try_meanwhile() -> None:
        await holding.wait()
        try:
            await backfill.run(run_id)
        except BackfillBusy as exc:
            outcome.append(exc)
        try:
            await backfill.run_job({"run_id": str(run_id)})
        except RetryLater as exc:
            outcome.append(exc)
        release.set()

    await asyncio.gather(
        run_as_singleton(retail.runtime.sessions, "backfill", another_backfill), try_meanwhile()
    )

    assert [type(exc) for exc in outcome] == [BackfillBusy, RetryLater]
    run = await runs.get_run(retail.runtime.sessions, run_id)
    assert run is not None and run.status == "queued"
    report = await backfill.run(run_id)
    assert report.counts["moved"] == 1


async def test_a_finished_run_delivered_again_does_nothing(
    retail: Omni, engine: AsyncEngine
) -> None:
    sell(retail, "gc2026once01", "10.00")
    run_id = await start(retail, "to_shopify")
    backfill = backfill_of(retail)
    first = await backfill.run(run_id)
    requests = retail.shop_sim.request_count

    again = await backfill.run(run_id)

    assert again.status == "succeeded" and again.counts == first.counts
    assert retail.shop_sim.request_count == requests


# --- the command line -------------------------------------------------------------------------


async def test_the_command_shows_progress_and_ends_with_the_summary(
    flow: Omni, engine: AsyncEngine
) -> None:
    seeded = seed(flow)
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=False, color_system=None)

    flow.runtime.backfill = backfill_of(flow)
    counts = await backfill_command(flow.runtime, "both", console)

    moved = len(seeded.to_pos) + len(seeded.to_shopify)
    assert counts["moved"] == moved
    printed = out.getvalue()
    assert "already linked" in printed and "skipped, by reason" in printed
    assert "unusable_serial" in printed and "made_by_giftsync" in printed
    assert "Shopify -> POS" in printed and "POS -> Shopify" in printed
    assert "GC-2026-0003" not in printed
    assert_every_card_crossed_once(flow, seeded)


async def test_the_command_follows_a_run_another_process_is_running(
    retail: Omni, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sell(retail, "gc2026else01", "10.00")
    backfill = backfill_of(retail)
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=False, color_system=None)
    followed: list[str] = []
    real_run = backfill.run
    calls = 0

    async def busy_then_done(run_id: uuid.UUID, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            # Meanwhile a worker ran this very run to the end.
            await real_run(run_id)
            followed.append("worker")
            raise BackfillBusy("held by a worker")
        raise AssertionError("the command must not run a finished run again")

    monkeypatch.setattr(backfill, "run", busy_then_done)

    retail.runtime.backfill = backfill
    counts = await backfill_command(retail.runtime, "to_shopify", console)

    assert followed == ["worker"] and counts["moved"] == 1
    assert "succeeded" in out.getvalue()


def test_sort_key_orders_numeric_ids_by_value_and_hashes_by_text() -> None:
    assert sort_key("gid://shopify/GiftCard/99") < sort_key("gid://shopify/GiftCard/100")
    assert sort_key("9") < sort_key("10")
    assert sort_key("0a" * 32) < sort_key("0b" + "0" * 62)


async def test_the_runtime_binds_the_backfill_job_when_omni_sync_is_on(retail: Omni) -> None:
    install_features(retail.runtime)
    backfill = retail.runtime.backfill
    assert backfill is not None and backfill.shopify is retail.shop
    assert retail.runtime.handlers[runs.BACKFILL_JOB].func is Backfill.run_job  # type: ignore[attr-defined]


async def test_without_a_pos_there_is_no_backfill_job_to_run(runtime: Runtime) -> None:
    runtime.omni = None
    install_features(runtime)
    assert runtime.backfill is None and runs.BACKFILL_JOB not in runtime.handlers
