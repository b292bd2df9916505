"""Crash safety of runs: a worker process is SIGKILLed in the middle of a backfill or a reconcile
run, a fresh one takes the run over, and nothing is lost or applied twice.

Runs are started as an operator would, through the API; they execute in the worker as the
`backfill.run` / `reconcile.run` jobs. After the kill, `expire_leases` stands in for the job's
lease running out, so the fresh worker re-claims the job and resumes the `running` run.

The pollers and the reconcile schedule are kept quiet (`quiet_background`), so the run under
test is the only thing that links cards or repairs drift: whatever happens to the cards is the
run's doing, and counting moves proves each was made exactly once.

- Mid backfill to Shopify: cards sold in store are being copied to Shopify (Shopify is slow, so
  the pass takes seconds), the run has checkpointed, and a Shopify card has just been created
  whose answer is lost. The resumed run adopts that card, and every POS card ends with exactly
  one Shopify card.
- Mid backfill to the POS: the same the other way, Shopify cards being copied to Lightspeed
  (which searches codes once a second), with a POS card made whose answer is lost.
- Mid reconcile: linked cards drifted behind giftsync's back (spent in store and online). The
  worker dies while the run is reading the upstreams, and the next one dies again while the
  repairs (move jobs) are landing. Every card ends exact on both sides with each drift
  repaired once, and a second reconcile finds nothing to do and writes nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.scale.processes import (
    ADMIN_TOKEN,
    Processes,
    WorkerProc,
    expire_leases,
    giftsync_env,
    money,
    wait_until,
)
from tests.scale.test_crash_safety import (
    assert_ledger_keys_unique,
    linked,
    sell_cards,
    shopify_by_code,
)

POS = "lightspeed"
POS_CURSOR = f"omni:{POS}:changes"
SHOPIFY_CURSOR = "omni-poll-shopify"


async def quiet_background(engine: AsyncEngine) -> None:
    """Keep the pollers and the reconcile schedule from doing the run's work behind its back.

    The pollers' cursors are put a day ahead (they see no change), and a full reconcile is
    recorded as just finished (the schedule waits `RECONCILE_INTERVAL`, an hour, for the next).
    """
    ahead = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    async with engine.begin() as connection:
        for name in (POS_CURSOR, SHOPIFY_CURSOR):
            await connection.execute(
                text("INSERT INTO sync_cursors (name, cursor) VALUES (:n, :c)"),
                {"n": name, "c": ahead},
            )
        await connection.execute(
            text(
                """
                INSERT INTO runs (id, kind, status, params, created_at, started_at, finished_at)
                VALUES (:id, 'reconcile', 'succeeded', '{"dry_run": false}', now(), now(), now())
                """
            ),
            {"id": uuid.uuid4()},
        )


@asynccontextmanager
async def admin(processes: Processes, env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    api = await processes.start_api(env)
    async with api.client(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        yield http


async def start_run(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> str:
    response = await http.post(path, json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["runId"])


async def run_view(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await http.get(f"/internal/runs/{run_id}")
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


async def stored_status(engine: AsyncEngine, run_id: str) -> str:
    async with engine.connect() as connection:
        status = await connection.scalar(
            text("SELECT status FROM runs WHERE id = :id"), {"id": uuid.UUID(run_id)}
        )
    return str(status)


async def wait_for_run(
    http: httpx.AsyncClient, processes: Processes, run_id: str, *, within: float = 60
) -> dict[str, Any]:
    """The run's view once it has ended; fails unless it succeeded."""
    view: dict[str, Any] = {}

    async def ended() -> bool:
        nonlocal view
        view = await run_view(http, run_id)
        return view["status"] in ("succeeded", "failed")

    await wait_until(ended, within=within, what=f"run {run_id} ends", processes=processes)
    assert view["status"] == "succeeded", view
    return view


async def kill_and_expire(engine: AsyncEngine, worker: WorkerProc) -> int:
    worker.kill()
    return await expire_leases(engine, worker)


async def job_states(engine: AsyncEngine, pattern: str) -> dict[str, int]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT state, count(*) FROM jobs WHERE kind LIKE :p GROUP BY state"),
            {"p": pattern},
        )
        return {row[0]: int(row[1]) for row in rows}


