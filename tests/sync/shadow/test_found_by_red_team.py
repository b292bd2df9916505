"""Shadow card money bugs a red-team pass found, each replayed through the real paths.

- A Shopify move confirmed upstream but not recorded (the process dies in between): the move is
  marked pending before it is sent, so the next step or the close finds it by its key.
- A pending move buried under many later transactions: the look-up reads every page.
- A credit whose answer timed out while Shopify was still applying it: never sent again, and
  not taken as absent until it can no longer land.
- A refund landing between a re-hold's balance read and its emptying debit: the card is read
  again until it shows nothing, so the refund is netted, not captured.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.clients.shopify import ShopifyClient, ShopifyUnknownOutcome
from app.clients.vii import ViiClient
from app.main import create_app
from app.runtime import Runtime, install_features
from app.sandbox.faults import Faults
from app.sandbox.shopify import ShopifySimulator
from app.sandbox.vii import DEMO_PASSWORD, DEMO_STORE_ID, DEMO_USERNAME, ViiSimulator
from app.sync.shadow import ShadowDeps, card_moves
from app.sync.shadow.gate import CardGate
from tests.shop import CARD, PIN, START, Shop


class Crash(RuntimeError):
    """The process dies (or its commit fails) right after Shopify confirmed a move."""


def crash_recording(monkeypatch: pytest.MonkeyPatch, step: str | None = None) -> None:
    """The next recording of a confirmed move (of `step`, when named) dies."""
    real = card_moves.record_move
    left = {"crashes": 1}

    async def record(session: Any, row: Any, delta: int, key: str, cause: str) -> None:
        if left["crashes"] and (step is None or key.endswith(f":{step}")):
            left["crashes"] = 0
            raise Crash("process died after Shopify confirmed the move")
        await real(session, row, delta, key, cause)

    monkeypatch.setattr(card_moves, "record_move", record)


async def close(shop: Shop, code: str) -> tuple[Decimal, Decimal, Decimal]:
    """Release, run the close; what Shopify's card spent, what Vii took, what Vii still holds."""
    assert (await shop.release(code)).status_code == 200
    await shop.run_jobs()
    assert (await shop.shadow(code)).settled_at is not None
    return shop.spent_on_shopify(code), shop.captured(), shop.held()


def spendable(shop: Shop, code: str) -> Decimal:
    return Decimal(shop.card(code)["balance"])


async def test_a_crash_after_the_rehold_fill_is_found_at_close(
    shop: Shop, monkeypatch: pytest.MonkeyPatch, capture_frees_rest: bool
) -> None:
    shop.vii.capture_frees_rest = capture_frees_rest
    code = (await shop.apply("20.00")).json()["shopifyGiftCardCode"]
    crash_recording(monkeypatch, "rehold-fill")
    grown = await shop.apply("50.00")  # with the PIN: a new hold of 50, then the fill
    monkeypatch.undo()
    assert grown.status_code == 500
    assert (spendable(shop, code), shop.held()) == (Decimal("50.00"), Decimal("50.00"))
    shop.order((code, "50.00"))
    assert await close(shop, code) == (Decimal("50.00"), Decimal("50.00"), Decimal("0"))


async def test_a_crash_after_a_credit_within_the_hold_is_found_at_close(
    shop: Shop, monkeypatch: pytest.MonkeyPatch, capture_frees_rest: bool
) -> None:
    shop.vii.capture_frees_rest = capture_frees_rest
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    assert (await shop.resize("10.00")).status_code == 200
    crash_recording(monkeypatch)
    assert (await shop.resize("50.00")).status_code == 500
    monkeypatch.undo()
    shop.order((code, "50.00"))
    assert await close(shop, code) == (Decimal("50.00"), Decimal("50.00"), Decimal("0"))


