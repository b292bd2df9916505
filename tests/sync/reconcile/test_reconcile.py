"""Reconcile (issue 6): drift behind giftsync's back found and repaired, findings, dry runs, crashes.

Real PostgreSQL; Shopify, the POS kinds and Vii are the simulators. "Behind giftsync's back"
means straight on a simulator with no poll or webhook afterwards: only the reconcile can see it.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import REGISTRY
from rich.console import Console
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli_runs import reconcile_command
from app.clients.shopify import ShopifyUnavailable
from app.db.engine import transaction
from app.runtime import Runtime, install_features
from app.settings import Settings
from app.sync import run_reporter, runs
from app.sync import shadow as shadow_flow
from app.sync.omni import MOVE_JOB, SHOPIFY, export_shopify_card
from app.sync.reconcile import (
    DEACTIVATE_SHADOW_JOB,
    PERIODIC_NAME,
    Reconciler,
    execute_here,
    omni_cards,
    schedule_run,
)
from app.sync.runs import RECONCILE_JOB
from app.sync.shadow import CLOSE_JOB, ApplyRequest
from tests.conftest import make_settings
from tests.omni_wiring import POS_VARIANT_IDS, POS_VARIANTS, Omni, omni_upstreams
from tests.wiring import Upstreams, shadow_upstreams

VII_CARD = "6280001234567890"
VII_PIN = "4321"


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        create_update_shopify_gift_cards=True,
        download_shopify_gift_cards=True,
        shopify_serial_prefix="7000",
        pos_kind="retail",
    )


@dataclass
class Card:
    external_id: str
    serial: str
    card_id: uuid.UUID
    gid: str


@dataclass
class Recon:
    flow: Omni
    reconciler: Reconciler
    engine: AsyncEngine

    async def run(
        self, *, dry_run: bool = False, card_ids: list[uuid.UUID] | None = None
    ) -> tuple[uuid.UUID, dict[str, int]]:
        return await run_reconcile(self.flow.runtime, self.reconciler, dry_run, card_ids)

    async def cards(self, count: int, amount: str = "50.00") -> list[Card]:
        return await linked_cards(self.flow, self.engine, count, amount)


async def run_reconcile(
    runtime: Runtime,
    reconciler: Reconciler,
    dry_run: bool = False,
    card_ids: list[uuid.UUID] | None = None,
) -> tuple[uuid.UUID, dict[str, int]]:
    run_id = await runs.start_reconcile(runtime.sessions, dry_run=dry_run, card_ids=card_ids)
    counts = await execute_here(runtime.sessions, reconciler, run_id)
    return run_id, counts


def installed(runtime: Runtime) -> Reconciler:
    install_features(runtime)
    reconciler = runtime.reconciler
    assert reconciler is not None
    reconciler.bulk_poll_interval = 0.0  # the simulator finishes a bulk export in two looks
    return reconciler


@pytest.fixture(params=POS_VARIANTS, ids=POS_VARIANT_IDS)
async def recon(
    request: pytest.FixtureRequest, runtime: Runtime, engine: AsyncEngine
) -> AsyncIterator[Recon]:
    kind, sign, reading = request.param
    async with omni_upstreams(runtime, kind, sign, reading) as flow:
        yield Recon(flow, installed(runtime), engine)


@pytest.fixture
async def retail(runtime: Runtime, engine: AsyncEngine) -> AsyncIterator[Recon]:
    async with omni_upstreams(runtime, "retail", "negative") as flow:
        yield Recon(flow, installed(runtime), engine)


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(text(sql), params)).all())


async def linked_cards(flow: Omni, engine: AsyncEngine, count: int, amount: str) -> list[Card]:
    """Cards sold in store and linked by the poller, the way giftsync normally learns of them."""
    sold = []
    for number in range(count):
        serial = f"gc2026{uuid.uuid4().hex[:6]}{number:02d}"
        sold.append((flow.sell_in_store(serial, amount), serial))
    await flow.pollers.poll_pos()
    cards = []
    for external_id, serial in sold:
        card_id = await flow.omni.linked_card(flow.pos.system, external_id)
        assert card_id is not None
        [link] = await rows(
            engine,
            "SELECT external_id FROM card_links WHERE card_id = :c AND system = 'shopify'",
            c=card_id,
        )
        cards.append(Card(external_id, serial, card_id, link.external_id))
    return cards


FINGERPRINT = {
    "ledger": "SELECT id, card_id, system, amount_minor, idempotency_key FROM ledger ORDER BY id",
    "jobs": "SELECT id, kind, state, idempotency_key FROM jobs WHERE kind <> 'reconcile.run' "
    "ORDER BY id",
    "findings": "SELECT id, type, subject, evidence::text, last_run_id, resolved_at FROM findings "
    "ORDER BY id",
    "sync_base": "SELECT card_id, balance_minor, version, updated_at FROM sync_base ORDER BY 1",
    "card_links": "SELECT id, card_id, system, external_id, last_seen_balance_minor, "
    "last_seen_status, last_seen_at FROM card_links ORDER BY id",
    "gift_cards": "SELECT id, state, updated_at FROM gift_cards ORDER BY id",
    "shadow_cards": "SELECT id, state, updated_at FROM shadow_cards ORDER BY id",
}


async def fingerprint(engine: AsyncEngine) -> dict[str, list[Any]]:
    """Everything a reconcile could write, except its own run row and job."""
    return {name: [tuple(r) for r in await rows(engine, sql)] for name, sql in FINGERPRINT.items()}


async def base(engine: AsyncEngine, card_id: uuid.UUID) -> tuple[int, int]:
    [row] = await rows(
        engine, "SELECT balance_minor, version FROM sync_base WHERE card_id = :c", c=card_id
    )
    return row.balance_minor, row.version


async def open_findings(engine: AsyncEngine) -> list[Any]:
    return await rows(
        engine,
        "SELECT type, subject, card_id, evidence FROM findings WHERE resolved_at IS NULL "
        "ORDER BY id",
    )


async def run_view(recon: Recon, run_id: uuid.UUID) -> runs.RunView:
    view = await runs.get_run(recon.flow.runtime.sessions, run_id)
    assert view is not None
    return view


def money(recon: Recon, card: Card) -> tuple[Decimal, Decimal]:
    """(Shopify, POS) balances as the upstreams hold them."""
    return (
        recon.flow.shopify_card(card.gid)["balance"],
        recon.flow.pos_money(card.external_id, card.serial),
    )


# --- in sync --------------------------------------------------------------------------------


async def test_cards_in_agreement_are_counted_and_nothing_is_written(recon: Recon) -> None:
    await recon.cards(3)
    before = await fingerprint(recon.engine)

    run_id, counts = await recon.run()

    assert counts == {"checked": 3, "in_sync": 3, "repaired": 0, "findings": 0}
    assert await fingerprint(recon.engine) == before
    view = await run_view(recon, run_id)
    assert view.status == "succeeded" and view.findings == []


# --- drift behind giftsync's back, one side at a time -------------------------------------


async def test_spend_in_store_is_mirrored_to_shopify_and_a_rerun_is_a_no_op(
    recon: Recon,
) -> None:
    card, other = await recon.cards(2)
    recon.flow.spend_in_store(card.external_id, card.serial, "10.00")

    _, counts = await recon.run()
    moves = await rows(recon.engine, "SELECT payload FROM jobs WHERE kind = :k", k=MOVE_JOB)
    await recon.flow.drain()

    assert counts == {"checked": 2, "in_sync": 1, "repaired": 1, "findings": 0}
    assert [(m.payload["system"], m.payload["amount_minor"]) for m in moves] == [(SHOPIFY, -1000)]
    assert money(recon, card) == (Decimal("40.00"), Decimal("40.00"))
    assert money(recon, other) == (Decimal("50.00"), Decimal("50.00"))
    assert await base(recon.engine, card.card_id) == (4000, 1)
    ledger = await rows(
        recon.engine,
        "SELECT system, amount_minor, cause FROM ledger WHERE card_id = :c AND cause <> "
        "'card_created' ORDER BY id",
        c=card.card_id,
    )
    assert [(e.system, e.amount_minor, e.cause) for e in ledger] == [
        (recon.flow.pos.system, -1000, "observed"),
        (SHOPIFY, -1000, "merge"),
    ]

    before = await fingerprint(recon.engine)
    _, again = await recon.run()
    assert again == {"checked": 2, "in_sync": 2, "repaired": 0, "findings": 0}
    assert await fingerprint(recon.engine) == before


async def test_spend_online_is_mirrored_to_the_pos(recon: Recon) -> None:
    [card] = await recon.cards(1)
    recon.flow.shop_sim.spend(card.gid, Decimal("12.50"))

    _, counts = await recon.run()
    await recon.flow.drain()

    assert counts["repaired"] == 1
    assert money(recon, card) == (Decimal("37.50"), Decimal("37.50"))


async def test_reload_in_store_is_credited_in_shopify(recon: Recon) -> None:
    [card] = await recon.cards(1)
    recon.flow.reload_in_store(card.external_id, card.serial, "20.00")

    await recon.run()
    await recon.flow.drain()

    assert money(recon, card) == (Decimal("70.00"), Decimal("70.00"))
    _, again = await recon.run()
    assert again["in_sync"] == 1


async def test_both_sides_drifting_at_once_keep_both_spends(recon: Recon) -> None:
    [card] = await recon.cards(1)
    recon.flow.shop_sim.spend(card.gid, Decimal("5.00"))
    recon.flow.spend_in_store(card.external_id, card.serial, "10.00")

    _, counts = await recon.run()
    await recon.flow.drain()

    # 50 - 5 online - 10 in store: never "last writer wins".
    assert counts["repaired"] == 1
    assert money(recon, card) == (Decimal("35.00"), Decimal("35.00"))
    assert await base(recon.engine, card.card_id) == (3500, 1)


async def test_overdraft_zeroes_both_sides_and_stays_reported(recon: Recon) -> None:
    [card] = await recon.cards(1)
    recon.flow.shop_sim.spend(card.gid, Decimal("40.00"))
    recon.flow.spend_in_store(card.external_id, card.serial, "30.00")

    run_id, counts = await recon.run()
    await recon.flow.drain()

    assert counts == {"checked": 1, "in_sync": 0, "repaired": 1, "findings": 1}
    assert money(recon, card) == (Decimal("0.00"), Decimal("0.00"))
    [finding] = await open_findings(recon.engine)
    assert (finding.type, finding.card_id) == ("overdraft", card.card_id)
    assert finding.evidence["shortfall_minor"] == 2000
    assert [f.type for f in (await run_view(recon, run_id)).findings] == ["overdraft"]

    # Zeroed, the card agrees again; the loss is still for staff to chase.
    _, again = await recon.run()
    assert again["in_sync"] == 1
    assert [f.type for f in await open_findings(recon.engine)] == ["overdraft"]


async def test_deactivated_in_shopify_is_deactivated_on_the_pos(recon: Recon) -> None:
    [card] = await recon.cards(1)
    recon.flow.shop_sim.shop.deactivate(card.gid)

    _, counts = await recon.run()
    await recon.flow.drain()

    assert counts["repaired"] == 1
    pos_card = await recon.flow.pos.get_card(card.external_id)
    assert pos_card is not None and pos_card.status == "disabled"
    [state] = await rows(recon.engine, "SELECT state FROM gift_cards WHERE id = :c", c=card.card_id)
    assert state.state == "deactivated"
    # OnSite cannot switch a card off: its deactivation redeems what is left, a balance move
    # its poller merges like any other (a no-op on the other kinds).
    await recon.flow.pollers.poll_pos()
    before = await fingerprint(recon.engine)
    _, again = await recon.run()
    assert again == {"checked": 1, "in_sync": 1, "repaired": 0, "findings": 0}
    assert await fingerprint(recon.engine) == before


async def test_archived_on_the_pos_is_deactivated_in_shopify(retail: Recon) -> None:
    [card] = await retail.cards(1)
    assert retail.flow.ls_sim is not None
    retail.flow.ls_sim.cards[card.external_id].archived = True

    await retail.run()
    await retail.flow.drain()

    assert retail.flow.shopify_card(card.gid)["enabled"] is False


async def test_reload_on_a_card_deactivated_elsewhere_is_a_status_conflict_until_fixed(
    retail: Recon,
) -> None:
    [card] = await retail.cards(1)
    retail.flow.shop_sim.shop.deactivate(card.gid)
    retail.flow.reload_in_store(card.external_id, card.serial, "20.00")

    _, counts = await retail.run()

    assert counts["findings"] == 1 and counts["repaired"] == 0
    assert [f.type for f in await open_findings(retail.engine)] == ["status_conflict"]
    assert retail.flow.shopify_card(card.gid)["enabled"] is False

    # Staff settle it in store (the card is archived there too): a later run sees it fixed.
    assert retail.flow.ls_sim is not None
    retail.flow.ls_sim.cards[card.external_id].archived = True
    await retail.run()
    assert await open_findings(retail.engine) == []


# --- links ------------------------------------------------------------------------------------


@pytest.mark.parametrize("system", ["pos", SHOPIFY])
async def test_a_deleted_link_row_is_restored_and_the_card_merged(
    recon: Recon, system: str
) -> None:
    [card] = await recon.cards(1)
    deleted = recon.flow.pos.system if system == "pos" else SHOPIFY
    async with recon.engine.begin() as connection:
        await connection.execute(
            text("DELETE FROM card_links WHERE card_id = :c AND system = :s"),
            {"c": card.card_id, "s": deleted},
        )
    recon.flow.spend_in_store(card.external_id, card.serial, "10.00")

    _, counts = await recon.run()
    await recon.flow.drain()

    assert counts == {"checked": 1, "in_sync": 0, "repaired": 1, "findings": 0}
    links = await rows(
        recon.engine,
        "SELECT system, external_id, code_hash FROM card_links WHERE card_id = :c",
        c=card.card_id,
    )
    assert {(link.system, link.external_id) for link in links} == {
        (SHOPIFY, card.gid),
        (recon.flow.pos.system, card.external_id),
    }
    assert all(link.code_hash == recon.flow.omni.code_hash(card.serial) for link in links)
    assert money(recon, card) == (Decimal("40.00"), Decimal("40.00"))
    assert await open_findings(recon.engine) == []


async def test_a_card_with_no_links_left_is_reported_with_its_ids_until_fixed(
    recon: Recon,
) -> None:
    [card] = await recon.cards(1)
    async with recon.engine.begin() as connection:
        saved = (
            await connection.execute(
                text("SELECT * FROM card_links WHERE card_id = :c"), {"c": card.card_id}
            )
        ).all()
        await connection.execute(
            text("DELETE FROM card_links WHERE card_id = :c"), {"c": card.card_id}
        )

    _, counts = await recon.run()

    assert counts["findings"] == 2
    by_subject = {f.subject: f for f in await open_findings(recon.engine)}
    assert by_subject[f"card:{card.card_id}"].type == "missing_link"
    unlinked = by_subject[f"unlinked:shopify:{card.gid}"]
    assert unlinked.type == "missing_link"
    assert unlinked.evidence["pos_external_id"] == card.external_id
    assert unlinked.evidence["pos_system"] == recon.flow.pos.system
    assert unlinked.evidence["pos_card_found"] is True
    # Evidence names ids and last 4, never a card number.
    assert card.serial not in str(unlinked.evidence).lower()

    async with recon.engine.begin() as connection:
        for link in saved:
            await connection.execute(
                text(
                    "INSERT INTO card_links (card_id, system, external_id, code_last4, code_hash) "
                    "VALUES (:c, :s, :e, :l, :h)"
                ),
                {
                    "c": link.card_id,
                    "s": link.system,
                    "e": link.external_id,
                    "l": link.code_last4,
                    "h": link.code_hash,
                },
            )
    _, fixed = await recon.run()
    assert fixed["in_sync"] == 1
    assert await open_findings(recon.engine) == []


async def test_a_linked_card_the_upstream_no_longer_has_is_a_missing_link(
    retail: Recon,
) -> None:
    [card] = await retail.cards(1)
    assert retail.flow.ls_sim is not None
    del retail.flow.ls_sim.cards[card.external_id]

    _, counts = await retail.run()

    assert counts["findings"] == 1
    [finding] = await open_findings(retail.engine)
    assert finding.type == "missing_link"
    assert finding.evidence["absent"] == [{"system": "lightspeed", "external_id": card.external_id}]
    assert await rows(retail.engine, "SELECT id FROM jobs WHERE kind = :k", k=MOVE_JOB) == []


async def test_a_pos_card_giftsync_exported_but_no_longer_links_is_reported(
    recon: Recon,
) -> None:
    gid, _ = recon.flow.shop_sim.create_gift_card(Decimal("25.00"))
    shopify_card = await recon.flow.shop.get_gift_card(gid)
    assert shopify_card is not None
    outcome = await export_shopify_card(recon.flow.omni, shopify_card)
    assert outcome.card_id is not None
    [pos_link] = await rows(
        recon.engine,
        "SELECT external_id FROM card_links WHERE card_id = :c AND system <> 'shopify'",
        c=outcome.card_id,
    )
    async with recon.engine.begin() as connection:
        await connection.execute(
            text("DELETE FROM gift_cards WHERE id = :c"), {"c": outcome.card_id}
        )

    await recon.run()

    [finding] = await open_findings(recon.engine)
    assert finding.type == "missing_link"
    assert finding.subject == f"unlinked:{recon.flow.pos.system}:{pos_link.external_id}"
    assert finding.evidence["shopify_id"] == gid


# --- dry run ------------------------------------------------------------------------------------


async def test_dry_run_plans_the_same_repairs_and_writes_nothing(recon: Recon) -> None:
    spent, overdrawn, unlinked, fine = await recon.cards(4)
    recon.flow.spend_in_store(spent.external_id, spent.serial, "10.00")
    recon.flow.shop_sim.spend(overdrawn.gid, Decimal("40.00"))
    recon.flow.spend_in_store(overdrawn.external_id, overdrawn.serial, "30.00")
    async with recon.engine.begin() as connection:
        await connection.execute(
            text("DELETE FROM card_links WHERE card_id = :c AND system = 'shopify'"),
            {"c": unlinked.card_id},
        )
    before = await fingerprint(recon.engine)

    run_id, dry = await recon.run(dry_run=True)

    assert await fingerprint(recon.engine) == before
    assert dry == {"checked": 4, "in_sync": 1, "repaired": 3, "findings": 1}
    view = await run_view(recon, run_id)
    assert view.status == "succeeded" and view.findings == []
    assert [f["type"] for f in view.progress["findings"]] == ["overdraft"]
    assert view.progress["drift_minor"] == 1000 + 1000 + 2000

    _, real = await recon.run()
    assert real == dry
    await recon.flow.drain()
    assert money(recon, spent) == (Decimal("40.00"), Decimal("40.00"))
    assert money(recon, overdrawn) == (Decimal("0.00"), Decimal("0.00"))
    assert money(recon, fine) == (Decimal("50.00"), Decimal("50.00"))


# --- crashes and concurrency -------------------------------------------------------------------


async def test_a_crash_mid_run_leaves_whole_cards_and_the_retried_job_finishes(
    retail: Recon, monkeypatch: pytest.MonkeyPatch
) -> None:
    cards = await retail.cards(5)
    for card in cards:
        retail.flow.spend_in_store(card.external_id, card.serial, "10.00")
    retail.reconciler.batch_size = 2
    retail.reconciler.repair_concurrency = 1  # which card the crash hits is then known
    real_sync = omni_cards.sync_card
    calls = 0

    async def crashing_sync(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise RuntimeError("worker killed mid-run")
        return await real_sync(*args, **kwargs)

    monkeypatch.setattr(omni_cards, "sync_card", crashing_sync)
    run_id = await runs.start_reconcile(retail.flow.runtime.sessions, dry_run=False)
    await retail.flow.drain()  # the worker runs the reconcile job (it fails) and 3 cards' moves

    view = await run_view(retail, run_id)
    assert view.status == "running" and view.progress["after"] is not None
    assert view.counts["repaired"] == 2  # the first batch's checkpoint
    merged = [c for c in cards if (await base(retail.engine, c.card_id))[1] == 1]
    untouched = [c for c in cards if (await base(retail.engine, c.card_id))[1] == 0]
    assert len(merged) == 3 and len(untouched) == 2
    for card in merged:  # base, ledger and move of one card: all or nothing
        assert money(retail, card) == (Decimal("40.00"), Decimal("40.00"))
    for card in untouched:
        assert money(retail, card) == (Decimal("50.00"), Decimal("40.00"))
        assert (
            await rows(
                retail.engine,
                "SELECT id FROM ledger WHERE card_id = :c AND cause <> 'card_created'",
                c=card.card_id,
            )
            == []
        )

    monkeypatch.undo()
    async with retail.engine.begin() as connection:  # the backoff has passed
        await connection.execute(
            text("UPDATE jobs SET run_at = now() WHERE kind = :k"), {"k": RECONCILE_JOB}
        )
    await retail.flow.drain()

    view = await run_view(retail, run_id)
    assert view.status == "succeeded"
    # The batch the crash hit is redone: the card repaired before the crash is in sync now.
    assert view.counts == {"checked": 5, "in_sync": 1, "repaired": 4, "findings": 0}
    for card in cards:
        assert money(retail, card) == (Decimal("40.00"), Decimal("40.00"))
    assert len(await rows(retail.engine, "SELECT id FROM jobs WHERE kind = :k", k=MOVE_JOB)) == 5


async def test_a_run_whose_worker_died_is_taken_over_when_its_lease_ends(retail: Recon) -> None:
    [card] = await retail.cards(1)
    retail.flow.spend_in_store(card.external_id, card.serial, "10.00")
    run_id = await runs.start_reconcile(retail.flow.runtime.sessions, dry_run=False)
    async with retail.engine.begin() as connection:
        # A worker claimed it, started it, and died: the run is running, the lease stale.
        await connection.execute(
            text(
                "UPDATE jobs SET state = 'running', attempts = 1, locked_by = 'dead-worker', "
                "locked_until = now() - interval '1 second' WHERE kind = :k"
            ),
            {"k": RECONCILE_JOB},
        )
        await connection.execute(
            text("UPDATE runs SET status = 'running', started_at = now() WHERE id = :id"),
            {"id": run_id},
        )

    await retail.flow.drain()

    assert (await run_view(retail, run_id)).status == "succeeded"
    assert money(retail, card) == (Decimal("40.00"), Decimal("40.00"))


async def test_upstream_failing_mid_stream_writes_nothing_and_the_retry_succeeds(
    recon: Recon,
) -> None:
    cards = await recon.cards(3)
    recon.flow.spend_in_store(cards[0].external_id, cards[0].serial, "10.00")
    real_iter = recon.flow.omni.pos.iter_cards

    async def failing_iter() -> AsyncIterator[Any]:
        count = 0
        async for card in real_iter():
            count += 1
            if count == 2:
                raise ShopifyUnavailable("connection reset while paging")
            yield card

    recon.flow.omni.pos.iter_cards = failing_iter  # type: ignore[method-assign]
    before = await fingerprint(recon.engine)
    run_id = await runs.start_reconcile(recon.flow.runtime.sessions, dry_run=False)
    with pytest.raises(ShopifyUnavailable):
        await execute_here(recon.flow.runtime.sessions, recon.reconciler, run_id)

    assert await fingerprint(recon.engine) == before
    [job] = await rows(
        recon.engine, "SELECT state, last_error FROM jobs WHERE kind = :k", k=RECONCILE_JOB
    )
    assert job.state == "queued" and "connection reset" in job.last_error

    recon.flow.omni.pos.iter_cards = real_iter  # type: ignore[method-assign]
    async with recon.engine.begin() as connection:
        await connection.execute(
            text("UPDATE jobs SET run_at = now() WHERE kind = :k"), {"k": RECONCILE_JOB}
        )
    await recon.flow.drain()
    view = await run_view(recon, run_id)
    assert view.status == "succeeded" and view.counts["repaired"] == 1
    assert money(recon, cards[0]) == (Decimal("40.00"), Decimal("40.00"))


async def test_a_merge_landing_between_snapshot_and_repair_is_not_undone(retail: Recon) -> None:
    """The snapshot predates a poller's merge and its move: repairing from it would re-credit."""
    [card] = await retail.cards(1)
    real_export = retail.flow.shop.bulk_export_gift_cards

    async def export_then_event(*, poll_interval: float = 1.0) -> AsyncIterator[Any]:
        async for shopify_card in real_export(poll_interval=poll_interval):
            yield shopify_card  # Shopify said 50.00 ...
        # ... then the store sells 10.00 of it; the poller merges and the debit lands.
        retail.flow.spend_in_store(card.external_id, card.serial, "10.00")
        await retail.flow.pollers.poll_pos()
        await retail.flow.drain()

    retail.flow.shop.bulk_export_gift_cards = export_then_event  # type: ignore[method-assign]
    _, counts = await retail.run()
    await retail.flow.drain()

    assert counts["in_sync"] == 1 and counts["repaired"] == 0
    assert money(retail, card) == (Decimal("40.00"), Decimal("40.00"))
    assert await base(retail.engine, card.card_id) == (4000, 1)


