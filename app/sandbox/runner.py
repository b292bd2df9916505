"""Runs the upstream simulators over real HTTP and points giftsync's settings at them.

`giftsync sandbox` serves them on fixed ports; `giftsync serve` in sandbox mode starts them on
free ports inside its own process, so two services on one machine never collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import SecretStr

from app.logging import get_logger
from app.sandbox import lightspeed, onsite, vii
from app.sandbox.shopify import ShopifySimulator
from app.settings import PosKind, Settings

log = get_logger(__name__)

FIXED_PORTS = {"shopify": 8101, "lightspeed": 8102, "onsite": 8103, "vii": 8104}
SANDBOX_SHOPIFY_TOKEN = "shpat_sandbox_token"  # noqa: S105 - the simulator's fixed demo token


class _EmbeddedServer(uvicorn.Server):
    """A simulator server inside another process: signals belong to that process, not to it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# What a simulator holds but is not its state: its app, fault switches and test hooks.
_NOT_STATE = frozenset({"app", "faults", "barrier", "barrier_cards", "waiting", "request_count"})
SAVE_EVERY_S = 2.0


def _state_of(simulator: Any) -> dict[str, Any]:
    """Every attribute that pickles (cards, orders, tokens, counters), nothing that does not."""
    state: dict[str, Any] = {}
    for name, value in vars(simulator).items():
        if name in _NOT_STATE:
            continue
        try:
            pickle.dumps(value)
        except Exception:  # noqa: S112 - clocks, locks and apps are rebuilt, not kept
            continue
        state[name] = value
    return state


