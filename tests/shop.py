"""A shop for checkout and shadow card tests: giftsync's HTTP app, the worker, Vii and Shopify simulators.

Everything goes through the real paths: `POST /check-balance`, the webhook inbox and the jobs,
on real PostgreSQL. Helpers read what a shopper and an auditor would look at: what Shopify's
card spent, what Vii holds and took.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.runtime import Runtime
from app.sandbox.shopify import ShopifySimulator
from app.sandbox.vii import ViiSimulator
from app.sync import shadow
from app.sync.inbox import store_delivery
from app.worker import Worker
from tests.wiring import shadow_upstreams

CARD = "6280001234567890"
PIN = "4321"
START = Decimal("50.00")


@dataclass
class Shop:
    http: httpx.AsyncClient
    vii: ViiSimulator
    shopify: ShopifySimulator
    runtime: Runtime
    engine: AsyncEngine
    app: Any
    tokens: dict[str, str] = field(default_factory=dict)
    """checkoutToken -> the applyToken the last answer gave."""

    async def apply(
        self,
        cart: str,
        *,
        token: str | None = "c-1",
        card: str = CARD,
        pin: str | None = PIN,
        apply_token: str | None = None,
        address: str = "10.0.0.1",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {"viiCardNumber": card, "cartTotal": cart}
        if token is not None:
            body["checkoutToken"] = token
        if pin is not None:
            body["viiCardPin"] = pin
        if apply_token is not None:
            body["applyToken"] = apply_token
        transport = httpx.ASGITransport(
            app=self.app, client=(address, 5000), raise_app_exceptions=False
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as http:
            response = await http.post("/check-balance", json=body, headers=headers)
        if response.status_code == 200 and token is not None:
            self.tokens[token] = response.json()["applyToken"]
        return response

    async def resize(self, cart: str, *, token: str = "c-1") -> httpx.Response:
        """The checkout re-sizing with the apply token it kept, as the extension does."""
        return await self.apply(cart, token=token, pin=None, apply_token=self.tokens[token])

    async def release(self, code: str, *, token: str = "c-1") -> httpx.Response:
        return await self.http.post(
            "/check-balance/release", json={"checkoutToken": token, "shopifyGiftCardCode": code}
        )

    def card(self, code: str) -> dict[str, Any]:
        for card_id in self.shopify.shop.gift_cards:
            card = self.shopify.card(card_id)
            if card["code"].lower() == code.lower():
                return card
        raise AssertionError(f"no Shopify card ends {code[-4:]}")

    def order(self, *payments: tuple[str, str] | tuple[str, str, str]) -> dict[str, Any]:
        """An order paid with shadow codes: (code, amount[, status]) each."""
        return self.shopify.create_order(
            [(self.card(p[0])["id"], Decimal(p[1]), *p[2:]) for p in payments]  # type: ignore[misc]
        )

    async def deliver(self, topic: str, payload: dict[str, Any]) -> None:
        await store_delivery(
            self.runtime.sessions,
            webhook_id=uuid.uuid4().hex,
            event_id=None,
            topic=topic,
            shop_domain="sandbox.myshopify.com",
            triggered_at=None,
            payload=payload,
        )

    async def deliver_order(self, order: dict[str, Any]) -> None:
        hooks = order["webhooks"]
        await self.deliver("orders/paid", hooks["orders/paid"])
        for payload in hooks["order_transactions/create"]:
            await self.deliver("order_transactions/create", payload)

    async def run_jobs(self, *, rounds: int = 20) -> None:
        """Run everything due, making delayed retries due at once (bounded)."""
        worker = Worker(self.runtime.sessions, self.runtime.handlers)
        for _ in range(rounds):
            async with self.engine.begin() as connection:
                await connection.execute(
                    text("UPDATE jobs SET run_at = now() WHERE state = 'queued'")
                )
            if not await worker.run_once():
                return
        raise AssertionError("jobs kept coming back")

    async def run_jobs_once(self) -> int:
        """One pass over what is due now, retries left for later."""
        async with self.engine.begin() as connection:
            await connection.execute(text("UPDATE jobs SET run_at = now() WHERE state = 'queued'"))
        return await Worker(self.runtime.sessions, self.runtime.handlers).run_once()

    async def expire_all(self) -> int:
        """Every live card reaches its TTL now; the expiry sweep closes them."""
        async with self.engine.begin() as connection:
            await connection.execute(
                text("UPDATE shadow_cards SET expires_at = now() WHERE state = 'applied'")
            )
        assert self.runtime.shadow is not None
        return await shadow.expire_due(self.runtime.shadow)

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as connection:
            return list((await connection.execute(text(sql), params)).all())

    async def shadow(self, code: str | None = None) -> Any:
        rows = await self.rows(
            "SELECT *, pin_ciphertext IS NULL AS pin_erased FROM shadow_cards ORDER BY created_at"
        )
        if code is None:
            [row] = rows
            return row
        [row] = [r for r in rows if r.shopify_code_last4 == code[-4:].lower()]
        return row

    def captured(self, card: str = CARD, start: Decimal = START) -> Decimal:
        """What Vii took from the card, counting no open hold (balance is what was taken)."""
        return start - self.vii.balance(card)

    def held(self, card: str = CARD) -> Decimal:
        return sum(self.vii.open_holds(card).values(), Decimal(0))

    def spent_on_shopify(self, code: str) -> Decimal:
        """What orders took from the Shopify card: its moves not made by giftsync."""
        card = self.card(code)
        return -sum(
            (
                Decimal(t["amount"])
                for t in card["transactions"]
                if "[giftsync:" not in (t["note"] or "")
            ),
            Decimal(0),
        )


@pytest.fixture(params=[True, False], ids=["capture-frees-rest", "capture-keeps-rest"])
def capture_frees_rest(request: pytest.FixtureRequest) -> bool:
    """Vii's documents are silent on what a capture does to the rest of a hold: both readings."""
    return bool(request.param)


@pytest.fixture(params=[False, True], ids=["undo-to-card", "undo-to-hold"])
def undo_restores_hold(request: pytest.FixtureRequest) -> bool:
    """Vii's documents are silent on where an Undo of a capture puts the money: both readings."""
    return bool(request.param)


@pytest.fixture
async def shop(runtime: Runtime, engine: AsyncEngine) -> AsyncIterator[Shop]:
    async with shadow_upstreams(runtime) as up:
        up.vii_sim.add_card(CARD, PIN, START)
        app = create_app(runtime, run_worker=False)
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as http:
            yield Shop(http, up.vii_sim, up.shop_sim, runtime, engine, app)
