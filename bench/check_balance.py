"""Latency and throughput of `POST /check-balance` under concurrent shoppers (DESIGN 1.B).

Fifty shoppers (by default) each hold their own Vii card and checkout token: the first
request applies the card with a 100.00 cart, the rest move the cart between 20.00 and 100.00,
so every later request re-sizes the Shopify card within the Vii hold. The simulators run in
process at 0 ms added latency; a timing transport around each upstream client charges the time
spent waiting on Vii and Shopify to the request that made the call, so giftsync's own share is
total minus upstream wait. Target: own share p99 <= 15 ms. Nothing is asserted: it prints.

PostgreSQL: DATABASE_URL when set, else an embedded server under .data/bench; the database
`giftsync_bench` is dropped, created and migrated at the start and dropped at the end.

By default the simulators run in a child process behind uvicorn, because the Shopify
simulator's GraphQL parsing costs several ms of CPU per call and, sharing giftsync's loop,
would be charged to giftsync as queueing (`--sims inproc` shows that). `--http` puts giftsync
itself behind uvicorn on a free port (still this process and loop). `--think-ms` spaces each
shopper's requests; at the default 0 they go back to back, a closed-loop stress in which
latency is mostly queueing.

    python bench/check_balance.py [--shoppers 50] [--requests-per-shopper 10] [--http]
        [--sims process|inproc] [--think-ms 0] [--pool-size 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import random
import secrets
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # type: ignore[import-untyped]  # noqa: E402
import httpx  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.clients.shopify import ShopifyClient  # noqa: E402
from app.clients.vii import ViiClient  # noqa: E402
from app.db.embedded import start_embedded  # noqa: E402
from app.db.engine import asyncpg_url, create_engine, session_factory  # noqa: E402
from app.db.migrate import upgrade_to_head  # noqa: E402
from app.logging import configure_logging  # noqa: E402
from app.main import create_app  # noqa: E402
from app.runtime import Runtime, install_features  # noqa: E402
from app.sandbox.faults import Faults  # noqa: E402
from app.sandbox.shopify import ShopifySimulator  # noqa: E402
from app.sandbox.vii import DEMO_PASSWORD, DEMO_STORE_ID, DEMO_USERNAME, ViiSimulator  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench._timing import (  # noqa: E402
    APP_HEADER,
    UPSTREAM_HEADER,
    TimedTransport,
    UpstreamTimingMiddleware,
)

DATABASE = "giftsync_bench"
PIN = "2468"
CARD_BALANCE = Decimal("100000.00")
FIRST_CART_CENTS = 10_000  # the hold every later cart moves within
SMALLEST_CART_CENTS = 2_000
OWN_P99_TARGET_MS = 15.0
# Far above any real plan, so Shopify's cost throttle never paces the run: this bench measures
# giftsync, not the rate limit (bench/throttle.py does that).
SHOPIFY_BUCKET = 10_000_000


@dataclass
class Sample:
    status: int | str
    first_apply: bool
    total_s: float
    upstream_s: float
    app_s: float


@dataclass
class Bench:
    runtime: Runtime
    app: Any
    vii: ViiSimulator | None  # None when the simulators run in their own process
    shopify: ShopifySimulator | None
    closers: list[Any] = field(default_factory=list)


def make_simulators(shoppers: int) -> tuple[ViiSimulator, ShopifySimulator]:
    vii_sim = ViiSimulator(Faults())
    shop_sim = ShopifySimulator(
        Faults(), bucket_size=SHOPIFY_BUCKET, restore_rate=float(SHOPIFY_BUCKET)
    )
    for shopper in range(-1, shoppers):  # -1: the warm-up shopper
        vii_sim.add_card(card_number(shopper), PIN, CARD_BALANCE)
    return vii_sim, shop_sim


def serve_simulators(shoppers: int, vii_port: int, shop_port: int, ready: Any) -> None:
    """Child process: both simulators over real HTTP, so their CPU is off giftsync's loop."""
    import uvicorn

    vii_sim, shop_sim = make_simulators(shoppers)

    async def serve() -> None:
        servers = [
            uvicorn.Server(
                uvicorn.Config(
                    app, host="127.0.0.1", port=port, log_level="warning", access_log=False
                )
            )
            for app, port in ((vii_sim.app, vii_port), (shop_sim.app, shop_port))
        ]
        tasks = [asyncio.create_task(server.serve()) for server in servers]
        while not all(server.started for server in servers):  # noqa: ASYNC110 (no event to await)
            await asyncio.sleep(0.02)
        ready.set()
        await asyncio.gather(*tasks)

    asyncio.run(serve())


