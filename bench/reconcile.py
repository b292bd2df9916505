"""Time and peak memory of a full reconcile of 10k, 50k and 100k linked omni cards (issue 6).

Every part runs in its own process, so each figure belongs to one party:
- the simulators (Shopify and Lightspeed R-Series, uvicorn on 127.0.0.1), seeded in memory
  with N cards sold in store and imported to Shopify (same code, giftsync's note), `--drift` of
  them spent in store behind giftsync's back (5.00 each), so the run repairs them;
- giftsync: a fresh process per size, the real `Reconciler` with the real Shopify and
  Lightspeed clients over HTTP (Shopify bulk export, Lightspeed paging), `OmniSync` queueing
  the repairs. Its peak memory is the kernel's resident-set high-water mark (`VmHWM`, the
  whole process: interpreter, libraries, connection pool), reset just before the run starts
  and printed next to the resident size at that moment, so growth with the card count shows
  as the difference;
- PostgreSQL: DATABASE_URL when set, else an embedded server under .data/bench-reconcile. The
  database `giftsync_bench_reconcile` is recreated, migrated and seeded with the links, bases
  and cards directly (COPY) for each size, and dropped at the end.

Time: `wall` is the whole run. `upstream wait` is the wall time spent inside the upstream
streams (bulk export poll and download, POS pages) minus this process's CPU time during those
same steps (parsing what arrived is giftsync's work). `own` = wall - upstream wait: giftsync's
Python plus its PostgreSQL round trips. Target: own <= 20 s at 100k cards, memory flat.

The simulator's Lightspeed listing renders every card for every page it answers (fine for
tests, hours at 100k cards): this bench answers the plain full listing from one rendering made
once, in the simulator process. That only shortens upstream time, which is reported apart.

    python bench/reconcile.py [--sizes 10000,50000,100000] [--drift 0.01] [--batch 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # type: ignore[import-untyped]  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.crypto import card_hash  # noqa: E402
from app.db.embedded import start_embedded  # noqa: E402
from app.db.engine import asyncpg_url, create_engine  # noqa: E402
from app.db.migrate import upgrade_to_head  # noqa: E402

DATABASE = "giftsync_bench_reconcile"
EMBEDDED_DIR = ROOT / ".data" / "bench-reconcile"
HASH_KEY = "9b2e47c1a05d83f6e2b9a41c7d06583fa2c19e07b4d63a58f1e02c9d7b3a64e5"
SHOPIFY_TOKEN = "shpat_sandbox_token"  # the simulator's, not a secret
FIRST_SHOPIFY_ID = 2_000_000
BALANCE = Decimal("50.00")
SPENT = Decimal("5.00")
OWN_TARGET_S = 20.0
COPY_CHUNK = 10_000


def serial(number: int) -> str:
    return f"bc{number:010d}"


def shopify_gid(number: int) -> str:
    return f"gid://shopify/GiftCard/{FIRST_SHOPIFY_ID + number}"


def lightspeed_id(number: int) -> str:
    return str(number + 1)


def drifted(number: int, drift: float) -> bool:
    every = max(round(1 / drift), 1) if drift > 0 else 0
    return every > 0 and number % every == 0


# ---- the simulators ----------------------------------------------------------------------------


def serve_simulators(cards: int, drift: float, ports: dict[str, int], conn: Any) -> None:
    """Child process: both simulators over real HTTP, seeded in memory."""
    import uvicorn

    from app.sandbox.faults import Faults
    from app.sandbox.lightspeed import LightspeedSimulator
    from app.sandbox.lightspeed_merchant import Card
    from app.sandbox.shopify import ShopifySimulator
    from app.sandbox.shopify_resolvers import GiftCardState
    from app.settings import BalanceSign

    shop_sim = ShopifySimulator(Faults(), bucket_size=10_000_000, restore_rate=10_000_000.0)
    ls_sim = LightspeedSimulator(
        bucket_size=1e9, drip_rate=1e9, balance_sign=BalanceSign.NEGATIVE, faults=Faults()
    )
    now = datetime.now(UTC)
    for number in range(cards):
        code = serial(number)
        shop_sim.shop.gift_cards[FIRST_SHOPIFY_ID + number] = GiftCardState(
            id=FIRST_SHOPIFY_ID + number,
            code=code,
            initial_value=BALANCE,
            balance=BALANCE,
            currency="AUD",
            source="api_client",
            created_at=now,
            updated_at=now,
            note=f"giftsync: lightspeed card {lightspeed_id(number)}",
        )
        ls_sim.cards[lightspeed_id(number)] = Card(
            credit_account_id=lightspeed_id(number),
            code=code,
            money=BALANCE - SPENT if drifted(number, drift) else BALANCE,
            time_stamp=now,
        )
    shop_sim.shop._next_id = FIRST_SHOPIFY_ID + cards + 1
    ls_sim.merchant._ids = itertools.count(cards + 1)
    refresh_token = ls_sim.issue_refresh_token()

    async def serve() -> None:
        servers = [
            uvicorn.Server(
                uvicorn.Config(
                    app, host="127.0.0.1", port=ports[name], log_level="warning", access_log=False
                )
            )
            for name, app in (("shopify", shop_sim.app), ("lightspeed", ls_sim.app))
        ]
        tasks = [asyncio.create_task(server.serve()) for server in servers]
        while not all(server.started for server in servers):  # noqa: ASYNC110 (no event)
            await asyncio.sleep(0.02)
        conn.send(
            {
                "refresh_token": refresh_token,
                "account_id": ls_sim.account_id,
                "client_id": ls_sim.client_id,
                "client_secret": ls_sim.client_secret,
            }
        )
        await asyncio.gather(*tasks)

    asyncio.run(serve())


# ---- the database ------------------------------------------------------------------------------


def server_url() -> tuple[str, str]:
    given = os.environ.get("DATABASE_URL")
    if given:
        return asyncpg_url(given), "DATABASE_URL"
    return start_embedded(EMBEDDED_DIR, database="postgres"), "embedded"


def _admin(url: str) -> str:
    return (
        make_url(asyncpg_url(url))
        .set(drivername="postgresql", database="postgres")
        .render_as_string(hide_password=False)
    )


async def recreate_database(server: str) -> str:
    admin = await asyncpg.connect(_admin(server))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    url = make_url(asyncpg_url(server)).set(database=DATABASE).render_as_string(False)
    engine = create_engine(url)
    try:
        await upgrade_to_head(engine, url)
    finally:
        await engine.dispose()
    return url


async def drop_database(server: str) -> None:
    admin = await asyncpg.connect(_admin(server))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()


def _chunks(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(itertools.islice(rows, COPY_CHUNK)):
        yield chunk


async def seed_links(database_url: str, cards: int) -> None:
    """What giftsync holds after importing the N cards: card, two links, agreed base 50.00."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(dsn)
    ids = [uuid.uuid4() for _ in range(cards)]
    base_minor = int(BALANCE * 100)
    try:
        tables: list[tuple[str, list[str], Iterator[tuple[Any, ...]]]] = [
            (
                "gift_cards",
                ["id", "kind", "currency"],
                ((ids[n], "omni", "AUD") for n in range(cards)),
            ),
            (
                "card_links",
                [
                    "card_id",
                    "system",
                    "external_id",
                    "code_last4",
                    "code_hash",
                    "last_seen_balance_minor",
                    "last_seen_status",
                ],
                (
                    row
                    for n in range(cards)
                    for row in (
                        (
                            ids[n],
                            system,
                            external_id,
                            serial(n)[-4:],
                            card_hash(HASH_KEY, serial(n)),
                            base_minor,
                            "enabled",
                        )
                        for system, external_id in (
                            ("shopify", shopify_gid(n)),
                            ("lightspeed", lightspeed_id(n)),
                        )
                    )
                ),
            ),
            (
                "sync_base",
                ["card_id", "balance_minor", "version"],
                ((ids[n], base_minor, 0) for n in range(cards)),
            ),
        ]
        for table, columns, rows in tables:
            for chunk in _chunks(rows):
                await connection.copy_records_to_table(table, records=chunk, columns=columns)
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