async def test_cards_with_moves_in_flight_are_left_alone_and_their_findings_kept(
    retail: Recon,
) -> None:
    [card] = await retail.cards(1)
    retail.flow.shop_sim.shop.deactivate(card.gid)
    retail.flow.reload_in_store(card.external_id, card.serial, "20.00")
    await retail.run()  # status_conflict
    async with retail.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO jobs (kind, payload, idempotency_key) "
                "VALUES (:k, CAST(:p AS jsonb), 'test-move')"
            ),
            {"k": MOVE_JOB, "p": f'{{"card_id": "{card.card_id}"}}'},
        )

    _, counts = await retail.run()

    assert counts["checked"] == 0 and counts.get("pending") == 1
    assert [f.type for f in await open_findings(retail.engine)] == ["status_conflict"]


async def test_a_reconcile_of_named_cards_checks_only_those(recon: Recon) -> None:
    named, other = await recon.cards(2)
    for card in (named, other):
        recon.flow.spend_in_store(card.external_id, card.serial, "10.00")

    _, counts = await recon.run(card_ids=[named.card_id])
    await recon.flow.drain()

    assert counts == {"checked": 1, "in_sync": 0, "repaired": 1, "findings": 0}
    assert money(recon, named) == (Decimal("40.00"), Decimal("40.00"))
    assert money(recon, other) == (Decimal("50.00"), Decimal("40.00"))


