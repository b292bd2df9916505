"""Start, stop and kill giftsync and the simulators as real processes, for scale and crash tests.

Everything runs as it would in production, as separate processes sharing one PostgreSQL:

- the simulators: `python -m tests.scale.sim_process` (free ports; see that module);
- an API replica: `giftsync serve --no-worker` on a free port;
- a worker: `giftsync worker` (with `app.worker`'s debug lines on, so a test can read which
  worker ran which job);

all configured only through the environment, with the DESIGN 4 setting names.

Reuse for new crash tests (backfill, reconcile, ...), with the `processes` fixture of
`tests/scale/conftest.py` (a `Processes` that stops everything after the test, pass or fail):

    async def test_x(processes: Processes, engine: AsyncEngine, database_url: str) -> None:
        sims = await processes.start_simulators()
        env = giftsync_env(database_url, sims)
        worker = await processes.start_worker(env)    # or processes.start_cli(env, "backfill", ...)
        await wait_until(some_progress, within=30, what="...", processes=processes)
        worker.kill()                                 # SIGKILL, mid-way
        await expire_leases(engine, worker)           # stands in for the 60 s job lease
        await processes.start_worker(env)             # a fresh worker finishes the work

Outside pytest, `async with Processes(workdir, engine) as procs:` does the same cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from tests.conftest import PIN_KEY_HEX

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
STOP_GRACE = 5.0

ADMIN_TOKEN = "scale-admin-qK3vN8xT2mR6wL9pB4hZ7cJ5dF1"
SHOPIFY_API_SECRET = "shpss_scale_9e41c7b25a0d3f68"

# Every process `giftsync worker` runs with, plus the debug lines of `app.worker` only (one
# `job_done` per job, naming it), so a test can tell which worker ran which job.
_WORKER_CODE = (
    "import logging, sys\n"
    "logging.getLogger('app.worker').setLevel(logging.DEBUG)\n"
    "sys.argv = ['giftsync', 'worker']\n"
    "from app.cli import main\n"
    "main()\n"
)

try:
    _LIBC: Any = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
except OSError:  # pragma: no cover - a libc without a symbol table
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: if the test process dies, so does the child (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ProcessDied(AssertionError):
    """A process the test still needed exited on its own."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    meant_to_end: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: the crash under test. No handler runs; nothing is flushed or retired."""
        self.meant_to_end = True
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self) -> None:
        """Ask for a clean stop (SIGTERM); `wait_stopped` finishes it."""
        self.meant_to_end = True
        if self.running():
            self.popen.send_signal(signal.SIGTERM)

    def wait_stopped(self, grace: float = STOP_GRACE) -> None:
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class Api(Proc):
    url: str = ""

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30.0, **kwargs)


@dataclass
class WorkerProc(Proc):
    @property
    def worker_id_prefix(self) -> str:
        """How `app.worker.Worker` names itself in this process: `host:pid:random`."""
        return f"{socket.gethostname()}:{self.pid}:"

    def jobs_done(self) -> list[int]:
        """Ids of the jobs this worker finished, from its `job_done` lines (in order)."""
        done: list[int] = []
        for line in self.log().splitlines():
            if '"job_done"' not in line:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                done.append(int(json.loads(line)["job_id"]))
        return done