async def test_a_crash_after_a_debit_is_found_by_the_next_resize(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    crash_recording(monkeypatch)
    assert (await shop.resize("20.00")).status_code == 500
    monkeypatch.undo()
    again = await shop.resize("20.00")  # finds the debit by its key: nothing more moves
    assert again.status_code == 200 and again.json()["amountApplied"] == "20.00"
    assert spendable(shop, code) == Decimal("20.00")
    shop.order((code, "20.00"))
    assert await close(shop, code) == (Decimal("20.00"), Decimal("20.00"), Decimal("0"))


async def test_a_lost_credit_under_a_hundred_later_transactions_is_found(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    assert (await shop.resize("10.00")).status_code == 200
    deps = shop.runtime.shadow
    assert deps is not None
    real_credit = deps.shopify.credit_gift_card

    async def applied_then_lost(*args: Any, **kwargs: Any) -> Any:
        await real_credit(*args, **kwargs)
        raise ShopifyUnknownOutcome("answer lost and the look-up failed", reference="x")

    monkeypatch.setattr(deps.shopify, "credit_gift_card", applied_then_lost)
    assert (await shop.resize("50.00")).status_code == 503
    monkeypatch.undo()
    assert spendable(shop, code) == Decimal("50.00")
    for _ in range(100):
        shop.order((code, "0.01"))
    shop.order((code, "49.00"))
    assert await close(shop, code) == (Decimal("50.00"), Decimal("50.00"), Decimal("0"))


# --- a credit Shopify applies after our deadline ------------------------------------------


def _operation(request: httpx.Request) -> str:
    try:
        query = json.loads(request.content)["query"]
    except (ValueError, KeyError, TypeError):
        return ""
    return query if isinstance(query, str) else ""


class LateShopify(httpx.AsyncBaseTransport):
    """`delay_next_credit`: the next giftCardCredit times out on our side and Shopify applies
    it only after answering the request that follows (whatever it is); with `drop_late` the
    delayed credit never reaches Shopify at all."""

    def __init__(self, app: Any) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self.delay_next_credit = False
        self.drop_late = False
        self.credits_sent = 0
        self._late: httpx.Request | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        operation = _operation(request)
        if "giftCardCredit" in operation:
            self.credits_sent += 1
            if self.delay_next_credit:
                self.delay_next_credit = False
                self._late = None if self.drop_late else request
                raise httpx.ReadTimeout("deadline passed; Shopify still working", request=request)
        response = await self._inner.handle_async_request(request)
        await response.aread()
        if self._late is not None:
            late, self._late = self._late, None
            await (await self._inner.handle_async_request(late)).aread()
        return response


class LateShop(Shop):
    late: LateShopify


@pytest.fixture
async def late_shop(runtime: Runtime, engine: AsyncEngine) -> AsyncIterator[LateShop]:
    vii_sim = ViiSimulator(Faults())
    shop_sim = ShopifySimulator(Faults())
    late = LateShopify(shop_sim.app)
    vii = ViiClient(
        "http://vii.sim/",
        DEMO_USERNAME,
        DEMO_PASSWORD,
        DEMO_STORE_ID,
        backoff=0.0,
        transport=httpx.ASGITransport(app=vii_sim.app),
    )
    shopify = ShopifyClient(
        "http://shop.sim", "shpat_sandbox_token", "2026-07", transport=late, retry_backoff=0.0
    )
    runtime.shadow = ShadowDeps.build(
        runtime.sessions, CardGate(runtime.engine), runtime.settings, vii, shopify
    )
    install_features(runtime)
    vii_sim.add_card(CARD, PIN, START)
    app = create_app(runtime, run_worker=False)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as http:
        found = LateShop(http, vii_sim, shop_sim, runtime, engine, app)
        found.late = late
        yield found
    await vii.aclose()
    await shopify.aclose()


async def test_a_credit_applied_after_its_deadline_is_never_sent_twice(
    late_shop: LateShop,
) -> None:
    shop = late_shop
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    assert (await shop.resize("10.00")).status_code == 200
    shop.late.delay_next_credit = True
    lost = await shop.resize("50.00")  # times out; the look-up runs before Shopify applies it
    assert lost.status_code == 503 and lost.json()["code"] == "shopify_unavailable"
    assert shop.late.credits_sent == 1
    # Shopify has applied it by now; the retry finds it by its key and sends nothing.
    again = await shop.resize("50.00")
    assert again.status_code == 200, again.text
    assert shop.late.credits_sent == 1
    assert (spendable(shop, code), shop.held()) == (Decimal("50.00"), Decimal("50.00"))
    shop.order((code, "50.00"))
    assert await close(shop, code) == (Decimal("50.00"), Decimal("50.00"), Decimal("0"))


async def test_a_pending_credit_not_found_waits_then_counts_as_never_applied(
    late_shop: LateShop,
) -> None:
    shop = late_shop
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    assert (await shop.resize("10.00")).status_code == 200
    shop.late.delay_next_credit = shop.late.drop_late = True
    assert (await shop.resize("50.00")).status_code == 503
    waiting = await shop.resize("50.00")  # not found yet, but it could still land
    assert waiting.status_code == 503 and int(waiting.headers["Retry-After"]) > 0
    assert shop.late.credits_sent == 1
    async with shop.engine.begin() as connection:  # Shopify can no longer be applying it
        await connection.exec_driver_sql(
            "UPDATE shadow_cards SET unconfirmed_move_at = unconfirmed_move_at"
            " - interval '3 minutes'"
        )
    grown = await shop.resize("50.00")
    assert grown.status_code == 200, grown.text
    assert shop.late.credits_sent == 2
    assert (spendable(shop, code), shop.held()) == (Decimal("50.00"), Decimal("50.00"))
    shop.order((code, "45.00"))
    assert await close(shop, code) == (Decimal("45.00"), Decimal("45.00"), Decimal("0"))


# --- a refund racing a re-hold ------------------------------------------------------------


async def test_a_refund_between_the_rehold_read_and_its_debit_is_netted(
    shop: Shop, monkeypatch: pytest.MonkeyPatch, capture_frees_rest: bool
) -> None:
    shop.vii.capture_frees_rest = capture_frees_rest
    card, pin = "6280009999990001", "1111"
    shop.vii.add_card(card, pin, Decimal("100.00"))
    code = (await shop.apply("50.00", card=card, pin=pin)).json()["shopifyGiftCardCode"]
    order = shop.order((code, "30.00"))
    deps = shop.runtime.shadow
    assert deps is not None
    real_read = deps.shopify.get_gift_card

    async def read_then_refund(card_id: str) -> Any:
        found = await real_read(card_id)
        monkeypatch.setattr(deps.shopify, "get_gift_card", real_read)
        shop.shopify.refund_to_gift_card(order["id"], shop.card(code)["id"], Decimal("10.00"))
        return found

    monkeypatch.setattr(deps.shopify, "get_gift_card", read_then_refund)
    grown = await shop.apply("80.00", card=card, pin=pin)  # past the hold: a re-hold
    monkeypatch.undo()
    assert grown.status_code == 200, grown.text
    assert (await shop.release(code)).status_code == 200
    await shop.run_jobs()
    spent = shop.spent_on_shopify(code)  # 30 spent, 10 of it refunded while open
    assert (spent, shop.captured(card, Decimal("100.00"))) == (Decimal("20.00"), Decimal("20.00"))
    assert shop.held(card) == Decimal("0")
    assert await shop.rows("SELECT type FROM findings") == []
