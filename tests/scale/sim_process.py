"""The upstream simulators in a process of their own, for tests that run giftsync as processes.

`python -m tests.scale.sim_process OUT.json` serves every simulator on a free port (never the
fixed ports of `giftsync sandbox`, so parallel test runs cannot collide), plus a small control
server on another free port, then writes OUT.json (atomically) with:

- `urls`: each simulator's base URL;
- `control`: the control server's base URL;
- `env`: the DESIGN 4 settings that point giftsync at these simulators (as the sandbox mode
  would set them), ready to be put in a giftsync process's environment.

The control server lives here, in the test harness, not in `app/sandbox`: it lets a test act
behind giftsync's back (sell or spend a card in store, add a Vii card) and read what each
simulator holds, exactly as in-process tests call the simulators' Python helpers. It shares
the simulators' event loop, so its calls never interleave with a request being applied.
SIGTERM or SIGINT stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, SecretStr

from app.sandbox.lightspeed import LightspeedSimulator
from app.sandbox.runner import Sandbox, point_settings_at, start_sandbox
from app.sandbox.shopify import ShopifySimulator
from app.sandbox.vii import ViiSimulator
from app.settings import PosKind, Settings

# What `point_settings_at` fills in for a retail POS; exported under their DESIGN 4 names.
EXPORTED_SETTINGS = (
    "shopify_shop_domain",
    "shopify_base_url",
    "shopify_admin_token",
    "vii_base_url",
    "vii_username",
    "vii_password",
    "vii_store_id",
    "lightspeed_base_url",
    "lightspeed_token_url",
    "lightspeed_account_id",
    "lightspeed_client_id",
    "lightspeed_client_secret",
    "lightspeed_refresh_token",
    "lightspeed_balance_sign",
    "lightspeed_shop_id",
    "lightspeed_register_id",
    "lightspeed_employee_id",
    "lightspeed_payment_type_id",
)


class _Server(uvicorn.Server):
    """Signals belong to this process's own handler, not to each embedded server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ViiCardIn(BaseModel):
    number: str
    pin: str
    balance: Decimal


class PosCardIn(BaseModel):
    code: str
    balance: Decimal


class AmountIn(BaseModel):
    amount: Decimal


class OnlineCardIn(BaseModel):
    balance: Decimal
    code: str | None = None


class LimitsIn(BaseModel):
    bucket_size: float
    drip_rate: float