# ---- giftsync --------------------------------------------------------------------------------


class UpstreamClock:
    """Time spent waiting inside upstream streams: wall minus this process's CPU per step."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    async def timed(self, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        while True:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                item = await anext(stream)
            except StopAsyncIteration:
                self._add(wall, cpu)
                return
            self._add(wall, cpu)
            yield item

    def _add(self, wall: float, cpu: float) -> None:
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu

    @property
    def waiting(self) -> float:
        return self.wall - self.cpu


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise LookupError(field)


def reset_peak_rss() -> float:
    """Start the peak over from the current resident size; returns that size in MB.

    `ru_maxrss` survives exec, so a spawned child starts with its parent's peak (here, the
    seeding); the kernel's high-water mark can be reset instead (`clear_refs` 5).
    """
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    return _status_mb("VmHWM")


def measure(
    database_url: str, ports: dict[str, int], lightspeed: dict[str, str], batch: int, out: Any
) -> None:
    """Child process: one reconcile run, measured; sends its figures to `out`."""
    from app.clients.lightspeed import LightspeedClient, SaleSetup
    from app.clients.shopify import ShopifyClient
    from app.db.engine import session_factory
    from app.logging import configure_logging
    from app.sandbox.lightspeed_merchant import CORRECT_SET_UP
    from app.settings import BalanceSign, PosKind, Settings
    from app.sync import runs
    from app.sync.omni import OmniSync
    from app.sync.pos.lightspeed import LightspeedPos
    from app.sync.reconcile import Reconciler
    from tests.memory_tokens import MemoryTokenStore

    configure_logging("WARNING")

    async def main() -> dict[str, Any]:
        settings = Settings(
            _env_file=None,
            sandbox=True,
            card_hash_key=SecretStr(HASH_KEY),
            pos_kind=PosKind.RETAIL,
            create_update_shopify_gift_cards=True,
            download_shopify_gift_cards=True,
            currency="AUD",
        )
        engine = create_engine(database_url)
        sessions = session_factory(engine)
        clock = UpstreamClock()
        shop = ShopifyClient(
            f"http://127.0.0.1:{ports['shopify']}", SHOPIFY_TOKEN, "2025-01", timeout=600.0
        )
        ls = LightspeedClient(
            lightspeed["account_id"],
            lightspeed["client_id"],
            lightspeed["client_secret"],
            MemoryTokenStore(),
            initial_refresh_token=lightspeed["refresh_token"],
            base_url=f"http://127.0.0.1:{ports['lightspeed']}",
            token_url=f"http://127.0.0.1:{ports['lightspeed']}/auth/oauth/token",
            balance_sign=BalanceSign.NEGATIVE,
            sale_setup=SaleSetup(**CORRECT_SET_UP),
            timeout=120.0,
        )
        real_export = shop.bulk_export_gift_cards

        def timed_export(*, poll_interval: float = 1.0) -> AsyncIterator[Any]:
            return clock.timed(real_export(poll_interval=poll_interval))

        shop.bulk_export_gift_cards = timed_export  # type: ignore[method-assign]
        pos = LightspeedPos(ls)
        real_iter = pos.iter_cards

        def timed_iter() -> AsyncIterator[Any]:
            return clock.timed(real_iter())

        pos.iter_cards = timed_iter  # type: ignore[method-assign]
        omni = OmniSync(sessions, settings, shop, pos)
        reconciler = Reconciler(
            sessions, settings, omni, shop, bulk_poll_interval=0.05, batch_size=batch
        )
        run_id = await runs.start_reconcile(sessions, dry_run=False)
        phases: dict[str, float] = {}
        async with engine.connect():  # the pool's first connection, as a worker has it
            pass
        rss_before = reset_peak_rss()
        wall, cpu = time.perf_counter(), time.process_time()
        counts = await reconciler.run(run_id)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rss_peak = peak_rss_mb()
        view = await runs.get_run(sessions, run_id, findings_limit=0)
        if view is not None:
            phases = dict(view.progress.get("seconds") or {})
        async with engine.connect() as connection:
            from sqlalchemy import text

            moves = await connection.scalar(
                text("SELECT count(*) FROM jobs WHERE kind = 'omni.move'")
            )
        await shop.aclose()
        await ls.aclose()
        await engine.dispose()
        return {
            "counts": counts,
            "moves_queued": int(moves or 0),
            "wall_s": wall,
            "cpu_s": cpu,
            "upstream_wait_s": clock.waiting,
            "upstream_stream_wall_s": clock.wall,
            "own_s": wall - clock.waiting,
            "rss_before_mb": rss_before,
            "rss_peak_mb": rss_peak,
            "phase_s": phases,
        }

    if os.environ.get("BENCH_PROFILE"):
        # Where giftsync's own time goes: the 25 costliest calls by cumulative time.
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        result = profiler.runcall(asyncio.run, main())
        order = (
            os.environ["BENCH_PROFILE"]
            if os.environ["BENCH_PROFILE"] in ("tottime", "cumulative")
            else "cumulative"
        )
        pstats.Stats(profiler, stream=sys.stderr).sort_stats(order).print_stats(25)
        out.send(result)
        return
    out.send(asyncio.run(main()))


# ---- the orchestra ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_size(server: str, cards: int, drift: float, batch: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    ports = {"shopify": free_port(), "lightspeed": free_port()}
    seeded = time.perf_counter()
    ours, theirs = context.Pipe()
    sims = context.Process(target=serve_simulators, args=(cards, drift, ports, theirs), daemon=True)
    sims.start()
    try:
        database_url = asyncio.run(recreate_database(server))
        asyncio.run(seed_links(database_url, cards))
        if not ours.poll(600):
            raise RuntimeError("the simulators did not start")
        lightspeed = ours.recv()
        seed_s = time.perf_counter() - seeded
        result_in, result_out = context.Pipe()
        worker = context.Process(
            target=measure, args=(database_url, ports, lightspeed, batch, result_out)
        )
        worker.start()
        while not result_in.poll(1.0):
            if not worker.is_alive():
                raise RuntimeError(f"the reconcile process died (exit {worker.exitcode})")
        result: dict[str, Any] = result_in.recv()
        worker.join(30)
        result["seed_s"] = seed_s
        return result
    finally:
        sims.terminate()
        sims.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--drift", type=float, default=0.01, help="share of cards drifted")
    parser.add_argument("--batch", type=int, default=10_000, help="cards per reconcile batch")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    server, where = server_url()
    print(f"PostgreSQL: {where}; drift {args.drift:.2%} of cards (5.00 spent in store each)")
    print("memory: resident-set high-water mark (VmHWM) of the giftsync process, whole process")
    header = (
        f"{'cards':>8} {'wall s':>8} {'upstream s':>11} {'own s':>7} {'own CPU s':>10} "
        f"{'RSS before MB':>14} {'RSS peak MB':>12} {'repaired':>9} {'in sync':>8}"
    )
    print(header)
    results = []
    try:
        for cards in sizes:
            result = one_size(server, cards, args.drift, args.batch)
            results.append((cards, result))
            counts = result["counts"]
            print(
                f"{cards:>8} {result['wall_s']:>8.2f} {result['upstream_wait_s']:>11.2f} "
                f"{result['own_s']:>7.2f} {result['cpu_s']:>10.2f} "
                f"{result['rss_before_mb']:>14.1f} {result['rss_peak_mb']:>12.1f} "
                f"{counts.get('repaired', 0):>9} {counts.get('in_sync', 0):>8}",
                flush=True,
            )
    finally:
        asyncio.run(drop_database(server))
    for cards, result in results:
        per_100k = result["own_s"] * 100_000 / cards
        verdict = "within" if per_100k <= OWN_TARGET_S else "over"
        phases = ", ".join(f"{name} {seconds:.2f}" for name, seconds in result["phase_s"].items())
        print(
            f"{cards} cards: own {result['own_s']:.2f} s = {per_100k:.1f} s per 100k cards "
            f"({verdict} the {OWN_TARGET_S:.0f} s target); {result['moves_queued']} moves queued; "
            f"phases (wall s, upstream included): {phases}; memory +"
            f"{result['rss_peak_mb'] - result['rss_before_mb']:.1f} MB over the run"
        )


if __name__ == "__main__":
    main()
