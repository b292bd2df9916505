"""A burst of signed Shopify webhooks: acknowledgement latency and time until all are processed.

Every part runs in its own process, as in production:
- giftsync: `uvicorn app.main:app` (API and worker together, as `giftsync serve` runs them), or
  with `--worker separate` the API alone plus `giftsync worker`; both share one PostgreSQL;
- the Shopify and Vii simulators: one child process, over HTTP (their CPU is not giftsync's),
  Shopify's cost bucket sized as Shopify Plus (10,000 points, 1,000/s) unless told otherwise;
- PostgreSQL: DATABASE_URL when set, else an embedded server under .data/bench-webhooks; the
  database `giftsync_bench_webhooks` is dropped and created at the start (the service
  migrates it) and dropped at the end;
- the load generator: this process.

It sends `--count` deliveries (default 5,000) at `--rate` per second (default 500) on an
open-loop schedule: each request leaves at its planned time whether or not earlier ones were
answered, and its latency is counted from that planned time, so a slow service shows up as
latency rather than as a quietly slower send rate. Topics are mixed as a shop sends them:
`orders/paid` and `orders/cancelled` for orders giftsync does not know (each costs the worker
a Shopify order read), `order_transactions/create` and `refunds/create` for payments by other
gateways or by gift cards that are not shadow cards, and topics that are stored only
(`orders/create`, `products/update`, `customers/update`). About 2% are Shopify retries of an
earlier delivery (same webhook id), which must be acknowledged as duplicates.

Printed: acknowledgement p50 / p95 / p99 / max (target: p99 < 100 ms; Shopify's own limit is
5 s), errors, duplicates seen, and the time until the worker has processed every stored
delivery (`webhook_inbox.processed_at` set), polled every 50 ms. Nothing is asserted.

    python bench/webhooks.py [--count 5000] [--rate 500] [--worker same|separate]
        [--workers 1] [--shopify-restore-rate 1000] [--log-level WARNING] [--keep-log]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import multiprocessing
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # type: ignore[import-untyped]  # noqa: E402
import httpx  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.db.embedded import start_embedded  # noqa: E402
from app.db.engine import asyncpg_url  # noqa: E402
from app.money import format_minor  # noqa: E402

DATABASE = "giftsync_bench_webhooks"
SHOPIFY_TOKEN = "shpat_sandbox_token"  # the simulator's, not a secret
SHOPIFY_API_VERSION = "2026-07"
ACK_P99_TARGET_MS = 100.0
RETRY_SHARE = 0.02
TOPIC_WEIGHTS = {
    "orders/paid": 25,
    "orders/create": 15,
    "order_transactions/create": 20,
    "refunds/create": 10,
    "orders/cancelled": 10,
    "products/update": 10,
    "customers/update": 10,
}


@dataclass
class Delivery:
    topic: str
    body: bytes
    headers: dict[str, str]
    retry_of: int | None = None


@dataclass
class Sample:
    status: int | str
    duplicate: bool
    ack_s: float
    """From the planned send time to the answer: includes any wait in this generator."""
    service_s: float
    """From the actual send to the answer."""
    lag_s: float
    """How late the request left against its plan (generator health)."""


# ---- payloads ------------------------------------------------------------------------------


def _order(draw: random.Random, order_id: int) -> dict[str, Any]:
    lines = [(draw.randint(500, 9000), draw.randint(1, 3)) for _ in range(draw.randint(1, 4))]
    items = [
        {
            "id": order_id * 10 + n,
            "title": f"Bench item {n}",
            "quantity": quantity,
            "price": format_minor(price_minor),
            "gift_card": False,
            "sku": f"SKU-{draw.randint(1000, 9999)}",
        }
        for n, (price_minor, quantity) in enumerate(lines)
    ]
    total_minor = sum(price_minor * quantity for price_minor, quantity in lines)
    address = {
        "first_name": "Bench",
        "last_name": "Shopper",
        "address1": "1 Load Street",
        "city": "Melbourne",
        "zip": "3000",
        "country_code": "AU",
    }
    return {
        "id": order_id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
        "name": f"#B{order_id}",
        "email": f"shopper{order_id}@example.com",
        "currency": "AUD",
        "financial_status": "paid",
        "total_price": format_minor(total_minor),
        "line_items": items,
        "shipping_address": address,
        "billing_address": address,
        "created_at": "2026-11-23T10:00:00+11:00",
    }


def _transaction(draw: random.Random, order_id: int, kind: str) -> dict[str, Any]:
    by_gift_card = draw.random() < 0.4
    txn: dict[str, Any] = {
        "id": draw.randint(10**11, 10**12),
        "order_id": order_id,
        "kind": kind,
        "status": "success",
        "gateway": "gift_card" if by_gift_card else "shopify_payments",
        "amount": format_minor(draw.randint(100, 5000)),
        "currency": "AUD",
    }
    if by_gift_card:
        # A gift card giftsync never issued: the handler must find no shadow card.
        txn["receipt"] = {
            "gift_card_id": draw.randint(10**11, 10**12),
            "gift_card_last_characters": "zz99",
        }
    return txn


def payload_for(topic: str, draw: random.Random) -> dict[str, Any]:
    order_id = draw.randint(10**11, 10**12)
    if topic in ("orders/paid", "orders/create", "orders/cancelled"):
        return _order(draw, order_id)
    if topic == "order_transactions/create":
        return _transaction(draw, order_id, "sale")
    if topic == "refunds/create":
        return {
            "id": draw.randint(10**11, 10**12),
            "order_id": order_id,
            "transactions": [_transaction(draw, order_id, "refund")],
        }
    if topic == "products/update":
        return {"id": order_id, "title": "Bench product", "variants": [{"id": 1, "price": "9.95"}]}
    return {"id": order_id, "email": f"c{order_id}@example.com", "tags": "bench"}


def build_deliveries(count: int, secret: str, seed: int) -> list[Delivery]:
    draw = random.Random(seed)
    topics = list(TOPIC_WEIGHTS)
    weights = list(TOPIC_WEIGHTS.values())
    deliveries: list[Delivery] = []
    for n in range(count):
        if n > 10 and draw.random() < RETRY_SHARE:
            original = draw.randrange(n)
            while deliveries[original].retry_of is not None:
                original = draw.randrange(n)
            source = deliveries[original]
            deliveries.append(Delivery(source.topic, source.body, source.headers, original))
            continue
        topic = draw.choices(topics, weights)[0]
        body = json.dumps(payload_for(topic, draw)).encode()
        digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
            "X-Shopify-Topic": topic,
            "X-Shopify-Webhook-Id": str(uuid.UUID(int=draw.getrandbits(128))),
            "X-Shopify-Event-Id": str(uuid.UUID(int=draw.getrandbits(128))),
            "X-Shopify-Shop-Domain": "sandbox.myshopify.com",
            "X-Shopify-API-Version": "2025-01",
            "X-Shopify-Triggered-At": "2026-11-23T10:00:00.000Z",
        }
        deliveries.append(Delivery(topic, body, headers))
    return deliveries


# ---- the database and the service ----------------------------------------------------------


def _server_url() -> tuple[str, str]:
    given = os.environ.get("DATABASE_URL")
    if given:
        return asyncpg_url(given), "DATABASE_URL"
    # Its own directory, so this bench never stops a server a test run or another bench uses.
    return start_embedded(ROOT / ".data" / "bench-webhooks", database="postgres"), "embedded"


def _admin_dsn(server_url: str) -> str:
    url = make_url(asyncpg_url(server_url)).set(drivername="postgresql", database="postgres")
    return url.render_as_string(hide_password=False)


async def recreate_database(server_url: str) -> str:
    connection = await asyncpg.connect(_admin_dsn(server_url))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await connection.close()
    url = make_url(asyncpg_url(server_url)).set(database=DATABASE)
    return url.render_as_string(hide_password=False)


async def drop_database(server_url: str) -> None:
    connection = await asyncpg.connect(_admin_dsn(server_url))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await connection.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_simulators(
    ports: dict[str, int], bucket: float, restore: float, ready: Any, stop: Any, results: Any
) -> None:
    """Child process: the Shopify and Vii simulators over HTTP until `stop` is set."""
    import threading

    import uvicorn

    from app.sandbox.faults import Faults
    from app.sandbox.shopify import ShopifySimulator
    from app.sandbox.vii import ViiSimulator

    shopify = ShopifySimulator(Faults(), bucket_size=int(bucket), restore_rate=restore)
    vii = ViiSimulator(Faults())
    servers = [
        uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        for app, port in ((shopify.app, ports["shopify"]), (vii.app, ports["vii"]))
    ]

    def stop_when_told() -> None:
        stop.wait()
        for server in servers:
            server.should_exit = True

    threading.Thread(target=stop_when_told, daemon=True).start()

    async def serve() -> None:
        tasks = [asyncio.create_task(server.serve()) for server in servers]
        while not all(server.started for server in servers):  # noqa: ASYNC110 (no event)
            await asyncio.sleep(0.02)
        ready.set()
        await asyncio.gather(*tasks)

    asyncio.run(serve())
    results.put({"shopify": shopify.request_count, "throttled": shopify.throttled_count})


def service_environment(
    database_url: str, secret: str, ports: dict[str, int], log_level: str
) -> dict[str, str]:
    """What an operator would set (DESIGN 4), pointing at the simulators."""
    from app.sandbox.vii import DEMO_PASSWORD, DEMO_STORE_ID, DEMO_USERNAME

    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "SANDBOX": "false",
        "POS_KIND": "none",
        "SHOPIFY_SHOP_DOMAIN": "sandbox.myshopify.com",
        "SHOPIFY_BASE_URL": f"http://127.0.0.1:{ports['shopify']}",
        "SHOPIFY_ADMIN_TOKEN": SHOPIFY_TOKEN,
        "SHOPIFY_API_VERSION": SHOPIFY_API_VERSION,
        "SHOPIFY_API_SECRET": secret,
        "VII_BASE_URL": f"http://127.0.0.1:{ports['vii']}/",
        "VII_USERNAME": DEMO_USERNAME,
        "VII_PASSWORD": DEMO_PASSWORD,
        "VII_STORE_ID": DEMO_STORE_ID,
        "ADMIN_TOKEN": secrets.token_hex(16),
        "CARD_HASH_KEY": secrets.token_hex(32),
        "PIN_ENCRYPTION_KEY": secrets.token_hex(32),
        "LOG_LEVEL": log_level,
        "LOG_JSON": "true",
    }


async def start_service(
    env: dict[str, str], args: argparse.Namespace, log_path: Path
) -> tuple[list[subprocess.Popen[bytes]], str]:
    """The API (with the worker, or without it plus `giftsync worker`); returns its URL."""
    port = _free_port()
    api_env = dict(env)
    if args.worker != "same":
        api_env["GIFTSYNC_NO_WORKER"] = "1"
    commands = [
        (
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--no-access-log",
            ],
            api_env,
        )
    ]
    if args.worker == "separate":
        commands.append(([str(Path(sys.executable).parent / "giftsync"), "worker"], env))
    base_url = f"http://127.0.0.1:{port}"
    processes: list[subprocess.Popen[bytes]] = []
    with log_path.open("ab") as log_file:
        for command, command_env in commands:
            processes.append(
                subprocess.Popen(  # noqa: ASYNC220, S603 (starts, does not wait; argv is ours)
                    command, cwd=ROOT, env=command_env, stdout=log_file, stderr=subprocess.STDOUT
                )
            )
            # The API first and healthy (it migrates the database), then the worker.
            await _wait_healthy(base_url, processes, log_path)
    return processes, base_url


async def _wait_healthy(
    base_url: str, processes: list[subprocess.Popen[bytes]], log_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as http:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and all(p.poll() is None for p in processes):
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    for process in processes:
        stop_service(process)
    raise RuntimeError(f"giftsync did not start; see {log_path}")


def stop_service(service: subprocess.Popen[bytes]) -> None:
    if service.poll() is None:
        service.send_signal(signal.SIGINT)
        try:
            service.wait(20)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait(5)


# ---- the burst -----------------------------------------------------------------------------


class Connection:
    """One kept-alive HTTP/1.1 connection, written by hand: httpx costs the load generator
    about a millisecond of CPU per request, which on a small machine is taken from the
    service being measured."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        await self.writer.drain()
        status_and_headers = await self.reader.readuntil(b"\r\n\r\n")
        lines = status_and_headers.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        answer = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, answer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None


