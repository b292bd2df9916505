"""Historical backfill through the simulators: speed against the rate limits' ceiling, memory.

For each size (default 5k, 10k, 20k cards) and each direction:
- `to_pos`: N Shopify cards (half bought in orders, half made by hand) go to Lightspeed R-Series;
- `to_shopify`: N Lightspeed gift cards go to Shopify.

The simulators run in their own processes behind uvicorn (their CPU and memory are not
giftsync's), with their limits scaled up by a printed factor: the same bucket shapes (Shopify
1000 points, Lightspeed 90 units, the code lookup's own 1 request/s) with the refill rate times
the factor. The backfill runs in a fresh process per size, as the `backfill.run` job would, on
a fresh database, so its peak RSS is that size's alone.

The ceiling is what the limits allow for the work this backfill did: each simulator counts what
it charged (Shopify: actual query cost; Lightspeed: units and code lookups), and a bucket of
size B refilled at r admits c in (c - B) / r seconds at best. The slowest bucket sets the
minimal time; ceiling = N / that time. Targets: achieved >= 0.85 of the ceiling; peak RSS
< 300 MB and flat across sizes. Then the projection: the per-card costs measured here, at the
real default limits (Shopify Standard: 100 points/s; Lightspeed: 90-unit bucket, drip 1/s,
code lookup 1/s), for a 20k-card backfill, at the ceiling and at the measured efficiency;
and for `to_pos`, the Lightspeed units one new card costs (before issue 15: 10; the documented
minimum: 7) with the hours 100,000 cards take per number of licensed registers.

PostgreSQL: DATABASE_URL when set, else an embedded server under .data/bench; the database
`giftsync_bench_backfill` is recreated for every run and dropped at the end.

    python bench/backfill.py [--sizes 5000,10000,20000] [--directions to_pos,to_shopify]
        [--scale-to-pos 100] [--scale-to-shopify 5] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # type: ignore[import-untyped]  # noqa: E402
import httpx  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.db.embedded import start_embedded  # noqa: E402
from app.db.engine import asyncpg_url, create_engine  # noqa: E402
from app.db.migrate import upgrade_to_head  # noqa: E402

DATABASE = "giftsync_bench_backfill"
SHOPIFY_BUCKET = 1000
SHOPIFY_RESTORE = 100.0  # Standard plan
LIGHTSPEED_BUCKET = 90
LIGHTSPEED_DRIP = 1.0
CODE_LOOKUP_INTERVAL = 1.0  # Lightspeed's own limit on look-ups by code
PROJECTED_CARDS = 20_000
# One new Shopify card on Lightspeed before issue 15 (the old client, priced by the docs' cost
# table): a code look-up (1), the CreditAccount POST (1), a SalePayment look-up by
# remoteReference (1), the completed sale with two payments (2 + 3 + 2 x 0.5 = 6) and a re-read
# of the card (1). The documented minimum is the POST and the sale: 7.
UNITS_PER_CARD_BEFORE = 10.0
UNITS_PER_CARD_MINIMUM = 7.0
HOURS_FOR = 100_000
REGISTER_COUNTS = (1, 2, 3, 5, 10)
RATIO_TARGET = 0.85
RSS_TARGET_MB = 300.0


# --- simulators, each in its own process --------------------------------------------------


def serve_shopify(cards: int, scale: float, port: int, ready: Any) -> None:
    """Child process: the Shopify simulator with `cards` cards and its usage counted."""
    import uvicorn
    from fastapi.responses import JSONResponse

    from app.sandbox.shopify import ShopifySimulator
    from app.sandbox.shopify_resolvers import GiftCardState, LineItemState, OrderState

    class CountingShopify(ShopifySimulator):
        points = 0

        def _cost(self, requested: int, actual: int) -> dict[str, Any]:
            self.points += actual
            return super()._cost(requested, actual)

    sim = CountingShopify(bucket_size=SHOPIFY_BUCKET, restore_rate=SHOPIFY_RESTORE * scale)
    shop = sim.shop
    for n in range(cards):
        moment = shop.now()
        value = Decimal(10 + n % 90)
        order_id = None
        if n % 2 == 0:
            # Bought in an order: the export reads the order for its name and shipping name.
            order = OrderState(
                id=shop.new_id(),
                name=f"#{5000 + n}",
                email=f"shopper{n}@example.com",
                customer_id=None,
                shipping_name=f"Shopper {n}",
                currency=shop.currency,
                created_at=moment,
            )
            order.line_items.append(
                LineItemState(shop.new_id(), f"Gift card {value}", 1, value, True)
            )
            shop.orders[order.id] = order
            order_id = order.id
        card = GiftCardState(
            id=shop.new_id(),
            code=f"bench{n:011d}",
            initial_value=value,
            balance=value,
            currency=shop.currency,
            source="purchased" if order_id else "api_client",
            created_at=moment,
            updated_at=moment,
            order_id=order_id,
        )
        shop.gift_cards[card.id] = card

    async def usage() -> JSONResponse:
        return JSONResponse(
            {
                "points": sim.points,
                "throttled": sim.throttled_count,
                "requests": sim.request_count,
                "cards": len(shop.gift_cards),
                "cpu_s": time.process_time(),
            }
        )

    sim.app.add_api_route("/_bench/usage", usage, methods=["GET"])
    _serve(uvicorn, sim.app, port, ready)


def serve_lightspeed(cards: int, scale: float, port: int, ready: Any, token_pipe: Any) -> None:
    """Child process: the Lightspeed simulator with `cards` gift cards; it counts its usage."""
    import uvicorn
    from fastapi.responses import JSONResponse

    from app.sandbox.lightspeed import LightspeedSimulator
    from app.sandbox.lightspeed_merchant import Readings

    # Every limit scaled alike, the burst limiter too (its 20/90 of the bucket is per second).
    readings = Readings(burst_fraction=Readings().burst_fraction * scale)
    sim = LightspeedSimulator(
        bucket_size=LIGHTSPEED_BUCKET,
        drip_rate=LIGHTSPEED_DRIP * scale,
        code_lookup_interval_s=CODE_LOOKUP_INTERVAL / scale,
        readings=readings,
    )
    for n in range(cards):
        sim.add_gift_card(f"2600{n:08d}", Decimal(10 + n % 90))

    async def usage() -> JSONResponse:
        return JSONResponse(
            {
                "units": sim.units_charged,
                "code_lookups": sim.code_lookups,
                "rate_limited": sim.rate_limited_count,
                "rate_limited_by": dict(sim.rate_limited_by),
                "requests": sim.request_count,
                "cards": len(sim.cards),
                "cpu_s": time.process_time(),
            }
        )

    sim.app.add_api_route("/_bench/usage", usage, methods=["GET"])
    token_pipe.send(sim.issue_refresh_token())
    _serve(uvicorn, sim.app, port, ready)


def _serve(uvicorn: Any, app: Any, port: int, ready: Any) -> None:
    async def serve() -> None:
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to await)
            await asyncio.sleep(0.02)
        ready.set()
        await task

    asyncio.run(serve())


# --- the backfill, in its own process -------------------------------------------------------


def run_backfill(
    database_url: str,
    shop_port: int,
    ls_port: int,
    refresh_token: str,
    direction: str,
    scale: float,
    concurrency: int,
    results: Any,
) -> None:
    """Child process: one backfill run, as the worker's `backfill.run` job runs it."""
    results.send(
        asyncio.run(
            _run_backfill(
                database_url, shop_port, ls_port, refresh_token, direction, scale, concurrency
            )
        )
    )