# --- shadow cards -------------------------------------------------------------------------------


@dataclass
class Shadow:
    up: Upstreams
    runtime: Runtime
    reconciler: Reconciler
    engine: AsyncEngine

    async def apply(self, token: str = "c-1", cart: str = "30.00") -> Any:
        assert self.runtime.shadow is not None
        await shadow_flow.apply(
            self.runtime.shadow, ApplyRequest(VII_CARD, VII_PIN, Decimal(cart), token, "10.0.0.1")
        )
        [row] = await rows(
            self.engine,
            "SELECT id, card_id, shopify_gift_card_id, hold_code FROM shadow_cards "
            "WHERE checkout_token = :t",
            t=token,
        )
        return row

    async def run(self, dry_run: bool = False) -> tuple[uuid.UUID, dict[str, int]]:
        return await run_reconcile(self.runtime, self.reconciler, dry_run)

    async def drain(self) -> None:
        from app.worker import Worker

        worker = Worker(self.runtime.sessions, self.runtime.handlers)
        while await worker.run_once():
            pass


@pytest.fixture
async def shadow(runtime: Runtime, engine: AsyncEngine) -> AsyncIterator[Shadow]:
    runtime.settings = runtime.settings.model_copy(
        update={"create_update_shopify_gift_cards": False, "download_shopify_gift_cards": False}
    )
    async with shadow_upstreams(runtime) as up:
        up.vii_sim.add_card(VII_CARD, VII_PIN, Decimal("50.00"))
        yield Shadow(up, runtime, installed(runtime), engine)