def _text(value: Any) -> Any:
    """Money and times as strings: a float would lose the cents the tests compare."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {key: _text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_text(item) for item in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def control_app(sandbox: Sandbox) -> FastAPI:
    vii: ViiSimulator = sandbox.simulators["vii"]
    shopify: ShopifySimulator = sandbox.simulators["shopify"]
    lightspeed: LightspeedSimulator = sandbox.simulators["lightspeed"]
    sold_by: dict[str, str] = {}
    app = FastAPI(title="simulator control (tests only)", openapi_url=None)

    @app.post("/vii/cards")
    async def add_vii_card(card: ViiCardIn) -> dict[str, bool]:
        vii.add_card(card.number, card.pin, card.balance)
        return {"added": True}

    @app.get("/vii/cards/{number}")
    async def vii_card(number: str) -> dict[str, str | dict[str, str]]:
        try:
            holds = vii.open_holds(number)
            return {
                "balance": str(vii.balance(number)),
                "available": str(vii.available(number)),
                "open_holds": {code: str(amount) for code, amount in holds.items()},
            }
        except KeyError:
            raise HTTPException(404, "no such Vii card") from None

    @app.get("/shopify/gift-cards")
    async def shopify_cards() -> list[dict[str, Any]]:
        return [
            _text(shopify.card(f"gid://shopify/GiftCard/{card_id}"))
            for card_id in sorted(shopify.shop.gift_cards)
        ]

    @app.post("/lightspeed/gift-cards")
    async def sell_in_store(card: PosCardIn) -> dict[str, str]:
        card_id = lightspeed.add_gift_card(card.code, card.balance)
        # The till's sale that loaded it (the simulator sells a card as a real till does).
        sales = [p.sale_id for p in lightspeed.payments.values() if p.credit_account_id == card_id]
        if sales:
            sold_by[card_id] = sales[0]
        return {"id": card_id}

    @app.get("/lightspeed/gift-cards")
    async def pos_cards() -> list[dict[str, Any]]:
        return [
            _text({"id": card_id, "code": card.code, "money": card.money})
            for card_id, card in sorted(lightspeed.cards.items(), key=lambda item: int(item[0]))
        ]

    @app.post("/lightspeed/gift-cards/{card_id}/spend")
    async def spend_in_store(card_id: str, spend: AmountIn) -> dict[str, str]:
        if card_id not in lightspeed.cards:
            raise HTTPException(404, "no such gift card")
        return {"payment_id": lightspeed.spend_in_store(card_id, spend.amount)}

    @app.get("/lightspeed/gift-cards/{card_id}/payments")
    async def pos_payments(card_id: str) -> list[dict[str, Any]]:
        """Every sale payment on the card after the till's sale that loaded it, in order:
        each is one move of its balance."""
        if card_id not in lightspeed.cards:
            raise HTTPException(404, "no such gift card")
        return [
            _text(
                {
                    "id": payment.sale_payment_id,
                    "sale_id": payment.sale_id,
                    "amount": payment.amount,
                    "remote_reference": payment.remote_reference,
                    "completed": lightspeed.sales[payment.sale_id].completed,
                }
            )
            for payment in lightspeed.payments.values()
            if payment.credit_account_id == card_id and payment.sale_id != sold_by.get(card_id)
        ]

    @app.post("/lightspeed/limits")
    async def pos_limits(limits: LimitsIn) -> dict[str, float]:
        """Widen the API bucket: the default (90, 1/s) allows one card write every 10 s."""
        lightspeed.bucket_size = limits.bucket_size
        lightspeed.drip_rate = limits.drip_rate
        return {"bucket_size": limits.bucket_size, "drip_rate": limits.drip_rate}

    @app.post("/shopify/gift-cards")
    async def sell_online(card: OnlineCardIn) -> dict[str, str]:
        card_id, code = shopify.create_gift_card(card.balance, code=card.code)
        return {"id": card_id, "code": code}

    @app.post("/shopify/gift-cards/{legacy_id}/spend")
    async def spend_online(legacy_id: int, spend: AmountIn) -> dict[str, str]:
        card_id = f"gid://shopify/GiftCard/{legacy_id}"
        if legacy_id not in shopify.shop.gift_cards:
            raise HTTPException(404, "no such gift card")
        return {"transaction_id": shopify.spend(card_id, spend.amount)}

    return app


def giftsync_env(settings: Settings) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in EXPORTED_SETTINGS:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[name.upper()] = str(value)
    return env


async def serve(out: Path) -> None:
    settings = Settings(_env_file=None, sandbox=True, pos_kind=PosKind.RETAIL)
    sandbox = await start_sandbox(settings)
    pointed = point_settings_at(settings, sandbox)
    control = _Server(
        uvicorn.Config(
            control_app(sandbox),
            host="127.0.0.1",
            port=0,
            log_config=None,
            lifespan="off",
            access_log=False,
        )
    )
    control_task = asyncio.create_task(control.serve(), name="sim-control")
    while not control.started:
        if control_task.done():
            await control_task
            raise RuntimeError("the control server could not start")
        await asyncio.sleep(0.02)
    port = control.servers[0].sockets[0].getsockname()[1]
    description = {
        "urls": sandbox.urls,
        "control": f"http://127.0.0.1:{port}",
        "env": giftsync_env(pointed),
        "pid": os.getpid(),
    }
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(description, indent=2))
    partial.replace(out)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        control.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(control_task, timeout=5)
        await sandbox.stop()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.scale.sim_process OUT.json")
    asyncio.run(serve(Path(sys.argv[1])))