async def sender(
    connection: Connection,
    queue: asyncio.Queue[tuple[float, Delivery] | None],
    samples: list[Sample],
) -> None:
    """Takes the next delivery, waits for its planned time, sends it, records the answer."""
    while (item := await queue.get()) is not None:
        planned, delivery = item
        delay = planned - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        started = time.perf_counter()
        try:
            status, answer = await connection.post(
                "/webhooks/shopify", delivery.body, delivery.headers
            )
            result: int | str = status
            duplicate = status == 200 and bool(json.loads(answer).get("duplicate"))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            result, duplicate = f"exc:{type(exc).__name__}", False
            await connection.close()
        done = time.perf_counter()
        samples.append(Sample(result, duplicate, done - planned, done - started, started - planned))
    await connection.close()


async def burst(
    base_url: str, deliveries: list[Delivery], rate: float, connections: int
) -> tuple[list[Sample], float, float]:
    """Returns the samples, and the perf_counter times of the first send and the last answer.

    `connections` senders share one queue in planned order. A delivery whose time has come
    while every connection is busy waits, and that wait counts in its latency.
    """
    url = httpx.URL(base_url)
    host, port = url.host, url.port or 80
    samples: list[Sample] = []
    warm = [Connection(host, port) for _ in range(connections)]
    # Warm-up: open every connection and pay the first requests, not counted.
    for connection in warm:
        await connection.post("/webhooks/shopify", b"{}", {"Content-Type": "application/json"})
    queue: asyncio.Queue[tuple[float, Delivery] | None] = asyncio.Queue()
    start = time.perf_counter() + 0.2
    for n, delivery in enumerate(deliveries):
        queue.put_nowait((start + n / rate, delivery))
    for _ in warm:
        queue.put_nowait(None)
    await asyncio.gather(*(sender(connection, queue, samples) for connection in warm))
    return samples, start, time.perf_counter()