def _settings() -> Settings:
    values: dict[str, Any] = {
        "sandbox": True,
        "admin_token": SecretStr(secrets.token_hex(16)),
        "card_hash_key": SecretStr(secrets.token_hex(32)),
        "pin_encryption_key": SecretStr(secrets.token_hex(32)),
        "shopify_api_secret": SecretStr(secrets.token_hex(16)),
        "log_level": "WARNING",
    }
    return Settings(_env_file=None, **values)


async def _recreate_database(server_url: str) -> str:
    url = make_url(asyncpg_url(server_url))
    admin = url.set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await connection.close()
    return url.set(database=DATABASE).render_as_string(hide_password=False)


async def _drop_database(server_url: str) -> None:
    admin = make_url(asyncpg_url(server_url)).set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await connection.close()


def _server_url() -> tuple[str, str]:
    given = os.environ.get("DATABASE_URL")
    if given:
        return asyncpg_url(given), "DATABASE_URL"
    # Its own directory, so the bench never stops a server a test run is using.
    return start_embedded(ROOT / ".data" / "bench", database="postgres"), "embedded"


def card_number(shopper: int) -> str:
    return f"62800077{shopper % 100_000_000:08d}"


async def build(
    database_url: str, shoppers: int, pool_size: int, sim_ports: tuple[int, int] | None
) -> Bench:
    settings = _settings()
    engine = create_engine(database_url, pool_size=pool_size)
    await upgrade_to_head(engine, database_url)
    runtime = Runtime(
        settings=settings,
        database_url=database_url,
        engine=engine,
        sessions=session_factory(engine),
    )
    vii_sim: ViiSimulator | None = None
    shop_sim: ShopifySimulator | None = None
    if sim_ports is None:
        vii_sim, shop_sim = make_simulators(shoppers)
        vii_url, shop_url = "http://vii.sim/", "http://shop.sim"
        vii_inner: httpx.AsyncBaseTransport = httpx.ASGITransport(app=vii_sim.app)
        shop_inner: httpx.AsyncBaseTransport = httpx.ASGITransport(app=shop_sim.app)
    else:
        vii_url = f"http://127.0.0.1:{sim_ports[0]}/"
        shop_url = f"http://127.0.0.1:{sim_ports[1]}"
        vii_inner = httpx.AsyncHTTPTransport()
        shop_inner = httpx.AsyncHTTPTransport()
    vii = ViiClient(
        vii_url,
        DEMO_USERNAME,
        DEMO_PASSWORD,
        DEMO_STORE_ID,
        timeout=10.0,
        backoff=0.0,
        transport=TimedTransport(vii_inner),
    )
    shop = ShopifyClient(
        shop_url,
        "shpat_sandbox_token",
        "2025-01",
        timeout=10.0,
        transport=TimedTransport(shop_inner),
    )
    from app.sync.shadow_cards import ShadowCardService

    runtime.shadow_cards = ShadowCardService(runtime.sessions, settings, vii, shop)
    install_features(runtime)
    app = UpstreamTimingMiddleware(create_app(runtime, run_worker=False))
    return Bench(runtime, app, vii_sim, shop_sim, closers=[vii, shop])


def _carts(shopper: int, count: int, seed: int) -> list[Decimal]:
    """First the full hold, then a different cart each time, within the hold."""
    draw = random.Random(seed * 1_000_003 + shopper)
    cents = [FIRST_CART_CENTS]
    while len(cents) < count:
        nxt = draw.randint(SMALLEST_CART_CENTS, FIRST_CART_CENTS)
        if nxt != cents[-1]:
            cents.append(nxt)
    return [Decimal(c).scaleb(-2) for c in cents]


