"""Flow B after checkout: capture on payment, findings on refund, release on cancel.

Real PostgreSQL and the Vii and Shopify simulators; webhooks go through the inbox and the
worker, as in production.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
from app.sync.inbox import Delivery, store_delivery
from app.sync.shadow_capture import (
    CAPTURE_JOB,
    ShadowCaptureService,
    install_capture,
    payment_from_rest,
)
from app.worker import Worker
from tests.wiring import shadow_upstreams

CARD = "6280001234567890"
PIN = "4321"


@dataclass
class Flow:
    http: httpx.AsyncClient
    vii: ViiSimulator
    shopify: ShopifySimulator
    runtime: Runtime
    capture: ShadowCaptureService
    engine: AsyncEngine

    async def apply(self, cart: str, *, token: str = "c-1") -> dict[str, Any]:
        body = {"viiCardNumber": CARD, "viiCardPin": PIN, "cartTotal": cart, "checkoutToken": token}
        response = await self.http.post("/check-balance", json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        answer["gid"] = self.card_by_code(answer["shopifyGiftCardCode"])["id"]
        return answer

    def card_by_code(self, code: str) -> dict[str, Any]:
        for card_id in self.shopify.shop.gift_cards:
            card = self.shopify.card(card_id)
            if card["code"].lower() == code.lower():
                return card
        raise AssertionError("no such Shopify card")

    async def deliver(self, topic: str, payload: dict[str, Any]) -> bool:
        return await store_delivery(
            self.runtime.sessions,
            webhook_id=uuid.uuid4().hex,
            event_id=None,
            topic=topic,
            shop_domain="sandbox.myshopify.com",
            triggered_at=None,
            payload=payload,
        )

    async def run_jobs(self, *, rounds: int = 10) -> None:
        """Run everything, making delayed retries due at once (bounded: no endless loop)."""
        worker = Worker(self.runtime.sessions, self.runtime.handlers)
        for _ in range(rounds):
            async with self.engine.begin() as connection:
                await connection.execute(
                    text("UPDATE jobs SET run_at = now() WHERE state = 'queued'")
                )
            if not await worker.run_once():
                return

    async def scalar(self, sql: str) -> Any:
        async with self.engine.connect() as connection:
            return await connection.scalar(text(sql))

    async def shadow(self) -> Any:
        async with self.engine.connect() as connection:
            return (
                await connection.execute(
                    text(
                        "SELECT state, captured_amount_minor, pin_ciphertext, "
                        "card_number_ciphertext FROM shadow_cards"
                    )
                )
            ).one()


@pytest.fixture
async def flow(runtime: Runtime, engine: AsyncEngine) -> AsyncIterator[Flow]:
    async with shadow_upstreams(runtime, vii_timeout=0.3) as up:
        up.vii_sim.add_card(CARD, PIN, Decimal("50.00"))
        up.vii_sim.faults.lost_answer_hang_s = 5.0
        service = install_capture(runtime)
        assert service is not None
        app = create_app(runtime, run_worker=False)
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as http:
            yield Flow(http, up.vii_sim, up.shop_sim, runtime, service, engine)


async def assert_captured_once(flow: Flow, applied: dict[str, Any], amount: str) -> None:
    assert flow.vii.balance(CARD) == Decimal("50.00") - Decimal(amount)
    assert flow.vii.open_holds(CARD) == {}
    state, captured, pin, number = await flow.shadow()
    assert (state, captured, pin, number) == ("captured", int(Decimal(amount) * 100), None, None)
    assert flow.card_by_code(applied["shopifyGiftCardCode"])["enabled"] is False
    ledger = await flow.scalar(
        "SELECT sum(amount_minor) FROM ledger WHERE system = 'vii' AND cause = 'capture'"
    )
    assert ledger == -int(Decimal(amount) * 100)
    assert await flow.scalar("SELECT count(*) FROM findings") == 0


async def test_orders_paid_alone_captures_from_the_hold(flow: Flow) -> None:
    applied = await flow.apply("20.00")
    order = flow.shopify.create_order([(applied["gid"], Decimal("20.00"))])
    assert await flow.deliver("orders/paid", order["webhooks"]["orders/paid"])
    await flow.run_jobs()
    await assert_captured_once(flow, applied, "20.00")


async def test_transaction_webhook_alone_captures_exactly_what_was_charged(flow: Flow) -> None:
    applied = await flow.apply("20.00")
    order = flow.shopify.create_order([(applied["gid"], Decimal("15.00"))])
    for payload in order["webhooks"]["order_transactions/create"]:
        await flow.deliver("order_transactions/create", payload)
    await flow.run_jobs()
    # 15 captured from the 20 held; Vii frees the other 5 with the capture.
    await assert_captured_once(flow, applied, "15.00")
    assert flow.vii.available(CARD) == Decimal("35.00")


async def test_both_topics_and_duplicates_capture_once(flow: Flow) -> None:
    applied = await flow.apply("20.00")
    order = flow.shopify.create_order([(applied["gid"], Decimal("20.00"))])
    hooks = order["webhooks"]
    for _ in range(2):
        await flow.deliver("orders/paid", hooks["orders/paid"])
        for payload in hooks["order_transactions/create"]:
            await flow.deliver("order_transactions/create", payload)
    await flow.run_jobs()
    assert await flow.scalar(f"SELECT count(*) FROM jobs WHERE kind = '{CAPTURE_JOB}'") == 1
    await assert_captured_once(flow, applied, "20.00")
    # Running a delivery again (after processing) changes nothing either.
    delivery = Delivery(0, "again", None, "orders/paid", None, None)
    await flow.capture.on_order_paid(hooks["orders/paid"], delivery)
    await flow.run_jobs()
    await assert_captured_once(flow, applied, "20.00")


async def test_lost_capture_answer_is_undone_and_debited_exactly_once(flow: Flow) -> None:
    applied = await flow.apply("20.00")
    order = flow.shopify.create_order([(applied["gid"], Decimal("20.00"))])
    await flow.deliver("orders/paid", order["webhooks"]["orders/paid"])
    flow.vii.faults.lose_answer_rate = 1.0
    await flow.run_jobs(rounds=3)
    assert (await flow.shadow())[0] == "applied"
    assert await flow.scalar("SELECT count(*) FROM jobs WHERE kind = 'vii.undo'") >= 1
    flow.vii.faults.lose_answer_rate = 0.0
    await flow.run_jobs()
    await assert_captured_once(flow, applied, "20.00")
    assert await flow.scalar("SELECT count(*) FROM jobs WHERE state <> 'done'") == 0


async def test_order_paid_with_an_ordinary_gift_card_is_ignored(flow: Flow) -> None:
    applied = await flow.apply("20.00")
    other_gid, _ = flow.shopify.create_gift_card(Decimal("30.00"), code="ordinarycard0001")
    order = flow.shopify.create_order([(other_gid, Decimal("25.00"))])
    await flow.deliver("orders/paid", order["webhooks"]["orders/paid"])
    for payload in order["webhooks"]["order_transactions/create"]:
        await flow.deliver("order_transactions/create", payload)
    await flow.run_jobs()
    assert await flow.scalar(f"SELECT count(*) FROM jobs WHERE kind = '{CAPTURE_JOB}'") == 0
    assert (await flow.shadow())[0] == "applied"
    assert flow.vii.balance(CARD) == Decimal("50.00")
    assert sum(flow.vii.open_holds(CARD).values()) == Decimal("20.00")
    assert flow.card_by_code(applied["shopifyGiftCardCode"])["enabled"] is True


async def test_refund_after_capture_is_a_finding_for_staff(flow: Flow) -> None:
    applied = await flow.apply("20.00")
    order = flow.shopify.create_order([(applied["gid"], Decimal("20.00"))])
    await flow.deliver("orders/paid", order["webhooks"]["orders/paid"])
    await flow.run_jobs()
    # The simulator refuses refunds onto a deactivated card, so the refund's webhooks are
    # built from the sale's own payload, as Shopify would send them.
    sale = order["webhooks"]["order_transactions/create"][0]
    txn = "990001"
    refund_txn = {**sale, "id": int(txn), "kind": "refund", "amount": "7.50"}
    refund = {"id": 5501, "order_id": sale["order_id"], "transactions": [refund_txn]}
    for _ in range(2):
        await flow.deliver("refunds/create", refund)
        await flow.deliver("order_transactions/create", refund_txn)
    await flow.run_jobs()
    async with flow.engine.connect() as connection:
        findings = (
            await connection.execute(text("SELECT type, subject, evidence FROM findings"))
        ).all()
    assert len(findings) == 1
    kind, subject, evidence = findings[0]
    assert kind == "refund_needs_staff"
    assert subject == f"order:{order['legacy_id']}:txn:{txn}"
    assert evidence["amount"] == "7.50" and evidence["vii_last4"] == "7890"
    assert evidence["order_id"] == str(order["legacy_id"])
    notes = await flow.scalar("SELECT count(*) FROM ledger WHERE cause = 'refund_needs_staff'")
    assert notes == 1
    assert flow.vii.balance(CARD) == Decimal("30.00")  # nothing moved on Vii


async def test_cancel_before_capture_releases_the_card(flow: Flow) -> None:
    applied = await flow.apply("20.00")
    order = flow.shopify.create_order([(applied["gid"], Decimal("20.00"))])
    paid = order["webhooks"]["orders/paid"]
    delivery = Delivery(0, "w", None, "orders/paid", None, None)
    await flow.capture.on_order_paid(paid, delivery)  # capture queued, not yet run
    # Shopify gives the money back to the gift card when it cancels, then tells us both.
    refund = flow.shopify.refund_to_gift_card(order["id"], applied["gid"], Decimal("20.00"))
    await flow.deliver("refunds/create", refund["webhooks"]["refunds/create"])
    await flow.capture.on_order_cancelled(paid, delivery)
    await flow.capture.on_order_cancelled(paid, delivery)
    await flow.run_jobs()
    state, captured, pin, number = await flow.shadow()
    assert (state, captured, pin, number) == ("released", 0, None, None)
    assert flow.vii.balance(CARD) == Decimal("50.00")
    assert flow.vii.open_holds(CARD) == {}
    assert flow.card_by_code(applied["shopifyGiftCardCode"])["enabled"] is False
    assert await flow.scalar("SELECT count(*) FROM findings") == 0


async def test_a_second_charge_on_a_captured_card_becomes_a_finding(flow: Flow) -> None:
    applied = await flow.apply("20.00")
    order = flow.shopify.create_order(
        [(applied["gid"], Decimal("12.00")), (applied["gid"], Decimal("5.00"))]
    )
    await flow.deliver("orders/paid", order["webhooks"]["orders/paid"])
    await flow.run_jobs()
    assert flow.vii.balance(CARD) == Decimal("38.00")
    assert (await flow.shadow())[0] == "captured"
    async with flow.engine.connect() as connection:
        findings = (await connection.execute(text("SELECT type, subject FROM findings"))).all()
    second = legacy(order["transaction_ids"][1])
    assert findings == [("unrepairable", f"order:{order['legacy_id']}:txn:{second}")]


def legacy(gid: str) -> str:
    return gid.rsplit("/", 1)[-1]


def test_rest_payment_parsing_falls_back_to_last_characters() -> None:
    payment = payment_from_rest(
        {
            "id": 7,
            "order_id": 3,
            "kind": "sale",
            "status": "success",
            "gateway": "gift_card",
            "amount": "4.00",
            "receipt": {"gift_card_last_characters": "AB12"},
        }
    )
    assert payment is not None and payment.is_charge
    assert payment.gift_card_id is None and payment.last_characters == "ab12"
    assert payment.subject == "order:3:txn:7"
    assert payment_from_rest({"id": 7, "order_id": 3, "gateway": "manual", "amount": "4"}) is None


async def test_refund_before_capture_becomes_a_finding_once_captured(flow: Flow) -> None:
    applied = await flow.apply("20.00")
    order = flow.shopify.create_order([(applied["gid"], Decimal("20.00"))])
    refund = flow.shopify.refund_to_gift_card(order["id"], applied["gid"], Decimal("4.00"))
    await flow.deliver("refunds/create", refund["webhooks"]["refunds/create"])
    await flow.run_jobs()
    assert await flow.scalar("SELECT count(*) FROM findings") == 0  # not captured yet
    await flow.deliver("orders/paid", order["webhooks"]["orders/paid"])
    await flow.run_jobs()
    assert flow.vii.balance(CARD) == Decimal("30.00")
    async with flow.engine.connect() as connection:
        findings = (await connection.execute(text("SELECT type, subject FROM findings"))).all()
    txn = legacy(refund["transaction_id"])
    assert findings == [("refund_needs_staff", f"order:{order['legacy_id']}:txn:{txn}")]


async def test_a_crash_after_vii_approved_the_capture_still_debits_exactly_once(
    flow: Flow, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied = await flow.apply("20.00")
    order = flow.shopify.create_order([(applied["gid"], Decimal("20.00"))])
    await flow.deliver("orders/paid", order["webhooks"]["orders/paid"])
    real_ledger = flow.capture._ledger
    crashes = {"n": 0}

    async def crash_once(*args: Any, **kwargs: Any) -> None:
        if crashes["n"] == 0:
            crashes["n"] += 1
            raise ConnectionError("the process died before the capture was recorded")
        await real_ledger(*args, **kwargs)

    monkeypatch.setattr(flow.capture, "_ledger", crash_once)
    await flow.run_jobs(rounds=2)  # the delivery, then the capture that "crashes"
    assert crashes["n"] == 1
    assert flow.vii.balance(CARD) == Decimal("30.00")  # Vii applied it; giftsync has no record
    await flow.run_jobs()
    await assert_captured_once(flow, applied, "20.00")


@pytest.mark.parametrize("lookalike", [False, True])
async def test_matching_by_last_characters_needs_shopify_to_agree(
    flow: Flow, lookalike: bool
) -> None:
    applied = await flow.apply("20.00")
    if lookalike:
        flow.shopify.create_gift_card(Decimal("40.00"), code="ordinarycardx" + CARD[-4:])
    order = flow.shopify.create_order([(applied["gid"], Decimal("20.00"))])
    sale = dict(order["webhooks"]["order_transactions/create"][0])
    receipt = sale["receipt"] if isinstance(sale["receipt"], dict) else json.loads(sale["receipt"])
    sale["receipt"] = {"gift_card_last_characters": receipt["gift_card_last_characters"]}
    await flow.deliver("order_transactions/create", sale)
    await flow.run_jobs()
    captured = flow.vii.balance(CARD) == Decimal("30.00")
    assert captured is not lookalike