async def test_an_open_hold_with_its_shopify_card_in_use_is_in_sync(shadow: Shadow) -> None:
    await shadow.apply()
    before = await fingerprint(shadow.engine)

    _, counts = await shadow.run()

    assert counts == {"checked": 1, "in_sync": 1, "repaired": 0, "findings": 0}
    assert await fingerprint(shadow.engine) == before


async def test_an_enabled_shadow_card_without_an_open_hold_is_deactivated(shadow: Shadow) -> None:
    row = await shadow.apply()
    async with shadow.engine.begin() as connection:
        # Its hold was closed but the Shopify card was left spendable (a lost close job).
        await connection.execute(
            text(
                "UPDATE shadow_cards SET state = 'released', pin_ciphertext = NULL WHERE id = :id"
            ),
            {"id": row.id},
        )

    _, dry = await shadow.run(dry_run=True)
    assert (
        await rows(shadow.engine, "SELECT id FROM jobs WHERE kind = :k", k=DEACTIVATE_SHADOW_JOB)
        == []
    )
    _, counts = await shadow.run()
    await shadow.drain()

    assert dry == counts == {"checked": 1, "in_sync": 0, "repaired": 1, "findings": 1}
    assert shadow.up.shop_sim.card(row.shopify_gift_card_id)["enabled"] is False
    [finding] = await open_findings(shadow.engine)
    assert (finding.type, finding.card_id) == ("orphan_shadow_card", row.card_id)
    assert finding.evidence["shopify_id"] == row.shopify_gift_card_id

    _, again = await shadow.run()
    assert again["in_sync"] == 1
    assert await open_findings(shadow.engine) == []


