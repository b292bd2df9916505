"""Soak: checkout traffic for minutes with 5% upstream errors; error rate, latency, memory trend.

What runs, and where:
- giftsync: one process, `uvicorn app.main:app`, the production wiring (settings from the
  environment, the real Vii and Shopify clients over HTTP, the worker in the same process, as
  `giftsync serve` runs it), its log in .data/soak/service.log;
- the Vii and Shopify simulators: one process each, over real HTTP, each answering a share of
  requests (`--error-rate`, default 5%) with a 503 before applying anything (their `Faults`);
  beside the simulated API each serves two bench-only routes (outside the faults), so the
  bench can act as Shopify's checkout (make the order a shopper pays with the shadow card) and
  read the simulators' state at the end;
- PostgreSQL: DATABASE_URL when set, else an embedded server under .data/soak; the database
  `giftsync_soak` is dropped and created at the start and dropped at the end;
- the load generator: this process, `--shoppers` concurrent shoppers.

Each shopper runs checkouts back to back, pausing `--think-ms` (mean) before each request: apply
its Vii card to a cart, re-size twice within the hold, then either release the card (30%) or pay
with it: the bench makes the Shopify order and posts the signed `orders/paid` and
`order_transactions/create` webhooks, and the worker captures from the Vii hold.

Every `--sample-s` (30 s) it samples the service's resident memory (VmRSS) and prints a line. At
the end it prints answers by status per request kind, p50/p99 latency, the memory samples with a
least-squares slope (the target is no growth trend), then lets the queue drain and checks the
money: every open Vii hold belongs to a live shadow card and every live Shopify card to its hold,
and each Vii balance is its start minus what was captured. Nothing is asserted; it prints.

    python bench/soak.py [--minutes 10] [--shoppers 20] [--think-ms 300] [--error-rate 0.05]
        [--sample-s 30] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import json
import math
import multiprocessing
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # type: ignore[import-untyped]  # noqa: E402
import httpx  # noqa: E402
import uvicorn  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.db.embedded import start_embedded  # noqa: E402
from app.db.engine import asyncpg_url  # noqa: E402
from app.sandbox.faults import Faults  # noqa: E402
from app.sandbox.shopify import ShopifySimulator  # noqa: E402
from app.sandbox.vii import DEMO_PASSWORD, DEMO_STORE_ID, DEMO_USERNAME, ViiSimulator  # noqa: E402

DATABASE = "giftsync_soak"
DATA_DIR = ROOT / ".data" / "soak"
PIN = "2468"
CARD_BALANCE = Decimal("1000000.00")
SHOPIFY_TOKEN = "shpat_sandbox_token"  # the simulator's, not a secret
# Far above any real plan: this measures giftsync under errors, not Shopify's rate limit.
SHOPIFY_BUCKET = 10_000_000
RELEASE_SHARE = 0.3
KINDS = ("apply", "resize", "release", "webhook")


@dataclass
class Tally:
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    checkouts: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, status: int | str, seconds: float) -> None:
        self.statuses[kind][str(status)] += 1
        self.latencies[kind].append(seconds)

    @property
    def requests(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())

    @property
    def errors(self) -> int:
        return sum(n for c in self.statuses.values() for s, n in c.items() if s != "200")


@dataclass
class Sample:
    at_s: float
    rss_mib: float
    requests: int
    errors: int
    jobs_due: int = 0
    """Jobs due and not yet taken when sampled: whether the worker keeps up under the traffic."""


# ---- the simulators, one process each ------------------------------------------------------


def card_number(shopper: int) -> str:
    # The last 4 digits are the shopper's own, so captures can be counted per card at the end.
    return f"628000991{shopper:07d}"


def vii_app(error_rate: float, seed: int, shoppers: int) -> Any:
    from fastapi import FastAPI

    vii = ViiSimulator(Faults(error_rate=error_rate, seed=seed))
    for n in range(shoppers):
        vii.add_card(card_number(n), PIN, CARD_BALANCE)
    app = FastAPI()

    @app.get("/_bench/state")
    async def state() -> dict[str, Any]:
        holds: dict[str, str] = {}
        for n in range(shoppers):
            holds.update({c: str(a) for c, a in vii.open_holds(card_number(n)).items()})
        balances = {card_number(n): str(vii.balance(card_number(n))) for n in range(shoppers)}
        return {"holds": holds, "balances": balances}

    app.mount("/", vii.app)
    return app


def shopify_app(error_rate: float, seed: int) -> Any:
    from fastapi import FastAPI

    sim = ShopifySimulator(
        Faults(error_rate=error_rate, seed=seed),
        bucket_size=SHOPIFY_BUCKET,
        restore_rate=float(SHOPIFY_BUCKET),
    )
    by_code: dict[str, int] = {}
    app = FastAPI()

    @app.post("/_bench/pay")
    async def pay(body: dict[str, str]) -> dict[str, Any]:
        """Shopify's checkout: the shopper pays the shadow card's whole balance."""
        code = body["code"].lower()
        cards = sim.shop.gift_cards
        if code not in by_code and len(cards) > len(by_code):
            by_code.update({card.code.lower(): card_id for card_id, card in cards.items()})
        card_id = by_code.get(code)
        if card_id is None:
            return {"status": "card not found"}
        card = cards[card_id]
        if not card.enabled or card.balance <= 0:
            return {"status": "card not payable"}
        order = sim.create_order([(f"gid://shopify/GiftCard/{card_id}", card.balance)])
        hooks = order["webhooks"]
        return {
            "status": "paid",
            "webhooks": [
                ["orders/paid", hooks["orders/paid"]],
                *(["order_transactions/create", p] for p in hooks["order_transactions/create"]),
            ],
        }

    @app.get("/_bench/state")
    async def state() -> dict[str, Any]:
        live = {
            f"gid://shopify/GiftCard/{card_id}": str(card.balance)
            for card_id, card in sim.shop.gift_cards.items()
            if card.enabled
        }
        return {"live": live}

    app.mount("/", sim.app)
    return app


def serve_simulator(
    kind: str, error_rate: float, seed: int, shoppers: int, port: int, ready: Any
) -> None:
    """Child process: one simulator over real HTTP, its CPU off giftsync's and the bench's."""
    app = vii_app(error_rate, seed, shoppers) if kind == "vii" else shopify_app(error_rate, seed)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to await)
            await asyncio.sleep(0.02)
        ready.set()
        await task

    asyncio.run(serve())


async def start_simulators(args: argparse.Namespace) -> tuple[dict[str, int], list[Any]]:
    context = multiprocessing.get_context("spawn")
    ports: dict[str, int] = {}
    started: list[tuple[Any, Any]] = []
    for offset, kind in enumerate(("vii", "shopify")):
        ready = context.Event()
        ports[kind] = free_port()
        process = context.Process(
            target=serve_simulator,
            args=(kind, args.error_rate, args.seed + offset, args.shoppers, ports[kind], ready),
            daemon=True,
        )
        process.start()
        started.append((process, ready))
    for _, ready in started:
        if not await asyncio.to_thread(ready.wait, 60):
            raise RuntimeError("a simulator did not start")
    return ports, [process for process, _ in started]


# ---- PostgreSQL ----------------------------------------------------------------------------


def server_url() -> tuple[str, str]:
    given = os.environ.get("DATABASE_URL")
    if given:
        return asyncpg_url(given), "DATABASE_URL"
    return start_embedded(DATA_DIR, database="postgres"), f"embedded ({DATA_DIR / 'pg'})"


async def admin_execute(url: str, statement: str) -> None:
    admin = make_url(asyncpg_url(url)).set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def database_url(url: str) -> str:
    return make_url(asyncpg_url(url)).set(database=DATABASE).render_as_string(hide_password=False)


def plain_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# ---- giftsync, under uvicorn ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_service(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # noqa: ASYNC220, S603 (our own command)
            command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as http:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/healthz")).status_code == 200:
                    return process, port
            await asyncio.sleep(0.2)
    process.kill()
    raise RuntimeError(f"giftsync did not start; see {log_path}")


async def jobs_due(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        due: int = await connection.fetchval(
            "SELECT count(*) FROM jobs WHERE state = 'queued' AND run_at <= now()"
        )
    finally:
        await connection.close()
    return due


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


# ---- shoppers ------------------------------------------------------------------------------


def signed(secret: str, topic: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return body, {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": uuid.uuid4().hex,
        "X-Shopify-Shop-Domain": "giftsync-sandbox.myshopify.com",
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
    }


async def timed(
    tally: Tally, kind: str, http: httpx.AsyncClient, path: str, **kwargs: Any
) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await http.post(path, **kwargs)
    except httpx.HTTPError as exc:
        tally.add(kind, f"exc:{type(exc).__name__}", time.perf_counter() - started)
        return None
    tally.add(kind, response.status_code, time.perf_counter() - started)
    return response


async def shopper(
    n: int,
    http: httpx.AsyncClient,
    shop: httpx.AsyncClient,
    secret: str,
    tally: Tally,
    stop: asyncio.Event,
    think_ms: float,
    seed: int,
) -> None:
    draw = random.Random(seed * 1_000_003 + n)

    async def think() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), draw.uniform(0.5, 1.5) * think_ms / 1000)

    while not stop.is_set():
        token = f"soak-{n}-{uuid.uuid4().hex[:12]}"
        hold_cents = draw.randint(2_000, 10_000)
        body: dict[str, Any] = {
            "viiCardNumber": card_number(n),
            "viiCardPin": PIN,
            "cartTotal": f"{Decimal(hold_cents).scaleb(-2):.2f}",
            "checkoutToken": token,
        }
        await think()
        applied = await timed(tally, "apply", http, "/check-balance", json=body)
        if applied is None or applied.status_code != 200:
            tally.checkouts["not applied"] += 1
            continue
        code = applied.json()["shopifyGiftCardCode"]
        for _ in range(2):
            await think()
            cart = Decimal(draw.randint(1_000, hold_cents)).scaleb(-2)
            resize = {**body, "cartTotal": f"{cart:.2f}"}
            del resize["viiCardPin"]
            await timed(tally, "resize", http, "/check-balance", json=resize)
        await think()
        if draw.random() < RELEASE_SHARE:
            release = {"checkoutToken": token, "shopifyGiftCardCode": code}
            await timed(tally, "release", http, "/check-balance/release", json=release)
            tally.checkouts["released"] += 1
            continue
        paid = (await shop.post("/_bench/pay", json={"code": code})).json()
        tally.checkouts[paid["status"]] += 1
        for topic, payload in paid.get("webhooks", []):
            content, headers = signed(secret, topic, payload)
            await timed(
                tally, "webhook", http, "/webhooks/shopify", content=content, headers=headers
            )


# ---- report --------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def print_report(tally: Tally, samples: list[Sample], elapsed_s: float, args: Any) -> None:
    print()
    print(
        f"Soak: {elapsed_s / 60:.1f} min, {args.shoppers} shoppers (think {args.think_ms:g} ms "
        f"mean), upstream error rate {args.error_rate:.0%} on Vii and Shopify"
    )
    total = tally.requests
    print(
        f"  requests: {total} ({total / elapsed_s:.1f}/s), answered non-200: {tally.errors} "
        f"({tally.errors / max(1, total):.2%})"
    )
    print(f"  checkouts: {dict(tally.checkouts)}")
    load = os.getloadavg()
    print(
        f"  machine: {os.cpu_count()} cores shared with PostgreSQL, the simulators, this load "
        f"generator and anything else running; load average now {load[0]:.1f} / {load[1]:.1f}"
    )
    print()
    print(f"  {'kind':<8} {'count':>7}  {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  answers")
    every: list[float] = []
    for kind in KINDS:
        latencies = tally.latencies.get(kind, [])
        if not latencies:
            continue
        every += latencies
        statuses = ", ".join(
            f"{status}: {count} ({count / len(latencies):.2%})"
            for status, count in sorted(tally.statuses[kind].items())
        )
        print(
            f"  {kind:<8} {len(latencies):>7}  {percentile(latencies, 50) * 1000:>8.1f} "
            f"{percentile(latencies, 99) * 1000:>8.1f} {max(latencies) * 1000:>8.1f}  {statuses}"
        )
    if every:
        print(
            f"  {'all':<8} {len(every):>7}  {percentile(every, 50) * 1000:>8.1f} "
            f"{percentile(every, 99) * 1000:>8.1f} {max(every) * 1000:>8.1f}"
        )
    print()
    print("  memory (giftsync VmRSS):")
    for sample in samples:
        print(
            f"    t={sample.at_s:6.0f} s  {sample.rss_mib:7.1f} MiB  requests {sample.requests}"
            f"  jobs due {sample.jobs_due}"
        )
    # The first sample is taken after a warm-up; the fit uses every sample from there on.
    if len(samples) >= 3:
        xs = [s.at_s / 60 for s in samples]
        ys = [s.rss_mib for s in samples]
        fit = statistics.linear_regression(xs, ys)
        spread = max(ys) - min(ys)
        print(
            f"  trend: {fit.slope:+.2f} MiB/min over {xs[-1] - xs[0]:.1f} min "
            f"(intercept {fit.intercept:.1f} MiB; samples span {spread:.1f} MiB; "
            f"r = {statistics.correlation(xs, ys) if spread else 0.0:+.2f})"
        )
    else:
        print("  trend: too few samples for a fit (run longer or lower --sample-s)")


async def drain_and_check(dsn: str, sims: dict[str, int], shoppers: int) -> None:
    """Let the worker finish (retries made due at once), then check every hold and card."""
    connection = await asyncpg.connect(dsn)
    try:
        draining_from = time.monotonic()
        deadline = draining_from + 120
        while time.monotonic() < deadline:
            # Close jobs for lost creates wait out Shopify's search grace; end it now.
            await connection.execute(
                "UPDATE jobs SET run_at = now(), payload = CASE WHEN payload ? 'search_until' "
                "THEN jsonb_set(payload, '{search_until}', '\"2000-01-01T00:00:00+00:00\"') "
                "ELSE payload END WHERE state = 'queued'"
            )
            left = await connection.fetchval(
                "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"
            )
            if not left:
                break
            await asyncio.sleep(1.0)
        print(f"  queue drained {time.monotonic() - draining_from:.1f} s after the traffic stopped")
        jobs = await connection.fetch("SELECT kind, state, count(*) AS n FROM jobs GROUP BY 1, 2")
        rows = await connection.fetch(
            "SELECT state, vii_last4, hold_code, hold_amount_minor, applied_amount_minor, "
            "captured_amount_minor, shopify_gift_card_id FROM shadow_cards"
        )
        findings = await connection.fetch("SELECT type, count(*) AS n FROM findings GROUP BY 1")
    finally:
        await connection.close()
    async with httpx.AsyncClient(timeout=60.0) as http:
        vii = (await http.get(f"http://127.0.0.1:{sims['vii']}/_bench/state")).json()
        shopify = (await http.get(f"http://127.0.0.1:{sims['shopify']}/_bench/state")).json()
    applied = [r for r in rows if r["state"] == "applied"]
    holds = {code: Decimal(amount) for code, amount in vii["holds"].items()}
    expected_holds = {r["hold_code"]: Decimal(r["hold_amount_minor"]).scaleb(-2) for r in applied}
    live = {gid: Decimal(balance) for gid, balance in shopify["live"].items()}
    expected_live = {
        r["shopify_gift_card_id"]: Decimal(r["applied_amount_minor"]).scaleb(-2) for r in applied
    }
    captured: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["state"] == "captured":
            captured[r["vii_last4"]] += r["captured_amount_minor"] or 0
    wrong_balances = [
        n
        for n in range(shoppers)
        if Decimal(vii["balances"][card_number(n)])
        != CARD_BALANCE - Decimal(captured[card_number(n)[-4:]]).scaleb(-2)
    ]
    print()
    print("  after draining the queue:")
    print(f"    shadow cards by state: {dict(Counter(r['state'] for r in rows))}")
    print(f"    jobs: {sorted((r['kind'], r['state'], r['n']) for r in jobs)}")
    print(f"    findings: {({r['type']: r['n'] for r in findings}) or 'none'}")
    orphan_holds = set(holds) - set(expected_holds)
    orphan_cards = set(live) - set(expected_live)
    print(
        f"    Vii holds open: {len(holds)} (of live shadow cards: {len(expected_holds)}; "
        f"without a live shadow card: {len(orphan_holds)}; amounts off: "
        f"{sum(1 for c in expected_holds if holds.get(c) != expected_holds[c])})"
    )
    print(
        f"    Shopify cards enabled: {len(live)} (of live shadow cards: {len(expected_live)}; "
        f"without a hold: {len(orphan_cards)}; balances off: "
        f"{sum(1 for c in expected_live if live.get(c) != expected_live[c])})"
    )
    print(
        f"    Vii balances = start - captured: {shoppers - len(wrong_balances)} of {shoppers} "
        f"cards{'' if not wrong_balances else f' (off: {wrong_balances[:10]})'}"
    )


# ---- main ----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    # A line per sample as it is taken, even when the output goes to a file.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    rng_seed = args.seed
    sims, sim_processes = await start_simulators(args)
    vii_port, shopify_port = sims["vii"], sims["shopify"]

    url, source = server_url()
    await admin_execute(url, f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    await admin_execute(url, f'CREATE DATABASE "{DATABASE}"')
    db_url = database_url(url)
    secret = secrets.token_hex(16)
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "SANDBOX": "false",
        # The bench measures the checkout, not who may call it (session tokens are tested).
        "CHECKOUT_AUTH": "open",
        "POS_KIND": "none",
        "VII_BASE_URL": f"http://127.0.0.1:{vii_port}/",
        "VII_USERNAME": DEMO_USERNAME,
        "VII_PASSWORD": DEMO_PASSWORD,
        "VII_STORE_ID": DEMO_STORE_ID,
        "SHOPIFY_SHOP_DOMAIN": "giftsync-sandbox.myshopify.com",
        "SHOPIFY_BASE_URL": f"http://127.0.0.1:{shopify_port}",
        "SHOPIFY_ADMIN_TOKEN": SHOPIFY_TOKEN,
        "SHOPIFY_API_VERSION": "2026-07",
        "SHOPIFY_API_SECRET": secret,
        "ADMIN_TOKEN": secrets.token_hex(16),
        "CARD_HASH_KEY": secrets.token_hex(32),
        "PIN_ENCRYPTION_KEY": secrets.token_hex(32),
        "LOG_LEVEL": args.log_level,
        "LOG_JSON": "true",
    }
    env.pop("GIFTSYNC_NO_WORKER", None)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    log_path = DATA_DIR / "service.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        process, port = await start_service(env, log_path)
        print(
            f"giftsync pid {process.pid} on :{port} (log {log_path}); PostgreSQL: {source}; "
            f"Vii :{vii_port} and Shopify :{shopify_port} answer {args.error_rate:.0%} with 503"
        )
        tally = Tally()
        stop = asyncio.Event()
        limits = httpx.Limits(
            max_connections=args.shoppers, max_keepalive_connections=args.shoppers
        )
        async with (
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=60.0, limits=limits
            ) as http,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{shopify_port}", timeout=60.0) as shop,
        ):
            # A short warm-up (imports, pools, first Shopify cost reading) outside the samples.
            warm = Tally()
            warm_stop = asyncio.Event()
            warmers = [
                asyncio.create_task(
                    shopper(n, http, shop, secret, warm, warm_stop, 50, rng_seed + 7)
                )
                for n in range(args.shoppers)
            ]
            await asyncio.sleep(min(15.0, args.minutes * 60 / 10))
            warm_stop.set()
            await asyncio.gather(*warmers)

            started = time.monotonic()
            samples = [Sample(0.0, rss_mib(process.pid), 0, 0)]
            print(f"  t=     0 s  {samples[0].rss_mib:7.1f} MiB (after warm-up)")
            tasks = [
                asyncio.create_task(
                    shopper(n, http, shop, secret, tally, stop, args.think_ms, rng_seed)
                )
                for n in range(args.shoppers)
            ]
            end = started + args.minutes * 60
            while (now := time.monotonic()) < end:
                await asyncio.sleep(min(args.sample_s, end - now))
                sample = Sample(
                    time.monotonic() - started,
                    rss_mib(process.pid),
                    tally.requests,
                    tally.errors,
                    await jobs_due(plain_dsn(db_url)),
                )
                samples.append(sample)
                print(
                    f"  t={sample.at_s:6.0f} s  {sample.rss_mib:7.1f} MiB  "
                    f"{sample.requests} requests, {sample.errors} non-200, "
                    f"{sample.jobs_due} jobs due"
                )
            stop.set()
            await asyncio.gather(*tasks)
            elapsed = time.monotonic() - started
        print_report(tally, samples, elapsed, args)
        await drain_and_check(plain_dsn(db_url), sims, args.shoppers)
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for sim in sim_processes:
            sim.terminate()
            sim.join(10)
        await admin_execute(url, f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--shoppers", type=int, default=20)
    parser.add_argument("--think-ms", type=float, default=300.0, help="mean pause per request")
    parser.add_argument("--error-rate", type=float, default=0.05, help="each upstream's 503 share")
    parser.add_argument("--sample-s", type=float, default=30.0, help="memory sampling period")
    parser.add_argument("--log-level", default="INFO", help="giftsync's LOG_LEVEL")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