async def shopper_run(
    http: httpx.AsyncClient, shopper: int, count: int, run_id: str, seed: int, think_ms: float = 0
) -> list[Sample]:
    samples: list[Sample] = []
    pause = random.Random(seed * 7 + shopper)
    token = f"bench-{run_id}-{shopper}"
    for cart in _carts(shopper, count, seed):
        body = {
            "viiCardNumber": card_number(shopper),
            "viiCardPin": PIN,
            "cartTotal": f"{cart:.2f}",
            "checkoutToken": token,
        }
        if think_ms > 0:
            # Jittered, before the first request too, so shoppers arrive spread out and never
            # fall into lockstep.
            await asyncio.sleep(pause.uniform(0, 2 * think_ms) / 1000)
        started = time.perf_counter()
        try:
            response = await http.post("/check-balance", json=body)
        except httpx.HTTPError as exc:
            elapsed = time.perf_counter() - started
            samples.append(Sample(f"exc:{type(exc).__name__}", not samples, elapsed, 0, 0))
            continue
        total = time.perf_counter() - started
        upstream = int(response.headers.get(UPSTREAM_HEADER, "0")) / 1e6
        in_app = int(response.headers.get(APP_HEADER, "0")) / 1e6
        samples.append(Sample(response.status_code, not samples, total, upstream, in_app))
    return samples