async def test_an_open_hold_whose_shopify_card_was_disabled_is_released(shadow: Shadow) -> None:
    row = await shadow.apply()
    shadow.up.shop_sim.shop.deactivate(row.shopify_gift_card_id)

    _, counts = await shadow.run()
    closes = await rows(
        shadow.engine, "SELECT idempotency_key FROM jobs WHERE kind = :k", k=CLOSE_JOB
    )
    await shadow.drain()

    assert counts == {"checked": 1, "in_sync": 0, "repaired": 1, "findings": 1}
    assert [c.idempotency_key for c in closes] == [f"shadow:{row.id}:close"]
    assert shadow.up.vii_sim.open_holds(VII_CARD) == {}
    [state] = await rows(shadow.engine, "SELECT state FROM shadow_cards WHERE id = :id", id=row.id)
    assert state.state == "released"
    assert [f.type for f in await open_findings(shadow.engine)] == ["hold_without_card"]

    _, again = await shadow.run()
    assert again["in_sync"] == 1 and await open_findings(shadow.engine) == []


async def test_shadow_cards_closing_on_their_own_are_not_reported(shadow: Shadow) -> None:
    row = await shadow.apply()
    assert shadow.runtime.shadow is not None
    await shadow_flow.expire_due(shadow.runtime.shadow)  # nothing due yet
    async with shadow.engine.begin() as connection:
        await connection.execute(
            text("UPDATE shadow_cards SET expires_at = now() WHERE id = :id"), {"id": row.id}
        )
    await shadow_flow.expire_due(shadow.runtime.shadow)  # closed; its close job is queued

    _, counts = await shadow.run()

    assert counts["findings"] == 0 and counts["checked"] == 0
    await shadow.drain()
    _, after = await shadow.run()
    assert after == {"checked": 1, "in_sync": 1, "repaired": 0, "findings": 0}


