"""Latency and throughput of `POST /check-balance` under concurrent shoppers (DESIGN 1.B).

Every part runs in its own process, as in production:
- giftsync: N API replicas sharing one PostgreSQL (DESIGN 2), each its own process
  (`uvicorn bench._service:create --factory`) on its own port, with the real Vii and Shopify
  clients over HTTP (bench/_service.py). Shoppers are spread over the replicas round-robin, as a
  load balancer with sticky connections would (uvicorn's own `--workers` share one socket and
  the kernel hands most connections to whichever worker wakes first);
- the Vii simulator and the Shopify simulator: one process each, uvicorn, 0 ms added latency;
- PostgreSQL: DATABASE_URL when set, else an embedded server under .data/bench; the database
  `giftsync_bench` is dropped, created and migrated at the start and dropped at the end;
- the load generator: this process, one kept-alive HTTP/1.1 connection per shopper (a
  browser), through bench/_http.py, which costs ~0.2 ms of CPU a request where httpx cost ~2.

Each shopper holds their own Vii card and checkout token: the first request applies the card
with a 100.00 cart, the rest move the cart between 20.00 and 100.00, so every later request
re-sizes the Shopify card within the Vii hold.

Two loads, each printed under its own heading:
- `think`: each shopper pauses between requests as a person at checkout does (default: a mean
  of 2 s, drawn uniformly from 0.5x to 1.5x). The load the target is about.
- `back-to-back`: no pause, a closed-loop stress. Latency there is mostly queueing (about
  shoppers / throughput), on a machine that also runs the simulators, PostgreSQL and this
  load generator.

Own share = total (seen by the shopper) minus the time giftsync spent waiting on Vii and
Shopify, measured inside the service (bench/_timing.py) and sent back in a response header.
Target: own share p99 <= 15 ms. Nothing is asserted: it prints, per load, the latencies, the
CPU each part used per request (from /proc), and how busy the machine was, by the bench's own
processes and by anything else (on a shared machine, read the figures in that light).

    python bench/check_balance.py [--shoppers 50] [--requests-per-shopper 10] [--replicas 2]
        [--load both|think|back-to-back] [--think-ms 2000] [--pool-size 10]
        [--log-level INFO] [--seed 1] [--csv samples.csv]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import math
import multiprocessing
import os
import random
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # type: ignore[import-untyped]  # noqa: E402
import httpx  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.db.embedded import start_embedded  # noqa: E402
from app.db.engine import asyncpg_url, create_engine  # noqa: E402
from app.db.migrate import upgrade_to_head  # noqa: E402
from app.sandbox.faults import Faults  # noqa: E402
from app.sandbox.shopify import ShopifySimulator  # noqa: E402
from app.sandbox.vii import DEMO_PASSWORD, DEMO_STORE_ID, DEMO_USERNAME, ViiSimulator  # noqa: E402
from bench._http import HttpConnection, HttpError  # noqa: E402
from bench._service import POOL_SIZE_ENV  # noqa: E402
from bench._timing import APP_HEADER, PID_HEADER, UPSTREAM_HEADER  # noqa: E402

DATABASE = "giftsync_bench"
EMBEDDED_DIR = ROOT / ".data" / "bench"
PIN = "2468"
CARD_BALANCE = Decimal("100000.00")
FIRST_CART_CENTS = 10_000  # the hold every later cart moves within
SMALLEST_CART_CENTS = 2_000
OWN_P99_TARGET_MS = 15.0
# Far above any real plan, so Shopify's cost throttle never paces the run: this bench measures
# giftsync, not the rate limit (bench/throttle.py does that).
SHOPIFY_BUCKET = 10_000_000
SHOPIFY_TOKEN = "shpat_sandbox_token"  # the simulator's, not a secret
SHOPIFY_API_VERSION = "2026-07"
THINK = "think"
BACK_TO_BACK = "back-to-back"


@dataclass
class Sample:
    status: int | str
    first_apply: bool
    total_s: float
    upstream_s: float
    app_s: float
    pid: str
    sent_at: float = 0.0  # perf_counter when the request left the load generator


@dataclass
class Phase:
    load: str
    think_ms: float
    samples: list[Sample]
    elapsed_s: float
    cpu_s: dict[str, float | None]
    machine_busy: float  # share of all cores busy during the phase, any process


@dataclass
class Processes:
    """What the bench started, and the process trees whose CPU it counts."""

    replicas: list[subprocess.Popen[bytes]] = field(default_factory=list)
    simulators: dict[str, Any] = field(default_factory=dict)  # name -> multiprocessing.Process
    postgres_pid: int | None = None


# ---- the simulators, one process each ----------------------------------------------------


def serve_simulator(kind: str, shoppers: int, port: int, ready: Any) -> None:
    """Child process: one simulator over real HTTP, so its CPU is off giftsync's processes."""
    import uvicorn

    app: Any
    if kind == "vii":
        vii = ViiSimulator(Faults())
        for shopper in range(shoppers):
            vii.add_card(card_number(shopper), PIN, CARD_BALANCE)
        app = vii.app
    else:
        app = ShopifySimulator(
            Faults(), bucket_size=SHOPIFY_BUCKET, restore_rate=float(SHOPIFY_BUCKET)
        ).app
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