def _client_for(bench: Bench, shopper: int, base_url: str | None) -> httpx.AsyncClient:
    if base_url is not None:
        return httpx.AsyncClient(base_url=base_url, timeout=30.0)
    # A distinct peer address per shopper, as real browsers would have.
    address = f"10.{(shopper // 250) % 250}.{shopper % 250}.1"
    transport = httpx.ASGITransport(app=bench.app, client=(address, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://giftsync.bench")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation), of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def report(samples: list[Sample], elapsed: float, mode: str, bench: Bench, args: Any) -> None:
    statuses = Counter(str(s.status) for s in samples)
    errors = {k: v for k, v in statuses.items() if k != "200"}
    ms = 1000.0
    total = [s.total_s * ms for s in samples]
    upstream = [s.upstream_s * ms for s in samples]
    own = [max(0.0, (s.total_s - s.upstream_s) * ms) for s in samples]
    in_app_own = [max(0.0, (s.app_s - s.upstream_s) * ms) for s in samples]
    own_p99 = percentile(own, 99)
    verdict = "meets" if own_p99 <= OWN_P99_TARGET_MS else "MISSES"
    print()
    print("POST /check-balance under concurrent shoppers")
    print(f"  mode                  : {mode}")
    print(f"  shoppers x requests   : {args.shoppers} x {args.requests_per_shopper}")
    print(f"  think time            : {args.think_ms:g} ms mean between a shopper's requests")
    print(f"  db pool               : pool_size {args.pool_size} (+{args.pool_size} overflow)")
    print("  upstreams             : Vii + Shopify simulators, 0 ms added latency")
    print()
    rows = [
        ("requests", f"{len(samples)}"),
        ("errors by status", ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "none"),
        ("throughput", f"{len(samples) / elapsed:.1f} req/s  ({elapsed:.2f} s wall)"),
        ("total p50 / p95 / p99", _ms3(total)),
        ("upstream p50 / p99", _ms2(upstream)),
        (
            "own p50 / p99",
            f"{_ms2(own)}   (target: own p99 <= {OWN_P99_TARGET_MS:g} ms; {verdict})",
        ),
        ("own in app p50 / p99", f"{_ms2(in_app_own)}   (ASGI entry to response start)"),
        ("own, first apply", _ms2([o for o, s in zip(own, samples, strict=True) if s.first_apply])),
        ("own, re-size", _ms2([o for o, s in zip(own, samples, strict=True) if not s.first_apply])),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}} : {value}")
    print()
    if bench.vii is not None and bench.shopify is not None:
        print(
            f"  Vii requests {bench.vii.request_count}, Shopify requests "
            f"{bench.shopify.request_count}, Shopify THROTTLED {bench.shopify.throttled_count}"
        )
    print("  Notes: own = client-seen total minus time inside the upstream transports; own in")
    print("  app = the same measured inside the ASGI app (no client/HTTP stack). The load")
    print("  generator and giftsync share one event loop, so under load every figure includes")
    print("  waiting for that loop (and for the DB pool): with shoppers sending back to back,")
    print("  latency is mostly queueing (about shoppers / throughput). Own share also counts")
    print("  PostgreSQL time; upstream wait counts the simulators' CPU and, in-process, the loop.")


def _ms2(values: list[float]) -> str:
    return f"{percentile(values, 50):7.2f} / {percentile(values, 99):7.2f} ms"


def _ms3(values: list[float]) -> str:
    return (
        f"{percentile(values, 50):7.2f} / {percentile(values, 95):7.2f} / "
        f"{percentile(values, 99):7.2f} ms"
    )


async def run(args: argparse.Namespace) -> None:
    configure_logging("WARNING", json=True)
    server_url, source = _server_url()
    database_url = await _recreate_database(server_url)
    sim_ports: tuple[int, int] | None = None
    sim_process: Any = None
    if args.sims == "process":
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        sim_ports = (_free_port(), _free_port())
        sim_process = context.Process(
            target=serve_simulators, args=(args.shoppers, *sim_ports, ready), daemon=True
        )
        sim_process.start()
        if not await asyncio.to_thread(ready.wait, 60):
            raise RuntimeError("the simulators did not start")
    bench = await build(database_url, args.shoppers, args.pool_size, sim_ports)
    server: Any = None
    server_task: asyncio.Task[Any] | None = None
    base_url: str | None = None
    if args.http:
        import uvicorn

        port = _free_port()
        config = uvicorn.Config(
            bench.app, host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        server_task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to await)
            await asyncio.sleep(0.02)
        base_url = f"http://127.0.0.1:{port}"
        mode = f"HTTP via uvicorn on 127.0.0.1:{port} (same event loop as the load generator)"
    else:
        mode = "in-process httpx.ASGITransport (shares the event loop with the load generator)"
    mode += f"; PostgreSQL: {source}"
    if sim_process is not None:
        mode += "\n  simulators            : own process, over HTTP on 127.0.0.1 (their CPU is off"
        mode += " giftsync's loop)"
    else:
        mode += "\n  simulators            : in process, same event loop (their CPU counts as wait)"
    run_id = secrets.token_hex(4)
    try:
        # Warm-up: first connections, Vii login, imports; not counted.
        async with _client_for(bench, -1, base_url) as warm:
            await shopper_run(warm, -1, 3, run_id, args.seed)
        clients = [_client_for(bench, n, base_url) for n in range(args.shoppers)]
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                shopper_run(
                    clients[n], n, args.requests_per_shopper, run_id, args.seed, args.think_ms
                )
                for n in range(args.shoppers)
            )
        )
        elapsed = time.perf_counter() - started
        for client in clients:
            await client.aclose()
        samples = [sample for per_shopper in results for sample in per_shopper]
        report(samples, elapsed, mode, bench, args)
    finally:
        if server is not None and server_task is not None:
            server.should_exit = True
            await server_task
        for closer in bench.closers:
            await closer.aclose()
        await bench.runtime.engine.dispose()
        await _drop_database(server_url)
        if sim_process is not None:
            sim_process.terminate()
            sim_process.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shoppers", type=int, default=50)
    parser.add_argument("--requests-per-shopper", type=int, default=10)
    parser.add_argument("--http", action="store_true", help="drive uvicorn over real HTTP")
    parser.add_argument("--pool-size", type=int, default=10, help="as the service's default")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="mean pause between one shopper's requests (default 0: back to back)",
    )
    parser.add_argument(
        "--sims",
        choices=("process", "inproc"),
        default="process",
        help="simulators in their own process over HTTP (default) or in giftsync's event loop",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