async def test_a_shadow_card_no_checkout_recorded_is_deactivated(shadow: Shadow) -> None:
    gid, _ = shadow.up.shop_sim.create_gift_card(Decimal("30.00"))
    card = shadow.up.shop_sim.shop.card(gid)
    card.note = f"shadow:{uuid.uuid4()}"
    card.created_at = datetime.now(UTC) - timedelta(hours=1)
    young_gid, _ = shadow.up.shop_sim.create_gift_card(Decimal("30.00"))
    shadow.up.shop_sim.shop.card(young_gid).note = f"shadow:{uuid.uuid4()}"

    _, counts = await shadow.run()
    await shadow.drain()

    assert counts["findings"] == 1
    [finding] = await open_findings(shadow.engine)
    assert (finding.type, finding.subject) == ("orphan_shadow_card", f"unlinked:shopify:{gid}")
    assert shadow.up.shop_sim.card(gid)["enabled"] is False
    # Younger than the grace period: maybe a checkout still committing.
    assert shadow.up.shop_sim.card(young_gid)["enabled"] is True


# --- schedule, wiring, CLI, metrics ------------------------------------------------------------


async def test_the_schedule_starts_one_full_run_per_interval(retail: Recon) -> None:
    sessions = retail.flow.runtime.sessions
    assert [p.name for p in retail.flow.runtime.periodic].count(PERIODIC_NAME) == 1
    handler = retail.flow.runtime.handlers[RECONCILE_JOB]
    assert isinstance(handler, functools.partial)
    assert (handler.func, handler.args) == (Reconciler.run_job, (retail.reconciler,))

    first = await schedule_run(sessions, timedelta(hours=1))
    assert first is not None
    assert await schedule_run(sessions, timedelta(hours=1)) is None
    assert await schedule_run(sessions, timedelta(0)) is None  # the first is still queued
    await runs.start_reconcile(sessions, dry_run=True)  # a dry run does not count
    await retail.flow.drain()
    assert (await run_view(retail, first)).status == "succeeded"
    assert await schedule_run(sessions, timedelta(hours=1)) is None
    assert await schedule_run(sessions, timedelta(0)) is not None