@dataclass
class Simulators:
    """The simulator process: its URLs, the settings pointing at it, and its control calls."""

    proc: Proc
    urls: dict[str, str]
    control: str
    env: dict[str, str]
    http: httpx.AsyncClient = field(repr=False)

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, self.control + path, json=body)
        response.raise_for_status()
        return response.json()

    async def set_faults(self, simulator: str, **changes: Any) -> None:
        """`POST /_sim/faults` on one simulator, e.g. `set_faults("lightspeed", latency_ms=200)`."""
        response = await self.http.post(self.urls[simulator] + "/_sim/faults", json=changes)
        response.raise_for_status()

    async def add_vii_card(self, number: str, pin: str, balance: str) -> None:
        await self._call("POST", "/vii/cards", {"number": number, "pin": pin, "balance": balance})

    async def vii_card(self, number: str) -> dict[str, Any]:
        """`balance`, `available` and `open_holds` ({PreAuthCode: amount}), money as strings."""
        card: dict[str, Any] = await self._call("GET", f"/vii/cards/{number}")
        return card

    async def shopify_cards(self) -> list[dict[str, Any]]:
        """Every Shopify gift card with its full code, balance and transactions."""
        cards: list[dict[str, Any]] = await self._call("GET", "/shopify/gift-cards")
        return cards

    async def sell_in_store(self, code: str, balance: str) -> str:
        """A gift card sold at the Lightspeed till; returns its creditAccountID."""
        answer = await self._call(
            "POST", "/lightspeed/gift-cards", {"code": code, "balance": balance}
        )
        return str(answer["id"])

    async def spend_in_store(self, card_id: str, amount: str) -> None:
        await self._call("POST", f"/lightspeed/gift-cards/{card_id}/spend", {"amount": amount})

    async def pos_payments(self, card_id: str) -> list[dict[str, Any]]:
        """The Lightspeed sale payments on one card (`amount` as a string, `completed`)."""
        payments: list[dict[str, Any]] = await self._call(
            "GET", f"/lightspeed/gift-cards/{card_id}/payments"
        )
        return payments

    async def set_pos_limits(self, bucket_size: float, drip_rate: float) -> None:
        await self._call(
            "POST", "/lightspeed/limits", {"bucket_size": bucket_size, "drip_rate": drip_rate}
        )

    async def sell_online(self, balance: str, code: str | None = None) -> str:
        """A gift card sold on Shopify behind giftsync's back; returns its gid."""
        answer = await self._call("POST", "/shopify/gift-cards", {"balance": balance, "code": code})
        return str(answer["id"])

    async def spend_online(self, shopify_id: str, amount: str) -> None:
        """A debit on a Shopify gift card (by gid) that giftsync is not told about."""
        legacy_id = shopify_id.rsplit("/", 1)[-1]
        await self._call("POST", f"/shopify/gift-cards/{legacy_id}/spend", {"amount": amount})

    async def pos_cards(self) -> dict[str, dict[str, str]]:
        """creditAccountID -> {"code", "money"} for every Lightspeed gift card."""
        cards = await self._call("GET", "/lightspeed/gift-cards")
        return {card["id"]: card for card in cards}


def _clean_environ() -> dict[str, str]:
    """This process's environment without any giftsync setting, so a child reads only ours."""
    settings = {name.upper() for name in Settings.model_fields}
    env = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in settings and name != "GIFTSYNC_NO_WORKER"
    }
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(ROOT), os.environ.get("PYTHONPATH", "")) if part
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def giftsync_env(database_url: str, sims: Simulators, **overrides: str) -> dict[str, str]:
    """The environment of a giftsync process: one database, these simulators, omni both ways."""
    env = _clean_environ()
    env.update(
        {
            "DATABASE_URL": database_url,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "CARD_HASH_KEY": "c41e9a07d25b836f1e0a94c7b3d6582f9a1c07e4b6d35f28a90e1c7d4b2f6a35",
            "PIN_ENCRYPTION_KEY": PIN_KEY_HEX,
            "SHOPIFY_API_SECRET": SHOPIFY_API_SECRET,
            "POS_KIND": "retail",
            "CREATE_UPDATE_SHOPIFY_GIFT_CARDS": "true",
            "DOWNLOAD_SHOPIFY_GIFT_CARDS": "true",
            "POLL_INTERVAL": "1",
            "SANDBOX": "false",
            # These tests are about processes and money, not who may call the checkout.
            "CHECKOUT_AUTH": "open",
            "LOG_JSON": "true",
        }
    )
    env.update(sims.env)
    env.update(overrides)
    return env


