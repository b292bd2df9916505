"""Flow B end to end through `POST /check-balance`, against real PostgreSQL and the simulators."""

from __future__ import annotations

import asyncio
import re
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
from app.worker import Worker
from tests.wiring import shadow_upstreams

CARD = "6280001234567890"
PIN = "4321"


@dataclass
class Checkout:
    http: httpx.AsyncClient
    vii: ViiSimulator
    shopify: ShopifySimulator
    runtime: Runtime
    app: Any

    def client_at(self, address: str) -> httpx.AsyncClient:
        """A shopper at another address (the service reads the peer address, not headers)."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 5000))
        return httpx.AsyncClient(transport=transport, base_url="http://giftsync.test")

    async def apply(
        self,
        cart: str,
        *,
        token: str = "c-1",
        card: str = CARD,
        pin: str | None = PIN,
        address: str = "10.0.0.1",
    ) -> httpx.Response:
        body: dict[str, Any] = {"viiCardNumber": card, "cartTotal": cart, "checkoutToken": token}
        if pin is not None:
            body["viiCardPin"] = pin
        if address == "10.0.0.1":
            return await self.http.post("/check-balance", json=body)
        async with self.client_at(address) as http:
            return await http.post("/check-balance", json=body)

    async def run_jobs(self) -> None:
        worker = Worker(self.runtime.sessions, self.runtime.handlers)
        while await worker.run_once():
            pass


@pytest.fixture
async def checkout(runtime: Runtime) -> AsyncIterator[Checkout]:
    async with shadow_upstreams(runtime) as up:
        up.vii_sim.add_card(CARD, PIN, Decimal("50.00"))
        app = create_app(runtime, run_worker=False)
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as http:
            yield Checkout(http, up.vii_sim, up.shop_sim, runtime, app)


def card_by_code(sim: ShopifySimulator, code: str) -> dict[str, Any]:
    for card_id in sim.shop.gift_cards:
        card = sim.card(f"gid://shopify/GiftCard/{card_id}")
        if card["code"].lower() == code.lower():
            return card
    raise AssertionError(f"no Shopify card ends {code[-4:]}")


def _shopify_balance(sim: ShopifySimulator, code: str) -> Decimal:
    return Decimal(str(card_by_code(sim, code)["balance"]))


async def test_apply_holds_min_of_balance_and_cart_and_returns_a_recognisable_code(
    checkout: Checkout, engine: AsyncEngine
) -> None:
    response = await checkout.apply("120.00")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["amountApplied"] == "50.00"
    assert body["viiBalance"] == "50.00" and body["availableBalance"] == "0.00"
    assert body["viiGiftCardNumber"] == "•••• 7890"
    code = body["shopifyGiftCardCode"]
    assert re.fullmatch(r"[a-z0-9]{8,20}", code) and code.endswith("7890")
    assert body["shopifyGiftCardLastCharacters"] == "7890"
    assert body["shopifyGiftCardStatus"] == "enabled"
    assert _shopify_balance(checkout.shopify, code) == Decimal("50.00")
    assert sum(checkout.vii.open_holds(CARD).values()) == Decimal("50.00")
    async with engine.connect() as connection:
        dump = await connection.scalar(text("SELECT string_agg(t::text, '|') FROM shadow_cards t"))
    assert CARD not in dump and PIN not in dump and code not in dump


async def test_cart_changes_resize_the_same_card(checkout: Checkout) -> None:
    first = (await checkout.apply("40.00")).json()
    assert first["amountApplied"] == "40.00"
    down = (await checkout.apply("30.00", pin=None)).json()
    assert down["shopifyGiftCardCode"] == first["shopifyGiftCardCode"]
    assert down["amountApplied"] == "30.00"
    assert _shopify_balance(checkout.shopify, first["shopifyGiftCardCode"]) == Decimal("30.00")
    assert sum(checkout.vii.open_holds(CARD).values()) == Decimal("40.00")  # hold kept
    up = (await checkout.apply("38.00", pin=None)).json()
    assert up["amountApplied"] == "38.00"
    assert _shopify_balance(checkout.shopify, first["shopifyGiftCardCode"]) == Decimal("38.00")
    needs_pin = await checkout.apply("45.00", pin=None)
    assert needs_pin.status_code == 409 and needs_pin.json()["code"] == "pin_required"
    above = (await checkout.apply("45.00")).json()
    assert (
        above["amountApplied"] == "45.00"
        and above["shopifyGiftCardCode"] == first["shopifyGiftCardCode"]
    )
    assert sum(checkout.vii.open_holds(CARD).values()) == Decimal("45.00")
    assert _shopify_balance(checkout.shopify, first["shopifyGiftCardCode"]) == Decimal("45.00")


async def test_several_cards_in_one_checkout_each_get_their_own(checkout: Checkout) -> None:
    other = "6280009999991111"
    checkout.vii.add_card(other, "9999", Decimal("20.00"))
    one = (await checkout.apply("60.00")).json()
    two = (await checkout.apply("10.00", card=other, pin="9999")).json()
    assert one["shopifyGiftCardCode"] != two["shopifyGiftCardCode"]
    assert two["shopifyGiftCardCode"].endswith("1111") and two["amountApplied"] == "10.00"


@pytest.mark.parametrize(
    ("setup", "status", "code"),
    [
        ("wrong_pin", 403, "invalid_card_or_pin"),
        ("unknown_card", 403, "invalid_card_or_pin"),
        ("empty", 402, "card_empty"),
        ("inactive", 409, "card_not_active"),
    ],
)
async def test_refusals_write_nothing(
    checkout: Checkout, engine: AsyncEngine, setup: str, status: int, code: str
) -> None:
    card, pin = CARD, PIN
    if setup == "wrong_pin":
        pin = "0000"
    elif setup == "unknown_card":
        card = "6280000000000001"
    elif setup == "empty":
        checkout.vii.spend(CARD, Decimal("50.00"))
    else:
        checkout.vii.deactivate(CARD)
    response = await checkout.apply("10.00", card=card, pin=pin)
    assert response.status_code == status and response.json()["code"] == code
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM shadow_cards")) == 0
    assert checkout.vii.open_holds(CARD) == {}


@pytest.mark.parametrize(
    "body",
    [
        {"viiCardNumber": "12345", "viiCardPin": "1234", "cartTotal": "1.00"},
        {"viiCardNumber": "٦٢٨٠٠٠١٢٣٤٥٦٧٨٩٠", "viiCardPin": "1234", "cartTotal": "1.00"},
        {"viiCardNumber": CARD, "viiCardPin": "12", "cartTotal": "1.00"},
        {"viiCardNumber": CARD, "viiCardPin": PIN, "cartTotal": "-1.00"},
        {"viiCardNumber": CARD, "viiCardPin": PIN, "cartTotal": "1.001"},
        {"viiCardNumber": CARD, "viiCardPin": PIN, "cartTotal": "NaN"},
        {"viiCardNumber": CARD, "viiCardPin": PIN, "cartTotal": "99999999.00"},
        {"viiCardNumber": CARD, "viiCardPin": PIN},
    ],
)
async def test_bad_input_is_422_without_echoing_secrets(
    checkout: Checkout, engine: AsyncEngine, body: dict[str, Any]
) -> None:
    response = await checkout.http.post("/check-balance", json=body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "invalid_request"
    assert CARD not in response.text and PIN not in response.text
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM shadow_cards")) == 0


async def test_wrong_pins_lock_the_card_and_the_address(checkout: Checkout) -> None:
    other = "6280005555552222"
    checkout.vii.add_card(other, "5555", Decimal("10.00"))
    for _ in range(5):
        response = await checkout.apply("10.00", pin="0000")
        assert response.status_code == 403
    for card, pin, address in ((CARD, PIN, "10.0.9.9"), (other, "5555", "10.0.0.1")):
        locked = await checkout.apply("10.00", card=card, pin=pin, address=address)
        assert locked.status_code == 429 and locked.json()["code"] == "too_many_attempts"
        assert int(locked.headers["Retry-After"]) > 0
    fine = await checkout.apply("10.00", card=other, pin="5555", address="10.0.7.7")
    assert fine.status_code == 200


async def test_twenty_identical_requests_make_one_hold_and_one_card(
    checkout: Checkout, engine: AsyncEngine
) -> None:
    answers = await asyncio.gather(*(checkout.apply("25.00") for _ in range(20)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["shopifyGiftCardCode"] for a in answers}) == 1
    assert len(checkout.vii.open_holds(CARD)) == 1
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM shadow_cards")) == 1


async def test_two_checkouts_on_one_card_never_hold_more_than_its_balance(
    checkout: Checkout,
) -> None:
    answers = await asyncio.gather(*(checkout.apply("30.00", token=f"c-{n}") for n in range(4)))
    applied = sum(Decimal(a.json()["amountApplied"]) for a in answers if a.status_code == 200)
    assert applied == Decimal("50.00")
    assert sum(checkout.vii.open_holds(CARD).values()) == Decimal("50.00")


async def test_shopify_failure_cancels_the_hold_and_answers_503(
    checkout: Checkout, engine: AsyncEngine
) -> None:
    checkout.shopify.faults.error_rate = 1.0
    response = await checkout.apply("20.00")
    assert response.status_code == 503 and response.json()["code"] == "shopify_unavailable"
    assert "Retry-After" in response.headers
    # Whether Shopify made the card is unknown, so the hold waits for the close job, which
    # deactivates any card with that code first and only then cancels the hold.
    checkout.shopify.faults.error_rate = 0.0
    await checkout.run_jobs()
    # Not found yet, but search may lag a create: the hold is kept for the grace period.
    assert sum(checkout.vii.open_holds(CARD).values()) == Decimal("20.00")
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE jobs SET run_at = now(), payload = jsonb_set(payload, '{search_until}', "
                "'\"2000-01-01T00:00:00+00:00\"') WHERE kind = 'shadow.close'"
            )
        )
    await checkout.run_jobs()
    assert checkout.vii.open_holds(CARD) == {}
    assert all(
        not card["enabled"]
        for card in map(
            checkout.shopify.card,
            [f"gid://shopify/GiftCard/{i}" for i in checkout.shopify.shop.gift_cards],
        )
    )
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM shadow_cards")) == 0


async def test_vii_down_answers_503(checkout: Checkout) -> None:
    checkout.vii.faults.error_rate = 1.0
    response = await checkout.apply("20.00")
    assert response.status_code == 503 and response.json()["code"] == "vii_unavailable"


async def test_release_deactivates_first_then_cancels_the_hold(checkout: Checkout) -> None:
    applied = (await checkout.apply("20.00")).json()
    code = applied["shopifyGiftCardCode"]
    body = {"checkoutToken": "c-1", "shopifyGiftCardCode": code}
    assert (await checkout.http.post("/check-balance/release", json=body)).json() == {
        "released": True
    }
    assert (await checkout.http.post("/check-balance/release", json=body)).status_code == 200
    await checkout.run_jobs()
    assert card_by_code(checkout.shopify, code)["enabled"] is False
    assert checkout.vii.open_holds(CARD) == {}
    unknown = await checkout.http.post(
        "/check-balance/release",
        json={"checkoutToken": "c-1", "shopifyGiftCardCode": "zzzzzzzz7890"},
    )
    assert unknown.status_code == 404


async def test_expired_shadow_cards_are_closed(checkout: Checkout, engine: AsyncEngine) -> None:
    code = (await checkout.apply("20.00")).json()["shopifyGiftCardCode"]
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE shadow_cards SET expires_at = now() - interval '1 minute'")
        )
    assert checkout.runtime.shadow_cards is not None
    assert await checkout.runtime.shadow_cards.expire_due() == 1
    await checkout.run_jobs()
    assert card_by_code(checkout.shopify, code)["enabled"] is False
    assert checkout.vii.open_holds(CARD) == {}
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT state, pin_ciphertext, card_number_ciphertext FROM shadow_cards")
            )
        ).one()
    assert tuple(row) == ("expired", None, None)


async def test_lost_pre_auth_answer_is_undone_and_nothing_is_applied(
    checkout: Checkout, engine: AsyncEngine
) -> None:
    checkout.vii.faults.lose_answer_rate = 1.0
    checkout.vii.faults.lost_answer_hang_s = 30.0
    response = await checkout.apply("20.00")
    assert response.status_code == 503 and response.json()["code"] == "vii_unavailable"
    assert sum(checkout.vii.open_holds(CARD).values()) == Decimal("20.00")  # applied upstream
    checkout.vii.faults.lose_answer_rate = 0.0
    await checkout.run_jobs()
    assert checkout.vii.open_holds(CARD) == {}
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM shadow_cards")) == 0
        assert await connection.scalar(text("SELECT count(*) FROM jobs WHERE state = 'done'")) == 1
    retry = await checkout.apply("20.00")
    assert retry.status_code == 200 and retry.json()["amountApplied"] == "20.00"


async def test_no_table_or_log_line_holds_a_pin_full_number_or_code(
    checkout: Checkout,
    engine: AsyncEngine,
    table_names: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from app.logging import configure_logging

    configure_logging("DEBUG", json=True)
    card, pin = "6280007777771234", "73915862"
    checkout.vii.add_card(card, pin, Decimal("90.00"))
    applied = (await checkout.apply("60.00", card=card, pin=pin, token="secret-sweep")).json()
    code = applied["shopifyGiftCardCode"]
    await checkout.apply("20.00", card=card, pin=None, token="secret-sweep")
    await checkout.apply("90.00", card=card, pin=pin, token="secret-sweep")
    await checkout.apply("10.00", card=card, pin="11112222", token="secret-sweep")  # wrong PIN
    await checkout.http.post(
        "/check-balance/release",
        json={"checkoutToken": "secret-sweep", "shopifyGiftCardCode": code},
    )
    await checkout.run_jobs()
    async with engine.connect() as connection:
        for table in table_names:
            dump = await connection.scalar(
                text(f"SELECT coalesce(string_agg(t::text, '|'), '') FROM {table} t")
            )
            for secret in (card, pin, "11112222", code):
                assert secret not in dump, (table, secret[-4:])
    logged = capsys.readouterr()
    for secret in (card, pin, "11112222", code):
        assert secret not in logged.err + logged.out


async def test_release_after_an_uncaptured_spend_keeps_the_hold_and_reports_it(
    checkout: Checkout, engine: AsyncEngine
) -> None:
    code = (await checkout.apply("30.00")).json()["shopifyGiftCardCode"]
    checkout.shopify.spend(card_by_code(checkout.shopify, code)["id"], Decimal("30.00"))
    body = {"checkoutToken": "c-1", "shopifyGiftCardCode": code}
    assert (await checkout.http.post("/check-balance/release", json=body)).status_code == 200
    await checkout.run_jobs()
    assert sum(checkout.vii.open_holds(CARD).values()) == Decimal("30.00")
    async with engine.connect() as connection:
        finding = (await connection.execute(text("SELECT type, evidence FROM findings"))).one()
    assert finding.type == "unrepairable" and finding.evidence["spent"] == "30.00"


@pytest.mark.parametrize("failing_step", ["pre_auth", "cancel_pre_auth"])
async def test_a_failed_rehold_retires_the_card_and_leaves_no_hold(
    checkout: Checkout, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, failing_step: str
) -> None:
    from app.clients.vii import ViiUnavailable

    code = (await checkout.apply("30.00")).json()["shopifyGiftCardCode"]
    service = checkout.runtime.shadow_cards
    assert service is not None
    real = getattr(service.vii, failing_step)
    calls = {"n": 0}

    async def fail_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ViiUnavailable("Vii timed out")
        return await real(*args, **kwargs)

    monkeypatch.setattr(service.vii, failing_step, fail_once)
    grown = await checkout.apply("45.00")
    assert grown.status_code == 503 and grown.json()["code"] == "vii_unavailable"
    assert _shopify_balance(checkout.shopify, code) == Decimal("0.00")
    async with engine.connect() as connection:
        state, applied = (
            await connection.execute(text("SELECT state, applied_amount_minor FROM shadow_cards"))
        ).one()
        ledger = await connection.scalar(text("SELECT sum(amount_minor) FROM ledger"))
    assert (state, applied) == ("released", 0)
    assert ledger == 0  # the create (+3000) and the debit to zero (-3000) are both on record
    await checkout.run_jobs()
    assert card_by_code(checkout.shopify, code)["enabled"] is False
    assert checkout.vii.open_holds(CARD) == {}


async def test_requests_without_a_checkout_token_are_still_idempotent(checkout: Checkout) -> None:
    body = {"viiCardNumber": CARD, "viiCardPin": PIN, "cartTotal": "20.00"}
    first = await checkout.http.post("/check-balance", json=body)
    again = await checkout.http.post("/check-balance", json=body)
    assert first.status_code == again.status_code == 200
    assert first.json()["shopifyGiftCardCode"] == again.json()["shopifyGiftCardCode"]
    assert len(checkout.vii.open_holds(CARD)) == 1