async def test_cli_command_runs_it_here_and_prints_a_summary(retail: Recon) -> None:
    [card] = await retail.cards(1)
    retail.flow.spend_in_store(card.external_id, card.serial, "10.00")
    console = Console(record=True, width=100)

    counts = await reconcile_command(retail.flow.runtime, False, console)

    assert counts["repaired"] == 1
    output = console.export_text()
    assert "repaired" in output and "10.00" in output
    [job] = await rows(retail.engine, "SELECT state FROM jobs WHERE kind = :k", k=RECONCILE_JOB)
    assert job.state == "done"


async def test_metrics_count_checked_repaired_findings_and_drift(retail: Recon) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"mode": "repair", **labels}) or 0.0

    before: Callable[[], tuple[float, ...]] = lambda: (  # noqa: E731
        sample("giftsync_reconcile_cards_checked_total"),
        sample("giftsync_reconcile_cards_repaired_total"),
        sample("giftsync_reconcile_drift_minor_total"),
        sample("giftsync_reconcile_findings_total", type="overdraft"),
        sample("giftsync_reconcile_run_seconds_count"),
    )
    start = before()
    card, _ = await retail.cards(2)
    retail.flow.shop_sim.spend(card.gid, Decimal("40.00"))
    retail.flow.spend_in_store(card.external_id, card.serial, "30.00")

    await retail.run()

    assert [b - a for a, b in zip(start, before(), strict=True)] == [2, 1, 1000 + 2000, 1, 1]