async def start_simulators(shoppers: int, processes: Processes) -> dict[str, int]:
    context = multiprocessing.get_context("spawn")
    ports: dict[str, int] = {}
    events = []
    for kind in ("vii", "shopify"):
        ready = context.Event()
        ports[kind] = _free_port()
        process = context.Process(
            target=serve_simulator, args=(kind, shoppers, ports[kind], ready), daemon=True
        )
        process.start()
        processes.simulators[kind] = process
        events.append(ready)
    for ready in events:
        if not await asyncio.to_thread(ready.wait, 60):
            raise RuntimeError("a simulator did not start")
    return ports


# ---- giftsync, under uvicorn -------------------------------------------------------------


def service_environment(
    database_url: str, sim_ports: dict[str, int], args: argparse.Namespace
) -> dict[str, str]:
    """What an operator would set (DESIGN 4), pointing at the simulators."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "SANDBOX": "false",
        # The bench measures the checkout, not who may call it (session tokens are tested).
        "CHECKOUT_AUTH": "open",
        "POS_KIND": "none",
        "VII_BASE_URL": f"http://127.0.0.1:{sim_ports['vii']}/",
        "VII_USERNAME": DEMO_USERNAME,
        "VII_PASSWORD": DEMO_PASSWORD,
        "VII_STORE_ID": DEMO_STORE_ID,
        "SHOPIFY_SHOP_DOMAIN": "giftsync-sandbox.myshopify.com",
        "SHOPIFY_BASE_URL": f"http://127.0.0.1:{sim_ports['shopify']}",
        "SHOPIFY_ADMIN_TOKEN": SHOPIFY_TOKEN,
        "SHOPIFY_API_VERSION": SHOPIFY_API_VERSION,
        "SHOPIFY_API_SECRET": secrets.token_hex(16),
        "ADMIN_TOKEN": secrets.token_hex(16),
        "CARD_HASH_KEY": secrets.token_hex(32),
        "PIN_ENCRYPTION_KEY": secrets.token_hex(32),
        "LOG_LEVEL": args.log_level,
        "LOG_JSON": "true",
        POOL_SIZE_ENV: str(args.pool_size),
    }


async def start_replicas(
    env: dict[str, str], count: int, log_path: Path, processes: Processes
) -> list[int]:
    """Start `count` giftsync replicas; their ports once each answers /healthz."""
    return list(
        await asyncio.gather(
            *(
                start_service(env, log_path.with_suffix(f".{n}.log"), processes)
                for n in range(count)
            )
        )
    )


async def start_service(env: dict[str, str], log_path: Path, processes: Processes) -> int:
    """Start one giftsync replica under uvicorn; its port once it answers /healthz."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench._service:create",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log_path.open("wb") as log_file:
        replica = subprocess.Popen(  # noqa: ASYNC220, S603 (starts it; our own command)
            command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    processes.replicas.append(replica)
    base_url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if replica.poll() is not None:
                break
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return port
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"giftsync did not start; see {log_path}")