async def _run_backfill(
    database_url: str,
    shop_port: int,
    ls_port: int,
    refresh_token: str,
    direction: str,
    scale: float,
    concurrency: int,
) -> dict[str, Any]:
    from app.clients.lightspeed import LightspeedClient, SaleSetup
    from app.clients.shopify import ShopifyClient
    from app.db.engine import session_factory
    from app.logging import configure_logging
    from app.sandbox.lightspeed import (
        DEFAULT_ACCOUNT_ID,
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
    )
    from app.sandbox.lightspeed_merchant import CORRECT_SET_UP
    from app.settings import BalanceSign, Settings
    from app.sync import runs
    from app.sync.backfill import Backfill
    from app.sync.omni import OmniSync
    from app.sync.pos.lightspeed import LightspeedPos
    from tests.memory_tokens import MemoryTokenStore

    configure_logging("WARNING", json=True)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        sandbox=True,
        pos_kind="retail",
        create_update_shopify_gift_cards=True,
        download_shopify_gift_cards=True,
        shopify_serial_prefix="7000",
        admin_token=SecretStr(secrets.token_hex(16)),
        card_hash_key=SecretStr(secrets.token_hex(32)),
        pin_encryption_key=SecretStr(secrets.token_hex(32)),
        shopify_api_secret=SecretStr(secrets.token_hex(16)),
        log_level="WARNING",
    )
    engine = create_engine(database_url, pool_size=concurrency + 4)
    sessions = session_factory(engine)

    class ScaledLightspeedClient(LightspeedClient):
        # The client keeps its 5% margin over the look-up limit, scaled like the limit.
        CODE_LOOKUP_INTERVAL_S = LightspeedClient.CODE_LOOKUP_INTERVAL_S / scale

    shopify = ShopifyClient(f"http://127.0.0.1:{shop_port}", "shpat_sandbox_token", "2025-01")
    lightspeed = ScaledLightspeedClient(
        DEFAULT_ACCOUNT_ID,
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
        MemoryTokenStore(),
        initial_refresh_token=refresh_token,
        base_url=f"http://127.0.0.1:{ls_port}",
        token_url=f"http://127.0.0.1:{ls_port}/auth/oauth/token",
        balance_sign=BalanceSign.NEGATIVE,
        sale_setup=SaleSetup(**CORRECT_SET_UP),
    )
    omni = OmniSync(sessions, settings, shopify, LightspeedPos(lightspeed))
    backfill = Backfill(
        sessions, settings, omni, shopify, concurrency=concurrency, bulk_poll_interval=0.2
    )
    run_id = await runs.start_backfill(sessions, settings, direction)  # type: ignore[arg-type]
    baseline = _rss_mb()
    peak = baseline
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss_mb())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    cpu_started = time.process_time()
    report = await backfill.run(run_id)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    stop.set()
    await sampler
    await shopify.aclose()
    await lightspeed.aclose()
    await engine.dispose()
    return {
        "elapsed": elapsed,
        "cpu_s": cpu,
        "counts": report.counts,
        "status": report.status,
        "baseline_mb": baseline,
        "peak_mb": max(peak, _rss_mb()),
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


# --- orchestration --------------------------------------------------------------------------


@dataclass
class Result:
    direction: str
    cards: int
    scale: float
    elapsed: float
    cpu_s: float
    counts: dict[str, int]
    peak_mb: float
    baseline_mb: float
    shopify: dict[str, Any]
    lightspeed: dict[str, Any]

    def minimal_seconds(self, scale: float) -> tuple[float, str]:
        """The least time the limits (refill rates times `scale`) allow for this run's work."""
        bounds = {
            "Shopify points": max(0.0, self.shopify["points"] - SHOPIFY_BUCKET)
            / (SHOPIFY_RESTORE * scale),
            "Lightspeed units": max(0.0, self.lightspeed["units"] - LIGHTSPEED_BUCKET)
            / (LIGHTSPEED_DRIP * scale),
            "Lightspeed code look-ups": max(0, self.lightspeed["code_lookups"] - 1)
            * CODE_LOOKUP_INTERVAL
            / scale,
        }
        limit = max(bounds, key=lambda name: bounds[name])
        return bounds[limit], limit

    def projected_seconds(self, cards: int) -> tuple[float, str]:
        """This run's per-card costs, at the real default limits, for `cards` cards."""
        per_card = cards / self.cards
        bounds = {
            "Shopify points": max(0.0, self.shopify["points"] * per_card - SHOPIFY_BUCKET)
            / SHOPIFY_RESTORE,
            "Lightspeed units": max(0.0, self.lightspeed["units"] * per_card - LIGHTSPEED_BUCKET)
            / LIGHTSPEED_DRIP,
            "Lightspeed code look-ups": max(0.0, self.lightspeed["code_lookups"] * per_card - 1)
            * CODE_LOOKUP_INTERVAL,
        }
        limit = max(bounds, key=lambda name: bounds[name])
        return bounds[limit], limit


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_url() -> tuple[str, str]:
    given = os.environ.get("DATABASE_URL")
    if given:
        return asyncpg_url(given), "DATABASE_URL"
    return start_embedded(ROOT / ".data" / "bench", database="postgres"), "embedded"


async def _admin(server_url: str, statement: str) -> None:
    admin = make_url(asyncpg_url(server_url)).set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _fresh_database(server_url: str) -> str:
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    await _admin(server_url, f'CREATE DATABASE "{DATABASE}"')
    url = make_url(asyncpg_url(server_url)).set(database=DATABASE)
    database_url = url.render_as_string(hide_password=False)
    engine = create_engine(database_url, pool_size=1)
    try:
        await upgrade_to_head(engine, database_url)
    finally:
        await engine.dispose()
    return database_url


def one_run(server_url: str, direction: str, cards: int, scale: float, concurrency: int) -> Result:
    context = multiprocessing.get_context("spawn")
    database_url = asyncio.run(_fresh_database(server_url))
    shop_port, ls_port = _free_port(), _free_port()
    shop_ready, ls_ready = context.Event(), context.Event()
    token_out, token_in = context.Pipe(duplex=False)
    shop_cards = cards if direction == "to_pos" else 0
    ls_cards = cards if direction == "to_shopify" else 0
    sims = [
        context.Process(
            target=serve_shopify, args=(shop_cards, scale, shop_port, shop_ready), daemon=True
        ),
        context.Process(
            target=serve_lightspeed,
            args=(ls_cards, scale, ls_port, ls_ready, token_in),
            daemon=True,
        ),
    ]
    for process in sims:
        process.start()
    try:
        refresh_token = token_out.recv()
        if not (shop_ready.wait(120) and ls_ready.wait(120)):
            raise RuntimeError("the simulators did not start")
        results_out, results_in = context.Pipe(duplex=False)
        worker = context.Process(
            target=run_backfill,
            args=(
                database_url,
                shop_port,
                ls_port,
                refresh_token,
                direction,
                scale,
                concurrency,
                results_in,
            ),
        )
        worker.start()
        outcome = results_out.recv()
        worker.join(60)
        shopify_usage = httpx.get(f"http://127.0.0.1:{shop_port}/_bench/usage").json()
        lightspeed_usage = httpx.get(f"http://127.0.0.1:{ls_port}/_bench/usage").json()
    finally:
        for process in sims:
            process.terminate()
            process.join(10)
    return Result(
        direction=direction,
        cards=cards,
        scale=scale,
        elapsed=outcome["elapsed"],
        cpu_s=outcome["cpu_s"],
        counts=outcome["counts"],
        peak_mb=outcome["peak_mb"],
        baseline_mb=outcome["baseline_mb"],
        shopify=shopify_usage,
        lightspeed=lightspeed_usage,
    )


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def hours_per_100k(units_per_card: float, registers: int) -> float:
    """rate-limiting.md: bucket 90 and drip 1/s, +10 and +0.5/s per licensed register beyond
    the first; once the first bucketful is spent, the drip is the ceiling."""
    drip = LIGHTSPEED_DRIP + 0.5 * (registers - 1)
    bucket = LIGHTSPEED_BUCKET + 10 * (registers - 1)
    return max(0.0, HOURS_FOR * units_per_card - bucket) / drip / 3600


def report_units_per_card(after: float) -> None:
    print(f"\nLightspeed units per new card and hours per {HOURS_FOR:,} cards (Shopify -> POS):")
    print(
        f"  before issue 15 : {UNITS_PER_CARD_BEFORE:.2f} units/card (the old calls, by the cost table)"
    )
    print(
        f"  after (measured): {after:.2f} units/card (documented minimum {UNITS_PER_CARD_MINIMUM:g})"
    )
    print("  registers  drip/s   before h   after h   minimum h")
    for registers in REGISTER_COUNTS:
        drip = LIGHTSPEED_DRIP + 0.5 * (registers - 1)
        print(
            f"  {registers:>9}  {drip:>6.1f}  {hours_per_100k(UNITS_PER_CARD_BEFORE, registers):>9.1f}"
            f"  {hours_per_100k(after, registers):>8.1f}"
            f"  {hours_per_100k(UNITS_PER_CARD_MINIMUM, registers):>10.1f}"
        )


def report(result: Result) -> bool:
    minimal, limit = result.minimal_seconds(result.scale)
    achieved = result.cards / result.elapsed
    ceiling = result.cards / minimal if minimal > 0 else float("inf")
    ratio = achieved / ceiling
    shopify, lightspeed = result.shopify, result.lightspeed
    print(f"{result.direction}: {result.cards} cards, limits x{result.scale:g}")
    print(f"  counts               : {result.counts}")
    print(f"  elapsed              : {result.elapsed:.1f} s")
    print(
        f"  achieved / ceiling   : {achieved:.2f} / {ceiling:.2f} cards/s  ratio {ratio:.3f}"
        f"  (target >= {RATIO_TARGET}; binding limit: {limit})"
    )
    print(
        f"  per card             : Shopify {shopify['points'] / result.cards:.2f} points, "
        f"Lightspeed {lightspeed['units'] / result.cards:.2f} units, "
        f"{lightspeed['code_lookups'] / result.cards:.2f} code look-ups"
    )
    print(
        f"  refused by limits    : Shopify THROTTLED {shopify['throttled']}, "
        f"Lightspeed 429 {lightspeed['rate_limited']} {lightspeed['rate_limited_by'] or ''}"
    )
    print(
        f"  CPU per card         : giftsync {1000 * result.cpu_s / result.cards:.1f} ms, "
        f"Shopify sim {1000 * shopify['cpu_s'] / result.cards:.1f} ms, "
        f"Lightspeed sim {1000 * lightspeed['cpu_s'] / result.cards:.1f} ms (whole process)"
    )
    print(
        f"  peak RSS             : {result.peak_mb:.1f} MB (at start {result.baseline_mb:.1f} MB;"
        f" target < {RSS_TARGET_MB:g} MB)"
    )
    return ratio >= RATIO_TARGET and result.peak_mb < RSS_TARGET_MB


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="5000,10000,20000")
    parser.add_argument("--directions", default="to_pos,to_shopify")
    parser.add_argument(
        "--scale-to-pos", type=float, default=100.0, help="refill rate factor for to_pos runs"
    )
    parser.add_argument(
        "--scale-to-shopify", type=float, default=5.0, help="refill rate factor for to_shopify"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    directions = [d.strip() for d in args.directions.split(",")]
    server_url, source = _server_url()
    print(f"PostgreSQL: {source}; simulators: own processes over HTTP on 127.0.0.1")
    print(f"started {datetime.now(UTC):%Y-%m-%d %H:%M:%SZ}, concurrency {args.concurrency}\n")
    results: list[Result] = []
    ok = True
    try:
        for direction in directions:
            scale = args.scale_to_pos if direction == "to_pos" else args.scale_to_shopify
            for cards in sizes:
                result = one_run(server_url, direction, cards, scale, args.concurrency)
                results.append(result)
                ok = report(result) and ok
                print(flush=True)
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
    print("peak RSS by size (flat is the target):")
    for direction in directions:
        peaks = [f"{r.cards}: {r.peak_mb:.0f} MB" for r in results if r.direction == direction]
        print(f"  {direction:<10} " + ", ".join(peaks))
    print(f"\nprojected wall time of a {PROJECTED_CARDS}-card backfill at the real default limits")
    print("(Shopify Standard 100 points/s; Lightspeed bucket 90, drip 1/s, code look-up 1/s):")
    at_ceiling = at_measured = 0.0
    for direction in directions:
        largest = max((r for r in results if r.direction == direction), key=lambda r: r.cards)
        seconds, limit = largest.projected_seconds(PROJECTED_CARDS)
        minimal, _ = largest.minimal_seconds(largest.scale)
        efficiency = minimal / largest.elapsed if largest.elapsed else 1.0
        at_ceiling += seconds
        at_measured += seconds / efficiency
        print(
            f"  {direction:<10} {_duration(seconds)} at the ceiling (bound by {limit}); "
            f"{_duration(seconds / efficiency)} at the efficiency measured here ({efficiency:.2f})"
        )
    to_pos = [r for r in results if r.direction == "to_pos"]
    if to_pos:
        largest = max(to_pos, key=lambda r: r.cards)
        report_units_per_card(largest.lightspeed["units"] / largest.cards)
    if len(directions) > 1:
        # `both` runs the directions one after the other.
        print(
            f"  {'both':<10} {_duration(at_ceiling)} at the ceiling; "
            f"{_duration(at_measured)} at the efficiency measured here"
        )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