async def links_per_card(engine: AsyncEngine) -> list[tuple[int, int]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                """
                SELECT count(*) FILTER (WHERE system = 'shopify'),
                       count(*) FILTER (WHERE system = :pos)
                FROM card_links GROUP BY card_id
                """
            ),
            {"pos": POS},
        )
        return [(int(row[0]), int(row[1])) for row in rows]


async def linked_ids(engine: AsyncEngine, system: str) -> set[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT external_id FROM card_links WHERE system = :s"), {"s": system}
        )
        return {row[0] for row in rows}


def unrecorded_for(
    longer_than: float, find: Callable[[], Awaitable[set[str]]]
) -> Callable[[], Awaitable[bool]]:
    """A check: some upstream card has stayed unrecorded by giftsync for `longer_than` seconds.

    A write answered normally is recorded within the upstream's latency; one still unrecorded
    after that had its answer lost, so killing the worker now leaves it for the next one.
    """
    first_seen: dict[str, float] = {}

    async def check() -> bool:
        now = asyncio.get_running_loop().time()
        current = await find()
        for key in set(first_seen) - current:
            del first_seen[key]
        for key in current:
            first_seen.setdefault(key, now)
        return any(now - seen > longer_than for seen in first_seen.values())

    return check


async def count_rows(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(text(f"SELECT count(*) FROM {table}"))
    return int(count or 0)


# --- backfill ---------------------------------------------------------------------------------


async def test_worker_killed_mid_backfill_to_shopify_copies_every_card_once(
    processes: Processes, engine: AsyncEngine, database_url: str
) -> None:
    sims = await processes.start_simulators()
    env = giftsync_env(database_url, sims)
    await quiet_background(engine)
    sold = await sell_cards(sims, 40)
    ids, codes = list(sold), {code for code, _ in sold.values()}
    # A card costs a Shopify create: at eight cards at a time the pass takes about ten
    # seconds, so it checkpoints (every 5 s) well before it is done.
    await sims.set_faults("shopify", latency_ms=2000)

    async with admin(processes, env) as http:
        run_id = await start_run(http, "/internal/backfill", {"direction": "to_shopify"})
        first = await processes.start_worker(env)

        async def checkpointed() -> bool:
            view = await run_view(http, run_id)
            assert view["status"] in ("queued", "running"), f"ended before the kill: {view}"
            return bool(view["status"] == "running" and int(view["counts"].get("moved", 0)) > 0)

        await wait_until(
            checkpointed, within=40, what="the run checkpoints cards moved", processes=processes
        )
        # The worst moment to die: Shopify made a card whose answer never came back.
        await sims.set_faults("shopify", lose_answer_rate=1.0, lost_answer_hang_s=10)
        pos_of = {code: pos_id for pos_id, (code, _) in sold.items()}

        async def made_not_linked() -> set[str]:
            done = await linked_ids(engine, POS)
            return {
                code
                for code, cards in (await shopify_by_code(sims, codes)).items()
                if cards and pos_of[code] not in done
            }

        await wait_until(
            unrecorded_for(2.5, made_not_linked),
            within=30,
            what="a Shopify card is created whose answer is lost",
            processes=processes,
        )
        first.kill()
        at_kill = await linked(engine, ids)
        made_at_kill = sum(len(cards) for cards in (await shopify_by_code(sims, codes)).values())
        checkpoint = (await run_view(http, run_id))["counts"]
        assert await stored_status(engine, run_id) == "running", "the kill must land mid-run"
        assert 0 < at_kill < len(ids), "the worker must die with the backfill half done"
        assert made_at_kill > at_kill, "a Shopify card exists that giftsync has not recorded"
        assert await expire_leases(engine, first) >= 1, "the run's job was the killed worker's"

        await sims.set_faults("shopify", latency_ms=0, lose_answer_rate=0.0)
        await processes.start_worker(env)
        view = await wait_for_run(http, processes, run_id)

    shopify = await shopify_by_code(sims, codes)
    for code, amount in sold.values():
        assert [money(str(card["balance"])) for card in shopify[code]] == [money(amount)], code
    per_card = await links_per_card(engine)
    assert len(per_card) == len(ids) and set(per_card) == {(1, 1)}
    assert await linked(engine, ids) == len(ids)

    counts, progress = view["counts"], view["progress"]["to_shopify"]
    assert progress["finished"] and progress["processed"] == len(ids)
    assert counts["moved"] + counts["already_linked"] + counts["skipped"] == len(ids), counts
    assert counts["skipped"] == 0, view["progress"]
    # Resumed from the checkpoint, not counted again from the start.
    assert counts["moved"] >= int(checkpoint["moved"]) > 0
    async with engine.connect() as connection:
        bases = await connection.scalar(text("SELECT sum(balance_minor) FROM sync_base"))
        findings = await connection.scalar(text("SELECT count(*) FROM findings"))
    assert bases == sum(int(money(amount) * 100) for _, amount in sold.values())
    assert findings == 0
    assert set(await job_states(engine, "backfill.%")) == {"done"}
    await assert_ledger_keys_unique(engine)


async def test_worker_killed_mid_backfill_to_pos_gives_every_card_one_pos_twin(
    processes: Processes, engine: AsyncEngine, database_url: str
) -> None:
    sims = await processes.start_simulators()
    env = giftsync_env(database_url, sims)
    await quiet_background(engine)
    # Lightspeed's own bucket allows one card write every ten seconds: widen it, this test is
    # about the kill, not the pacing.
    await sims.set_pos_limits(bucket_size=100_000, drip_rate=10_000)
    online: dict[str, Decimal] = {}
    for n in range(32):
        balance = Decimal(f"{20 + n}.{(11 * n) % 100:02d}")
        online[await sims.sell_online(str(balance))] = balance
    # A fresh card costs Lightspeed two writes (the account, the loading sale) and no look-up:
    # at 3 s each, 32 cards in four rounds of eight take about 24 s, and the pass checkpoints
    # (every 5 s) on the way, leaving most cards still to move when the answers start to be
    # lost, however slowly this machine notices the checkpoint.
    await sims.set_faults("lightspeed", latency_ms=3000)

    async def linked_online() -> int:
        async with engine.connect() as connection:
            count = await connection.scalar(
                text(
                    "SELECT count(*) FROM card_links "
                    "WHERE system = 'shopify' AND external_id = ANY(:ids)"
                ),
                {"ids": list(online)},
            )
        return int(count or 0)

    async with admin(processes, env) as http:
        run_id = await start_run(http, "/internal/backfill", {"direction": "to_pos"})
        first = await processes.start_worker(env)

        async def checkpointed() -> bool:
            view = await run_view(http, run_id)
            assert view["status"] in ("queued", "running"), f"ended before the kill: {view}"
            return bool(view["status"] == "running" and int(view["counts"].get("moved", 0)) > 0)

        await wait_until(
            checkpointed, within=40, what="the run checkpoints cards moved", processes=processes
        )
        await sims.set_faults("lightspeed", lose_answer_rate=1.0, lost_answer_hang_s=10)

        async def made_not_linked() -> set[str]:
            return set(await sims.pos_cards()) - await linked_ids(engine, POS)

        await wait_until(
            unrecorded_for(1.0, made_not_linked),
            within=30,
            what="a POS card is created whose answer is lost",
            processes=processes,
        )
        first.kill()
        at_kill = await linked_online()
        made_at_kill = len(await sims.pos_cards())
        checkpoint = (await run_view(http, run_id))["counts"]
        assert await stored_status(engine, run_id) == "running", "the kill must land mid-run"
        assert 0 < at_kill < len(online), "the worker must die with the backfill half done"
        assert made_at_kill > at_kill, "a POS card exists that giftsync has not recorded"
        assert await expire_leases(engine, first) >= 1, "the run's job was the killed worker's"

        await sims.set_faults("lightspeed", latency_ms=0, lose_answer_rate=0.0)
        await processes.start_worker(env)
        view = await wait_for_run(http, processes, run_id)

    pos = await sims.pos_cards()
    assert len(pos) == len(online), "one POS card per Shopify card, none twice"
    async with engine.connect() as connection:
        pairs = (
            await connection.execute(
                text(
                    """
                    SELECT s.external_id, p.external_id FROM card_links s
                    JOIN card_links p ON p.card_id = s.card_id AND p.system = :pos
                    WHERE s.system = 'shopify'
                    """
                ),
                {"pos": POS},
            )
        ).all()
        findings = await connection.scalar(text("SELECT count(*) FROM findings"))
    assert {shopify_id for shopify_id, _ in pairs} == set(online)
    assert {pos_id for _, pos_id in pairs} == set(pos)
    for shopify_id, pos_id in pairs:
        assert money(pos[pos_id]["money"]) == online[shopify_id], shopify_id
    per_card = await links_per_card(engine)
    assert len(per_card) == len(online) and set(per_card) == {(1, 1)}

    counts, progress = view["counts"], view["progress"]["to_pos"]
    assert progress["finished"] and progress["processed"] == progress["total"] == len(online)
    assert counts["moved"] + counts["already_linked"] + counts["skipped"] == len(online), counts
    assert counts["skipped"] == 0, view["progress"]
    assert counts["moved"] >= int(checkpoint["moved"]) > 0
    assert findings == 0
    await assert_ledger_keys_unique(engine)


# --- reconcile --------------------------------------------------------------------------------


async def card_pairs(engine: AsyncEngine) -> dict[str, str]:
    """POS id -> Shopify gid of every linked card."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                """
                SELECT p.external_id, s.external_id FROM card_links p
                JOIN card_links s ON s.card_id = p.card_id AND s.system = 'shopify'
                WHERE p.system = :pos
                """
            ),
            {"pos": POS},
        )
        return {row[0]: row[1] for row in rows}


def transactions(card: dict[str, object]) -> list[dict[str, str]]:
    found = card["transactions"]
    assert isinstance(found, list)
    return found


async def moves_done(engine: AsyncEngine, system: str | None = None) -> int:
    """omni.move jobs done, on one system's side or on both."""
    async with engine.connect() as connection:
        count = await connection.scalar(
            text(
                "SELECT count(*) FROM jobs WHERE kind = 'omni.move' AND state = 'done' "
                "AND (CAST(:system AS text) IS NULL OR payload->>'system' = :system)"
            ),
            {"system": system},
        )
    return int(count or 0)


async def test_worker_killed_mid_reconcile_repairs_every_drift_exactly_once(
    processes: Processes, engine: AsyncEngine, database_url: str
) -> None:
    sims = await processes.start_simulators()
    env = giftsync_env(database_url, sims)
    await quiet_background(engine)
    sold = await sell_cards(sims, 24)
    ids, codes = list(sold), {code for code, _ in sold.values()}

    async with admin(processes, env) as http:
        first = await processes.start_worker(env)
        linking = await start_run(http, "/internal/backfill", {"direction": "to_shopify"})
        await wait_for_run(http, processes, linking)

        async def settled() -> bool:
            return set(await job_states(engine, "%")) <= {"done"}

        await wait_until(settled, within=30, what="the linking settles", processes=processes)
        pairs = await card_pairs(engine)
        assert set(pairs) == set(ids)

        # Drift behind giftsync's back: in store on every second card, online on every third
        # (so a sixth of the cards drifted on both sides, and a third not at all). Together
        # they stay under the smallest card's 10.00: an overdraft would be a finding.
        in_store: dict[str, Decimal] = {}
        online: dict[str, Decimal] = {}
        for n, pos_id in enumerate(ids):
            if n % 2 == 0:
                in_store[pos_id] = Decimal(f"{1 + n % 4}.{(7 * n) % 100:02d}")
                await sims.spend_in_store(pos_id, str(in_store[pos_id]))
            if n % 3 == 0:
                online[pos_id] = Decimal(f"{1 + n % 3}.{(3 * n) % 100:02d}")
                await sims.spend_online(pairs[pos_id], str(online[pos_id]))
        drifted = set(in_store) | set(online)
        expected_moves = len(in_store) + len(online)  # each drift mirrored to the other side

        # Slow upstreams: the run's reads take seconds, and so do the repairs' moves.
        await sims.set_faults("shopify", latency_ms=400)
        await sims.set_faults("lightspeed", latency_ms=400)
        run_id = await start_run(http, "/internal/reconcile", {"dryRun": False})

        async def running() -> bool:
            view = await run_view(http, run_id)
            assert view["status"] in ("queued", "running"), f"ended before the kill: {view}"
            return bool(view["status"] == "running")

        await wait_until(running, within=30, what="the reconcile runs", processes=processes)
        first.kill()
        assert await stored_status(engine, run_id) == "running", "the kill must land mid-run"
        assert await expire_leases(engine, first) >= 1, "the run's job was the killed worker's"

        second = await processes.start_worker(env)

        async def repairs_landing() -> bool:
            return await moves_done(engine) >= 2

        await wait_until(
            repairs_landing, within=40, what="the repairs are landing", processes=processes
        )
        # Die again with a repair applied on Shopify whose answer was lost.
        await sims.set_faults("shopify", lose_answer_rate=1.0, lost_answer_hang_s=3)

        async def debited_unrecorded() -> bool:
            shopify = await shopify_by_code(sims, codes)
            debits = sum(
                1
                for cards in shopify.values()
                for card in cards
                for t in transactions(card)
                if t["kind"] == "debit"
            )
            return debits > len(online) + await moves_done(engine, "shopify")

        await wait_until(
            debited_unrecorded,
            within=30,
            what="a repair lands on Shopify whose answer is lost",
            processes=processes,
        )
        second.kill()
        assert await moves_done(engine) < expected_moves, "the kill must land mid-repair"
        await expire_leases(engine, second)

        await sims.set_faults("shopify", latency_ms=0, lose_answer_rate=0.0)
        await sims.set_faults("lightspeed", latency_ms=0)
        await processes.start_worker(env)
        view = await wait_for_run(http, processes, run_id)
        await wait_until(settled, within=30, what="every repair lands", processes=processes)

        shopify = await shopify_by_code(sims, codes)
        pos = await sims.pos_cards()
        for pos_id, (code, amount) in sold.items():
            want = money(amount) - in_store.get(pos_id, Decimal(0)) - online.get(pos_id, Decimal(0))
            (card,) = shopify[code]
            assert money(str(card["balance"])) == want, code
            assert money(pos[pos_id]["money"]) == want, code
            # One move per side: the spend made there, and the other side's spend mirrored.
            debits = Counter(
                -money(t["amount"]) for t in transactions(card) if t["kind"] == "debit"
            )
            assert debits == Counter(
                spend for spend in (in_store.get(pos_id), online.get(pos_id)) if spend
            ), code
            payments = await sims.pos_payments(pos_id)
            assert all(payment["completed"] for payment in payments), code
            assert Counter(money(payment["amount"]) for payment in payments) == Counter(
                spend for spend in (in_store.get(pos_id), online.get(pos_id)) if spend
            ), code

        async with engine.connect() as connection:
            moves = (
                await connection.execute(
                    text(
                        "SELECT payload->>'system', payload->>'external_id' FROM jobs "
                        "WHERE kind = 'omni.move'"
                    )
                )
            ).all()
            findings = await connection.scalar(text("SELECT count(*) FROM findings"))
        assert len(moves) == expected_moves and len(set(moves)) == expected_moves
        assert findings == 0
        assert view["counts"]["findings"] == 0 and view["counts"]["repaired"] <= len(drifted)
        await assert_ledger_keys_unique(engine)

        # Everything agrees now: a second run repairs nothing and writes nothing.
        ledger_before, jobs_before = (
            await count_rows(engine, "ledger"),
            await count_rows(engine, "jobs"),
        )
        again = await start_run(http, "/internal/reconcile", {"dryRun": False})
        second_view = await wait_for_run(http, processes, again)
        counts = second_view["counts"]
        assert counts["repaired"] == 0 and counts["findings"] == 0, counts
        assert counts["checked"] == counts["in_sync"] == len(ids), counts
        assert await count_rows(engine, "ledger") == ledger_before
        assert await count_rows(engine, "jobs") == jobs_before + 1  # the run's own job
        assert set(await job_states(engine, "omni.%")) == {"done"}