async def test_concurrent_runs_repair_each_card_once(retail: Recon) -> None:
    import asyncio

    cards = await retail.cards(3)
    for card in cards:
        retail.flow.spend_in_store(card.external_id, card.serial, "10.00")
    sessions = retail.flow.runtime.sessions
    first = await runs.start_reconcile(sessions, dry_run=False)
    second = await runs.start_reconcile(sessions, dry_run=False)

    await asyncio.gather(retail.reconciler.run(first), retail.reconciler.run(second))
    await retail.flow.drain()

    assert len(await rows(retail.engine, "SELECT id FROM jobs WHERE kind = :k", k=MOVE_JOB)) == 3
    for card in cards:
        assert money(retail, card) == (Decimal("40.00"), Decimal("40.00"))


async def test_finished_runs_are_not_run_again(retail: Recon) -> None:
    await retail.cards(1)
    run_id, counts = await retail.run()
    async with transaction(retail.flow.runtime.sessions) as session:
        state = await run_reporter.mark_running(session, run_id)
    assert state is None
    assert await retail.reconciler.run(run_id) == counts


async def test_the_cli_follows_a_run_a_worker_already_took(retail: Recon) -> None:
    import asyncio

    from app.db import jobs

    [card] = await retail.cards(1)
    retail.flow.spend_in_store(card.external_id, card.serial, "10.00")
    sessions = retail.flow.runtime.sessions
    run_id = await runs.start_reconcile(sessions, dry_run=False)
    async with transaction(sessions) as session:
        [claimed] = await jobs.claim(session, "worker-1", limit=1, lease=timedelta(minutes=1))

    async def worker() -> None:
        await retail.reconciler.run(run_id)
        async with transaction(sessions) as session:
            await jobs.complete(session, claimed.id, "worker-1")

    followed, _ = await asyncio.gather(execute_here(sessions, retail.reconciler, run_id), worker())

    assert followed["repaired"] == 1
    assert (await run_view(retail, run_id)).status == "succeeded"
