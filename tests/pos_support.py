"""Shared by the POS tests: a clock tests move, clients wired to the simulators, fixtures."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from app.clients.lightspeed import LightspeedClient, SaleSetup
from app.clients.onsite import OnSiteClient
from app.db.tokens import TokenStore
from app.sandbox.lightspeed import LightspeedSimulator
from app.sandbox.onsite import OnSiteSimulator
from tests.memory_tokens import MemoryTokenStore

FIXTURES = Path(__file__).parent / "fixtures"
LS_BASE = "https://ls.test"


class FakeClock:
    """Seconds since the epoch that pass only when something sleeps on them.

    Shared by a simulator and a client, so rate limits and whole-second timestamps are exact
    and no test waits on the wall clock. A sleep moves the clock to its wake time (never back).
    """

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now = max(self.now, self.now + max(0.0, seconds))
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ls_client(
    sim: LightspeedSimulator,
    *,
    store: TokenStore | None = None,
    refresh_token: str | None = None,
    set_up: dict[str, str] | None = None,
    clock: FakeClock | None = None,
    timeout: float = 5.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LightspeedClient:
    """A client on `sim`, naming its correct set-up unless `set_up` says otherwise."""
    ids = sim.correct_set_up() if set_up is None else set_up
    extra: dict[str, Any] = {}
    if clock is not None:
        extra = {"clock": clock, "sleep": clock.sleep}
    return LightspeedClient(
        sim.account_id,
        sim.client_id,
        sim.client_secret,
        store if store is not None else MemoryTokenStore(),
        initial_refresh_token=refresh_token or sim.issue_refresh_token(),
        base_url=LS_BASE,
        token_url=f"{LS_BASE}/auth/oauth/token",
        balance_sign=sim.balance_sign,
        sale_setup=SaleSetup(**ids),
        timeout=timeout,
        transport=transport or httpx.ASGITransport(app=sim.app),
        **extra,
    )


def onsite_client(sim: OnSiteSimulator, **overrides: Any) -> OnSiteClient:
    options: dict[str, Any] = {
        "retry_base_delay": 0.0,
        "timeout": 2.0,
        **sim.correct_set_up(),
        **overrides,
    }
    return OnSiteClient(
        "https://onsite.test:9630",
        sim.username,
        sim._password,
        "com.example.giftsync",
        sim._private_id,
        transport=httpx.ASGITransport(app=sim.app),
        **options,
    )


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / "lightspeed" / name).read_text())


def fixture_xml(name: str) -> bytes:
    return (FIXTURES / "onsite" / name).read_bytes()