async def wait_until_processed(
    database_url: str, expected: int, started: float, timeout_s: float
) -> tuple[float | None, dict[str, int], int]:
    """Seconds from the first send until every stored delivery is processed (None: timed out)."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        deadline = time.perf_counter() + timeout_s
        while True:
            stored, pending = await connection.fetchrow(
                "SELECT count(*), count(*) FILTER (WHERE processed_at IS NULL) FROM webhook_inbox"
            )
            if stored >= expected and pending == 0:
                elapsed: float | None = time.perf_counter() - started
                break
            if time.perf_counter() > deadline:
                elapsed = None
                break
            await asyncio.sleep(0.05)
        rows = await connection.fetch(
            "SELECT state, count(*) AS n FROM jobs WHERE kind = 'webhook.process' GROUP BY state"
        )
        return elapsed, {row["state"]: row["n"] for row in rows}, int(stored)
    finally:
        await connection.close()


# ---- report --------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation), of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def _ms(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"{percentile(ms, 50):7.2f} / {percentile(ms, 95):7.2f} / {percentile(ms, 99):7.2f} / "
        f"{max(ms):7.2f} ms"
    )


def report(
    args: argparse.Namespace,
    deliveries: list[Delivery],
    samples: list[Sample],
    send_window: tuple[float, float],
    processed: tuple[float | None, dict[str, int], int],
    source: str,
    sim_counts: dict[str, int],
    machine: Machine,
) -> None:
    start, last_answer = send_window
    elapsed, job_states, stored = processed
    statuses = Counter(str(s.status) for s in samples)
    errors = {k: v for k, v in statuses.items() if k != "200"}
    retries = sum(1 for d in deliveries if d.retry_of is not None)
    duplicates = sum(1 for s in samples if s.duplicate)
    ack = [s.ack_s for s in samples]
    p99_ms = percentile(ack, 99) * 1000
    verdict = "meets" if p99_ms < ACK_P99_TARGET_MS else "MISSES"
    topics = Counter(d.topic for d in deliveries if d.retry_of is None)
    send_span = last_answer - start
    rows = [
        ("deliveries", f"{len(deliveries)} at {args.rate:g}/s ({retries} are Shopify retries)"),
        ("topics", ", ".join(f"{t} {n}" for t, n in topics.most_common())),
        ("errors by status", ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "none"),
        ("acknowledged duplicate", f"{duplicates} (expected {retries})"),
        ("ack p50/p95/p99/max", f"{_ms(ack)}  (target p99 < {ACK_P99_TARGET_MS:g} ms; {verdict})"),
        ("service p50/p95/p99/max", _ms([s.service_s for s in samples])),
        (
            "send lag p99 / max",
            f"{percentile([s.lag_s for s in samples], 99) * 1000:.2f} / {max(s.lag_s for s in samples) * 1000:.2f} ms",
        ),
        ("burst", f"first send to last answer {send_span:.2f} s"),
        (
            "stored deliveries",
            f"{stored} ({sum(1 for x in samples if x.status == 200 and not x.duplicate)} "
            f"acknowledged as new; {len(deliveries) - retries} distinct sent)",
        ),
    ]
    if elapsed is None:
        rows.append(("all processed", f"NOT within {args.process_timeout:g} s"))
    else:
        after = elapsed - send_span
        rows.append(
            (
                "all processed",
                f"{elapsed:.2f} s after the first send, {max(after, 0.0):.2f} s after the last "
                f"answer ({stored / elapsed:.0f} deliveries/s end to end)",
            )
        )
    rows.append(
        ("process jobs by state", ", ".join(f"{k} {v}" for k, v in sorted(job_states.items())))
    )
    rows.append(
        (
            "Shopify requests",
            f"{sim_counts.get('shopify', '?')} (THROTTLED {sim_counts.get('throttled', '?')}; "
            f"bucket {args.shopify_bucket:g}, restore {args.shopify_restore_rate:g}/s)",
        )
    )
    if machine.service_cpu_s is not None:
        rows.append(
            (
                "giftsync CPU",
                f"{machine.service_cpu_s:.1f} s for the run, "
                f"{machine.service_cpu_s / max(stored, 1) * 1000:.2f} ms per stored delivery "
                "(API + worker)",
            )
        )
    rows.append(
        (
            "machine",
            f"{os.cpu_count()} cores; load average {machine.load_before:.1f} before, "
            f"{machine.load_after:.1f} after (other processes count too)",
        )
    )
    width = max(len(name) for name, _ in rows)
    worker = "API + worker in each" if args.worker == "same" else "API only, + giftsync worker"
    print()
    print("POST /webhooks/shopify: a burst of signed deliveries")
    print(f"  service : uvicorn app.main:app, {args.workers} process(es), {worker}")
    print("  upstream: Shopify and Vii simulators in their own process, over HTTP")
    print(f"  database: PostgreSQL ({source})")
    print(f"  sender  : {args.connections} kept-alive HTTP/1.1 connections, open loop")
    print()
    for name, value in rows:
        print(f"  {name:<{width}} : {value}")
    print()
    print("  ack = from the planned send time to the answer (open loop), so waiting for a free")
    print("  connection counts against the service; service = from the actual send.")
    print("  The load generator, the service, the simulators and PostgreSQL share this machine.")


@dataclass
class Machine:
    load_before: float
    load_after: float = 0.0
    service_cpu_s: float | None = None


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU of these processes and their children so far (Linux /proc)."""
    total = 0.0
    try:
        tick = os.sysconf("SC_CLK_TCK")
        for pid in pids:
            for task in [pid, *_children(pid)]:
                fields = Path(f"/proc/{task}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError, IndexError):
        return None
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in path.read_text().split():
            found.append(int(child))
            found.extend(_children(int(child)))
    return found


async def start_simulators(
    args: argparse.Namespace,
) -> tuple[dict[str, int], Any, Any, Any]:
    context = multiprocessing.get_context("spawn")
    ports = {"shopify": _free_port(), "vii": _free_port()}
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    process = context.Process(
        target=serve_simulators,
        args=(ports, args.shopify_bucket, args.shopify_restore_rate, ready, stop, results),
        daemon=True,
    )
    process.start()
    if not await asyncio.to_thread(ready.wait, 60):
        process.terminate()
        raise RuntimeError("the simulators did not start")
    return ports, process, stop, results


def stop_simulators(process: Any, stop: Any, results: Any) -> dict[str, int]:
    stop.set()
    try:
        counts: dict[str, int] = results.get(timeout=20)
    except Exception:
        counts = {}
    process.join(10)
    if process.is_alive():
        process.terminate()
        process.join(5)
    return counts


async def run(args: argparse.Namespace) -> None:
    server_url, source = _server_url()
    database_url = await recreate_database(server_url)
    secret = secrets.token_hex(16)
    deliveries = build_deliveries(args.count, secret, args.seed)
    sim_counts: dict[str, int] = {}
    try:
        ports, sim_process, sim_stop, sim_results = await start_simulators(args)
        try:
            with tempfile.TemporaryDirectory(prefix="giftsync-bench-webhooks-") as scratch:
                log_path = Path(scratch) / "service.log"
                env = service_environment(database_url, secret, ports, args.log_level)
                processes, base_url = await start_service(env, args, log_path)
                machine = Machine(load_before=os.getloadavg()[0])
                cpu_before = cpu_seconds([p.pid for p in processes])
                try:
                    samples, start, last_answer = await burst(
                        base_url, deliveries, args.rate, args.connections
                    )
                    # What the service stored is what it acknowledged as new.
                    stored_new = sum(1 for s in samples if s.status == 200 and not s.duplicate)
                    processed = await wait_until_processed(
                        database_url, stored_new, start, args.process_timeout
                    )
                    machine.load_after = os.getloadavg()[0]
                    cpu_after = cpu_seconds([p.pid for p in processes])
                    if cpu_before is not None and cpu_after is not None:
                        machine.service_cpu_s = cpu_after - cpu_before
                finally:
                    for process in processes:
                        stop_service(process)
                    if args.keep_log:
                        kept = ROOT / ".data" / "bench-webhooks" / "service.log"
                        kept.write_bytes(log_path.read_bytes())
                        print(f"service log kept at {kept}")
        finally:
            sim_counts = stop_simulators(sim_process, sim_stop, sim_results)
        report(
            args, deliveries, samples, (start, last_answer), processed, source, sim_counts, machine
        )
    finally:
        await drop_database(server_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=500.0, help="deliveries per second")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--worker",
        choices=("same", "separate", "none"),
        default="same",
        help="run the job worker in the API process (giftsync serve) or as giftsync worker",
    )
    parser.add_argument("--shopify-bucket", type=float, default=10_000.0)
    parser.add_argument(
        "--shopify-restore-rate", type=float, default=1000.0, help="points/s (Plus: 1000)"
    )
    parser.add_argument(
        "--connections", type=int, default=64, help="kept-alive connections sending in parallel"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--process-timeout", type=float, default=300.0)
    parser.add_argument("--keep-log", action="store_true", help="copy the service log to .data")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