def stop_processes(processes: Processes) -> None:
    for replica in processes.replicas:
        if replica.poll() is None:
            replica.send_signal(signal.SIGINT)
    for replica in processes.replicas:
        try:
            replica.wait(20)
        except subprocess.TimeoutExpired:
            replica.kill()
            replica.wait(5)
    for process in processes.simulators.values():
        process.terminate()
        process.join(10)


# ---- the database --------------------------------------------------------------------------


async def _recreate_database(server_url: str) -> str:
    url = make_url(asyncpg_url(server_url))
    admin = url.set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await connection.close()
    database_url = url.set(database=DATABASE).render_as_string(hide_password=False)
    engine = create_engine(database_url)
    try:
        await upgrade_to_head(engine, database_url)
    finally:
        await engine.dispose()
    return database_url


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
    return start_embedded(EMBEDDED_DIR, database="postgres"), "embedded"


def _embedded_postmaster() -> int | None:
    try:
        return int((EMBEDDED_DIR / "pg" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# ---- CPU accounting from /proc -------------------------------------------------------------


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def _tree_cpu_seconds(root: int, children: dict[int, list[int]]) -> float:
    """User + system CPU of `root` and every live descendant, and of their reaped children."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    pending = [root]
    while pending:
        pid = pending.pop()
        pending.extend(children.get(pid, []))
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / ticks


def cpu_snapshot(processes: Processes) -> dict[str, float | None]:
    children = _children_by_parent()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    snapshot: dict[str, float | None] = {
        "giftsync": (
            sum(_tree_cpu_seconds(r.pid, children) for r in processes.replicas)
            if processes.replicas
            else None
        ),
        "simulators": sum(
            _tree_cpu_seconds(p.pid, children) for p in processes.simulators.values()
        ),
        "PostgreSQL": (
            _tree_cpu_seconds(processes.postgres_pid, children)
            if processes.postgres_pid is not None
            else None
        ),
        "load generator": usage.ru_utime + usage.ru_stime,
    }
    return snapshot


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


# ---- the shoppers ----------------------------------------------------------------------------


def card_number(shopper: int) -> str:
    return f"62800077{shopper % 100_000_000:08d}"


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
    http: HttpConnection, shopper: int, count: int, token: str, seed: int, think_ms: float
) -> list[Sample]:
    samples: list[Sample] = []
    pause = random.Random(seed * 7 + shopper)
    for cart in _carts(shopper, count, seed):
        body = {
            "viiCardNumber": card_number(shopper),
            "viiCardPin": PIN,
            "cartTotal": f"{cart:.2f}",
            "checkoutToken": token,
        }
        if think_ms > 0:
            # Before the first request too, so shoppers arrive spread out, never in lockstep.
            await asyncio.sleep(pause.uniform(0.5 * think_ms, 1.5 * think_ms) / 1000)
        started = time.perf_counter()
        try:
            response = await http.post_json("/check-balance", body)
        except HttpError as exc:
            elapsed = time.perf_counter() - started
            samples.append(Sample(f"exc:{exc}", not samples, elapsed, 0, 0, "?"))
            continue
        total = time.perf_counter() - started
        samples.append(
            Sample(
                response.status,
                not samples,
                total,
                int(response.headers.get(UPSTREAM_HEADER, "0")) / 1e6,
                int(response.headers.get(APP_HEADER, "0")) / 1e6,
                response.headers.get(PID_HEADER, "?"),
                started,
            )
        )
    return samples


async def run_phase(
    clients: list[HttpConnection],
    load: str,
    think_ms: float,
    args: argparse.Namespace,
    processes: Processes,
) -> Phase:
    run_id = secrets.token_hex(4)
    cpu_before = cpu_snapshot(processes)
    busy_before, all_before = machine_ticks()
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            shopper_run(
                client, n, args.requests_per_shopper, f"bench-{run_id}-{n}", args.seed, think_ms
            )
            for n, client in enumerate(clients)
        )
    )
    elapsed = time.perf_counter() - started
    busy_after, all_after = machine_ticks()
    cpu_after = cpu_snapshot(processes)
    cpu: dict[str, float | None] = {}
    for name, after in cpu_after.items():
        before = cpu_before[name]
        cpu[name] = None if after is None or before is None else after - before
    busy = (busy_after - busy_before) / max(1, all_after - all_before)
    samples = [sample for per_shopper in results for sample in per_shopper]
    return Phase(load, think_ms, samples, elapsed, cpu, busy)


async def warm_up(clients: list[HttpConnection]) -> None:
    """Open every shopper's connection and warm each worker (imports, Vii login, DB pool)."""
    await asyncio.gather(
        *(shopper_run(client, n, 2, f"warm-{n}", 0, 0) for n, client in enumerate(clients))
    )


# ---- report ----------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation), of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _ms(values: Iterable[float], *pcts: float) -> str:
    listed = list(values)
    if not listed:
        return "-"
    shown = " / ".join(f"{percentile(listed, p):7.2f}" for p in pcts)
    return f"{shown} ms"


def print_setup(args: argparse.Namespace, source: str, log_path: Path) -> None:
    print()
    print(f"POST /check-balance: {args.shoppers} shoppers x {args.requests_per_shopper} requests")
    print(
        f"  giftsync        : {args.replicas} replica(s), one uvicorn process each, sharing PostgreSQL,"
    )
    logs = log_path.with_suffix(".N.log")
    print(
        f"                    DB pool {args.pool_size}+{args.pool_size} each, log level {args.log_level}"
    )
    print(f"                    (logs: {logs})")
    print("  upstreams       : Vii and Shopify simulators, one process each, 0 ms added latency")
    print(f"  PostgreSQL      : {source}")
    print(
        "  load generator  : this process (uvloop), one kept-alive HTTP/1.1 connection per shopper"
    )
    print(f"  machine         : {os.cpu_count()} cores, shared by all of the above")


def print_phase(phase: Phase, args: argparse.Namespace) -> None:
    samples = phase.samples
    ms = 1000.0
    statuses = Counter(str(s.status) for s in samples)
    errors = {k: v for k, v in statuses.items() if k != "200"}
    own = [max(0.0, (s.total_s - s.upstream_s) * ms) for s in samples]
    in_app = [max(0.0, (s.app_s - s.upstream_s) * ms) for s in samples]
    own_p99 = percentile(own, 99)
    verdict = "meets" if own_p99 <= OWN_P99_TARGET_MS else "MISSES"
    print()
    if phase.load == THINK:
        low, high = 0.5 * phase.think_ms, 1.5 * phase.think_ms
        heading = (
            f"Load: {args.shoppers} shoppers, each thinking {low:g}-{high:g} ms (uniform, "
            f"mean {phase.think_ms:g} ms) before each request, as a person at checkout"
        )
    else:
        heading = (
            f"Load: {args.shoppers} shoppers back to back (closed loop, no think time): "
            "a stress, latency mostly queueing"
        )
    print(heading)
    request_count = len(samples)
    per_request = {
        name: (f"{seconds / request_count * ms:.2f} ms" if seconds is not None else "n/a")
        for name, seconds in phase.cpu_s.items()
    }
    workers = Counter(s.pid for s in samples)
    cores = os.cpu_count() or 1
    ours = sum(v for v in phase.cpu_s.values() if v is not None) / phase.elapsed_s / cores
    rows = [
        ("requests", f"{request_count}"),
        ("errors by status", ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "none"),
        ("throughput", f"{request_count / phase.elapsed_s:.1f} req/s ({phase.elapsed_s:.1f} s)"),
        ("total p50 / p95 / p99", _ms((s.total_s * ms for s in samples), 50, 95, 99)),
        ("upstream wait p50 / p99", _ms((s.upstream_s * ms for s in samples), 50, 99)),
        (
            "OWN p50 / p95 / p99",
            f"{_ms(own, 50, 95, 99)}   target p99 <= {OWN_P99_TARGET_MS:g} ms: {verdict}",
        ),
        ("own in app p50 / p99", f"{_ms(in_app, 50, 99)}   (inside giftsync's ASGI app)"),
        (
            "own: first apply / re-size p99",
            f"{_ms((o for o, s in zip(own, samples, strict=True) if s.first_apply), 99)} / "
            f"{_ms((o for o, s in zip(own, samples, strict=True) if not s.first_apply), 99)}",
        ),
        ("CPU per request", ", ".join(f"{k} {v}" for k, v in per_request.items())),
        (
            "machine CPU busy",
            f"{phase.machine_busy * 100:.0f}% of {cores} cores, of which this bench's "
            f"processes {ours * 100:.0f}% (the rest: anything else running here)",
        ),
        ("answers per replica", ", ".join(f"pid {k}: {v}" for k, v in sorted(workers.items()))),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}} : {value}")


def write_csv(path: Path, phases: list[Phase]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            ["load", "sent_ms", "status", "first_apply", "total_ms", "upstream_ms", "app_ms", "pid"]
        )
        for phase in phases:
            start = min(s.sent_at for s in phase.samples)
            for s in sorted(phase.samples, key=lambda s: s.sent_at):
                writer.writerow(
                    [
                        phase.load,
                        f"{(s.sent_at - start) * 1000:.1f}",
                        s.status,
                        int(s.first_apply),
                        f"{s.total_s * 1000:.2f}",
                        f"{s.upstream_s * 1000:.2f}",
                        f"{s.app_s * 1000:.2f}",
                        s.pid,
                    ]
                )
    print(f"  samples written to {path}")


def print_notes() -> None:
    print()
    print("  OWN = total seen by the shopper minus upstream wait. Upstream wait runs from a")
    print("  call entering the client's transport to its answer's last byte, measured inside")
    print("  giftsync (each client has more connections than there are shoppers, so no call")
    print("  waits for one). OWN includes PostgreSQL, giftsync's CPU, queueing for CPU on")
    print("  this machine, the HTTP stack and the load generator's own overhead; 'own in app'")
    print("  leaves out the last two.")


# ---- main --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run(args: argparse.Namespace) -> None:
    server_url, source = _server_url()
    database_url = await _recreate_database(server_url)
    processes = Processes(postgres_pid=_embedded_postmaster() if source == "embedded" else None)
    log_path = EMBEDDED_DIR / "service.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    clients: list[HttpConnection] = []
    try:
        sim_ports = await start_simulators(args.shoppers, processes)
        env = service_environment(database_url, sim_ports, args)
        ports = await start_replicas(env, args.replicas, log_path, processes)
        clients = [HttpConnection("127.0.0.1", ports[n % len(ports)]) for n in range(args.shoppers)]
        await warm_up(clients)
        # What the bench built so far lives to the end: keep the collector off it, so a full
        # collection in this process never stalls a measured request.
        gc.collect()
        gc.freeze()
        loads = [THINK, BACK_TO_BACK] if args.load == "both" else [args.load]
        phases = [
            await run_phase(clients, load, args.think_ms if load == THINK else 0.0, args, processes)
            for load in loads
        ]
        print_setup(args, source, log_path)
        for phase in phases:
            print_phase(phase, args)
        print_notes()
        if args.csv is not None:
            write_csv(args.csv, phases)
    finally:
        for client in clients:
            await client.aclose()
        stop_processes(processes)
        await _drop_database(server_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shoppers", type=int, default=50)
    parser.add_argument("--requests-per-shopper", type=int, default=10)
    parser.add_argument(
        "--replicas", type=int, default=os.cpu_count() or 1, help="giftsync API processes"
    )
    parser.add_argument(
        "--load", choices=("both", THINK, BACK_TO_BACK), default="both", help="which load(s)"
    )
    parser.add_argument(
        "--think-ms",
        type=float,
        default=2000.0,
        help="mean pause before each of a shopper's requests under the think load",
    )
    parser.add_argument("--pool-size", type=int, default=10, help="as the service's default")
    parser.add_argument(
        "--log-level", default="INFO", help="giftsync's LOG_LEVEL (INFO: the production default)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--csv", type=Path, help="also write every sample to this CSV file")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it; plain asyncio works too, a little slower
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))


if __name__ == "__main__":
    main()