@dataclass
class Sandbox:
    simulators: dict[str, Any]
    urls: dict[str, str] = field(default_factory=dict)
    state_path: Path | None = None
    """Where the simulators' state is kept beside the database, so a restart finds the two
    in step (the database keeps links to simulator cards)."""
    restored: bool = False
    _servers: list[uvicorn.Server] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def save(self) -> None:
        if self.state_path is None:
            return
        snapshot = {name: _state_of(sim) for name, sim in self.simulators.items()}
        partial = self.state_path.with_suffix(".tmp")
        partial.write_bytes(pickle.dumps(snapshot))
        os.chmod(partial, 0o600)
        partial.replace(self.state_path)

    def restore(self) -> bool:
        if self.state_path is None or not self.state_path.exists():
            return False
        # Our own file, written by save() above into the private data directory.
        snapshot = pickle.loads(self.state_path.read_bytes())  # noqa: S301
        for name, state in snapshot.items():
            if name in self.simulators:
                vars(self.simulators[name]).update(state)
        return True

    async def keep_saving(self, stop: asyncio.Event) -> None:
        """Save every few seconds until `stop` (a crash loses at most that much)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=SAVE_EVERY_S)
            await asyncio.to_thread(self.save)

    async def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)
        self.save()


def build_simulators(settings: Settings) -> dict[str, Any]:
    return {
        "shopify": ShopifySimulator(access_token=SANDBOX_SHOPIFY_TOKEN, currency=settings.currency),
        "lightspeed": lightspeed.LightspeedSimulator(balance_sign=settings.lightspeed_balance_sign),
        "onsite": onsite.OnSiteSimulator(),
        "vii": vii.ViiSimulator(),
    }


async def start_sandbox(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    ports: dict[str, int] | None = None,
    state_path: Path | None = None,
) -> Sandbox:
    """Serve every simulator; port 0 (the default) picks a free port for each. With a
    `state_path`, the simulators start from the state saved there (if any) and keep it."""
    sandbox = Sandbox(build_simulators(settings), state_path=state_path)
    sandbox.restored = sandbox.restore()
    for name, simulator in sandbox.simulators.items():
        port = (ports or {}).get(name, 0)
        config = uvicorn.Config(
            simulator.app, host=host, port=port, log_config=None, lifespan="off", access_log=False
        )
        server = _EmbeddedServer(config)
        task = asyncio.create_task(server.serve(), name=f"sandbox:{name}")
        while not server.started:
            if task.done():
                await task
                raise RuntimeError(f"the {name} simulator could not start")
            await asyncio.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()[1]
        sandbox.urls[name] = f"http://{host}:{bound}"
        sandbox._servers.append(server)
        sandbox._tasks.append(task)
    return sandbox


_SHOWN_OFF = (
    "create_update_shopify_gift_cards",
    "download_shopify_gift_cards",
    "send_gift_card_notifications",
)


def sandbox_defaults(settings: Settings) -> Settings:
    """The sandbox shows every flow: a simulated R-Series store and every direction on,
    unless the operator set them (POS_KIND=none, or a switch to false, is respected)."""
    chosen = settings.model_fields_set
    update: dict[str, Any] = {name: True for name in _SHOWN_OFF if name not in chosen}
    if "pos_kind" not in chosen:
        update["pos_kind"] = PosKind.RETAIL
    return settings.model_copy(update=update)


def point_settings_at(settings: Settings, sandbox: Sandbox) -> Settings:
    """The settings giftsync runs with in sandbox mode: every upstream is a simulator."""
    ls: lightspeed.LightspeedSimulator = sandbox.simulators["lightspeed"]
    site: onsite.OnSiteSimulator = sandbox.simulators["onsite"]
    return settings.model_copy(
        update={
            "shopify_shop_domain": "giftsync-sandbox.myshopify.com",
            "shopify_base_url": sandbox.urls["shopify"],
            "shopify_admin_token": SecretStr(SANDBOX_SHOPIFY_TOKEN),
            "vii_base_url": sandbox.urls["vii"] + "/",
            "vii_username": vii.DEMO_USERNAME,
            "vii_password": SecretStr(vii.DEMO_PASSWORD),
            "vii_store_id": vii.DEMO_STORE_ID,
            "lightspeed_base_url": sandbox.urls["lightspeed"],
            "lightspeed_token_url": sandbox.urls["lightspeed"] + "/auth/oauth/token",
            "lightspeed_account_id": ls.account_id,
            "lightspeed_client_id": ls.client_id,
            "lightspeed_client_secret": SecretStr(ls.client_secret),
            "lightspeed_refresh_token": SecretStr(ls.issue_refresh_token()),
            # The simulated merchant's set-up every check passes: a shop, a register not named
            # eCom, the integration's employee, the merchant's own "Shopify" payment type.
            **_lightspeed_set_up(settings, ls),
            "onsite_base_url": sandbox.urls["onsite"],
            "onsite_username": site.username,
            "onsite_password": SecretStr(site._password),
            "onsite_app_id": "giftsync-sandbox",
            "onsite_private_id": SecretStr(site._private_id or ""),
            "onsite_verify_tls": False,
            **_onsite_set_up(settings, site),
            "pos_kind": settings.pos_kind
            if settings.pos_kind is not PosKind.NONE
            else PosKind.NONE,
        }
    )


def _lightspeed_set_up(settings: Settings, ls: lightspeed.LightspeedSimulator) -> dict[str, str]:
    """The simulated merchant's ids, where the settings name none (a given id is kept, so a
    wrong one can be tried against the simulator)."""
    return {
        f"lightspeed_{name}": getattr(settings, f"lightspeed_{name}") or value
        for name, value in ls.correct_set_up().items()
    }


def _onsite_set_up(settings: Settings, site: onsite.OnSiteSimulator) -> dict[str, str]:
    given = settings.model_fields_set
    return {
        f"onsite_{name}": getattr(settings, f"onsite_{name}")
        if f"onsite_{name}" in given
        else value
        for name, value in site.correct_set_up().items()
    }


def seed_all(sandbox: Sandbox) -> list[str]:
    lines: list[str] = []
    for name, simulator in sandbox.simulators.items():
        lines.append(f"[{name}] {sandbox.urls.get(name, '')}")
        lines.extend(f"  {line}" for line in simulator.seed_demo())
    return lines


async def run_forever(settings: Settings) -> None:
    """`giftsync sandbox`: the simulators alone on their fixed ports, with demo data."""
    sandbox = await start_sandbox(settings, ports=FIXED_PORTS)
    for line in seed_all(sandbox):
        print(line)
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()