async def wait_until(
    check: Callable[[], Awaitable[bool] | bool],
    *,
    within: float,
    what: str,
    processes: Processes | None = None,
    interval: float = 0.1,
) -> None:
    """Poll `check` until it holds; fail with every process's log tail if it never does.

    A process that dies on its own (not through `kill`/`terminate`) fails the wait at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if processes is not None:
            processes.raise_if_one_died()
        if loop.time() > deadline:
            logs = processes.describe() if processes is not None else ""
            raise AssertionError(f"timed out after {within:g} s waiting until {what}\n{logs}")
        await asyncio.sleep(interval)


async def expire_leases(engine: AsyncEngine, worker: WorkerProc) -> int:
    """Make the killed worker's claimed jobs claimable now; returns how many it held.

    Stands in for lease expiry: `WorkerConfig.lease` is 60 s with no setting, and waiting it
    out would only slow the test down. A live worker renews its leases, so this is only ever
    done for a worker that is dead.
    """
    assert not worker.running(), "only a dead worker's leases may be expired"
    async with engine.begin() as connection:
        result = await connection.execute(
            text(
                """
                UPDATE jobs SET locked_until = now() - interval '1 second'
                WHERE state = 'running' AND starts_with(locked_by, :prefix)
                """
            ),
            {"prefix": worker.worker_id_prefix},
        )
    return int(result.rowcount or 0)


P = TypeVar("P", bound=Proc)


class Processes:
    """Owns every process it starts; leaving `async with` stops them all, even on failure."""

    def __init__(self, workdir: Path, engine: AsyncEngine) -> None:
        self.workdir = workdir
        self.engine = engine
        self.procs: list[Proc] = []
        self._clients: list[httpx.AsyncClient] = []
        self._counts: dict[str, int] = {}

    async def __aenter__(self) -> Processes:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait_stopped()
        for client in self._clients:
            await client.aclose()
        self._clients.clear()

    def _name(self, kind: str) -> str:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        return f"{kind}-{self._counts[kind]}"

    def _spawn(self, name: str, args: list[str], env: dict[str, str], cls: type[P]) -> P:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log_file:
            popen = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                [sys.executable, *args],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        proc = cls(name=name, popen=popen, log_path=log_path)
        self.procs.append(proc)
        return proc

    def raise_if_one_died(self) -> None:
        for proc in self.procs:
            if not proc.meant_to_end and not proc.running():
                proc.meant_to_end = True
                raise ProcessDied(
                    f"{proc.name} (pid {proc.pid}) exited with {proc.popen.returncode}\n"
                    f"{proc.log_tail(40)}"
                )

    def describe(self) -> str:
        parts = []
        for proc in self.procs:
            state = "running" if proc.running() else f"exited {proc.popen.returncode}"
            parts.append(f"--- {proc.name} (pid {proc.pid}, {state}) ---\n{proc.log_tail()}")
        return "\n".join(parts)

    async def start_simulators(self, *, within: float = START_TIMEOUT) -> Simulators:
        name = self._name("sims")
        out = self.workdir / f"{name}.json"
        proc = self._spawn(
            name, ["-m", "tests.scale.sim_process", str(out)], _clean_environ(), Proc
        )
        await wait_until(
            out.exists, within=within, what="the simulators are serving", processes=self
        )
        description = json.loads(out.read_text())
        http = httpx.AsyncClient(timeout=30.0)
        self._clients.append(http)
        return Simulators(
            proc=proc,
            urls=description["urls"],
            control=description["control"],
            env=description["env"],
            http=http,
        )

    async def start_api(self, env: dict[str, str], *, within: float = START_TIMEOUT) -> Api:
        """`giftsync serve --no-worker` on a free port, once `/healthz` answers."""
        name = self._name("api")
        for _attempt in range(3):
            port = free_port()
            api = self._spawn(
                name,
                [
                    *("-m", "app.cli", "serve", "--no-worker"),
                    *("--host", "127.0.0.1", "--port", str(port)),
                ],
                env,
                Api,
            )
            api.url = f"http://127.0.0.1:{port}"
            probe = httpx.AsyncClient(base_url=api.url, timeout=2.0)
            self._clients.append(probe)

            async def healthy(probe: httpx.AsyncClient = probe) -> bool:
                try:
                    return (await probe.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            try:
                await wait_until(healthy, within=within, what=f"{name} answers", processes=self)
            except ProcessDied:
                # Another process took the free port between the probe and the bind: retry.
                if "address already in use" not in api.log().lower():
                    raise
                continue
            return api
        raise AssertionError(f"{name} found no free port to listen on")

    def start_cli(self, env: dict[str, str], *args: str) -> Proc:
        """`giftsync ARGS...` (e.g. `backfill --direction both`), not waited for.

        The caller watches its progress in the database and may `kill()` it; it is expected to
        end, so `wait_until` does not treat its exit as a failure (read `popen.returncode`).
        """
        name = self._name(args[0] if args else "cli")
        proc = self._spawn(name, ["-m", "app.cli", *args], env, Proc)
        proc.meant_to_end = True
        return proc

    async def start_worker(
        self, env: dict[str, str], *, within: float = START_TIMEOUT
    ) -> WorkerProc:
        """`giftsync worker`, once its heartbeat row is in the database."""
        worker = self._spawn(self._name("worker"), ["-c", _WORKER_CODE], env, WorkerProc)

        async def beating() -> bool:
            async with self.engine.connect() as connection:
                found = await connection.scalar(
                    text(
                        "SELECT count(*) FROM worker_heartbeats "
                        "WHERE starts_with(worker_id, :prefix)"
                    ),
                    {"prefix": worker.worker_id_prefix},
                )
            return bool(found)

        await wait_until(
            beating, within=within, what=f"{worker.name} beats", processes=self, interval=0.2
        )
        return worker


def money(value: str | Decimal) -> Decimal:
    """A simulator's money string as a Decimal, for exact comparisons."""
    return Decimal(str(value))
