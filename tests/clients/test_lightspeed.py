"""Lightspeed R-Series client: the wire (respx) and behaviour against the simulator.

The simulator plays the docs (tests/sandbox/test_lightspeed_sim.py); where they are silent a
test runs each reading. Tests marked "issue 15" failed on the client before it followed them.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from app.clients.lightspeed import (
    GIFT_CARD_SCOPE,
    LightspeedAuthError,
    LightspeedClient,
    LightspeedError,
    LightspeedSetupError,
    LightspeedUnavailable,
    LightspeedUnknownOutcome,
    SaleSetup,
    as_list,
    card_money,
    parse_gift_card,
)
from app.clients.lightspeed.sales import card_payments
from app.db.engine import SessionFactory
from app.db.tokens import DbTokenStore, TokenSet, TokenStore
from app.sandbox.faults import Faults
from app.sandbox.lightspeed import LightspeedSimulator
from app.sandbox.lightspeed_merchant import Readings
from app.settings import BalanceSign
from tests.memory_tokens import MemoryTokenStore
from tests.pos_support import FakeClock, fixture_json, ls_client

BASE = "https://ls.test"
TOKEN_URL = f"{BASE}/auth/oauth/token"
ACCOUNT = "12345"
API = f"{BASE}/API/V3/Account/{ACCOUNT}"


def sim_client(
    sim: LightspeedSimulator,
    store: TokenStore | None = None,
    *,
    refresh_token: str | None = None,
    timeout: float = 5.0,
    clock: FakeClock | None = None,
    set_up: dict[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LightspeedClient:
    return ls_client(
        sim,
        store=store,
        refresh_token=refresh_token,
        timeout=timeout,
        clock=clock,
        set_up=set_up,
        transport=transport,
    )


def wire_client(store: TokenStore | None = None, **overrides: Any) -> LightspeedClient:
    values: dict[str, Any] = {
        "initial_refresh_token": "refresh-0",
        "base_url": BASE,
        "token_url": TOKEN_URL,
        "balance_sign": BalanceSign.NEGATIVE,
        "sale_setup": SaleSetup("1", "4", "3", "7"),
        "timeout": 2.0,
    }
    values.update(overrides)
    fresh = TokenSet("access-1", "refresh-1", datetime.now(UTC) + timedelta(hours=1))
    return LightspeedClient(ACCOUNT, "cid", "csecret", store or MemoryTokenStore(fresh), **values)


def card_json(card_id: str, balance: str = "-10.00", **extra: str) -> dict[str, str]:
    return {
        "creditAccountID": card_id,
        "code": f"GC{card_id:0>8}",
        "name": "",
        "description": "",
        "giftCard": "true",
        "balance": balance,
        "customerID": "0",
        "archived": "false",
        "timeStamp": "2026-01-02T03:04:05+00:00",
        **extra,
    }


async def no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


# ---- tokens ----


class RecordingStore(MemoryTokenStore):
    def __init__(self) -> None:
        super().__init__()
        self.saved: list[TokenSet] = []

    async def save(self, tokens: TokenSet) -> None:
        self.saved.append(tokens)
        await super().save(tokens)


@respx.mock
async def test_refresh_posts_form_and_saves_rotation_before_first_use() -> None:
    store = RecordingStore()
    token_route = respx.post(TOKEN_URL).respond(
        200,
        json={
            "access_token": "access-new",
            "refresh_token": "refresh-new",
            "expires_in": 3600,
            "token_type": "bearer",
        },
    )
    seen_saved_before_use: list[bool] = []

    def card(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer access-new"
        seen_saved_before_use.append(
            bool(store.saved) and store.saved[-1].refresh_token == "refresh-new"
        )
        return httpx.Response(200, json={"CreditAccount": card_json("7")})

    respx.get(f"{API}/CreditAccount/7.json").mock(side_effect=card)
    client = wire_client(store, initial_refresh_token="refresh-0")
    try:
        found = await client.get_gift_card("7")
    finally:
        await client.aclose()
    assert found is not None and found.balance == Decimal("10.00")
    form = parse_qs(token_route.calls.last.request.content.decode())
    assert form == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["refresh-0"],
        "client_id": ["cid"],
        "client_secret": ["csecret"],
    }
    assert seen_saved_before_use == [True]
    assert "refresh-new" not in repr(store.saved[-1])
    assert "access-new" not in repr(store.saved[-1])


async def test_twenty_callers_with_expired_token_refresh_once() -> None:
    sim = LightspeedSimulator(drip_rate=100)
    card_id = sim.add_gift_card("GIFT00000001", Decimal("5"))
    store = MemoryTokenStore()
    client = sim_client(sim, store)
    try:
        await client.get_gift_card(card_id)
        assert sim.refresh_count == 1
        # Past expiry by the clock: refreshed before sending.
        assert store.tokens is not None
        store.tokens.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        cards = await asyncio.gather(*(client.get_gift_card(card_id) for _ in range(20)))
        assert sim.refresh_count == 2
        # Revoked early (401): refreshed on the first refusal only.
        sim.expire_access_tokens()
        cards += await asyncio.gather(*(client.get_gift_card(card_id) for _ in range(20)))
        assert sim.refresh_count == 3
    finally:
        await client.aclose()
    assert all(card is not None and card.balance == Decimal("5") for card in cards)


async def test_two_processes_sharing_the_database_refresh_once(sessions: SessionFactory) -> None:
    sim = LightspeedSimulator(drip_rate=100)
    card_id = sim.add_gift_card("GIFT00000002", Decimal("5"))
    first_token = sim.issue_refresh_token()
    replicas = [
        sim_client(sim, DbTokenStore(sessions), refresh_token=first_token) for _ in range(2)
    ]
    try:
        results = await asyncio.gather(
            *(replica.get_gift_card(card_id) for replica in replicas for _ in range(10))
        )
        assert sim.refresh_count == 1
        stored = await DbTokenStore(sessions).load()
        assert stored is not None and stored.refresh_token != first_token
        # A third process starting later uses the stored rotation, not the settings token.
        late = sim_client(sim, DbTokenStore(sessions), refresh_token=first_token)
        try:
            assert await late.get_gift_card(card_id) is not None
        finally:
            await late.aclose()
        assert sim.refresh_count == 1
    finally:
        for replica in replicas:
            await replica.aclose()
    assert all(result is not None for result in results)


async def test_reused_refresh_token_fails_cleanly() -> None:
    sim = LightspeedSimulator(drip_rate=100)
    card_id = sim.add_gift_card("GIFT00000003", Decimal("5"))
    token = sim.issue_refresh_token()
    first = sim_client(sim, refresh_token=token)
    second = sim_client(sim, refresh_token=token)
    try:
        await first.get_gift_card(card_id)
        with pytest.raises(LightspeedAuthError) as caught:
            await second.get_gift_card(card_id)
    finally:
        await first.aclose()
        await second.aclose()
    assert caught.value.code == "invalid_grant"
    assert token not in str(caught.value)


async def test_db_token_store_round_trip(sessions: SessionFactory) -> None:
    store = DbTokenStore(sessions, provider="lightspeed-test")
    assert await store.load() is None
    expires = datetime(2026, 1, 1, tzinfo=UTC)
    await store.save(TokenSet("a1", "r1", expires))
    await store.save(TokenSet("a2", "r2", None))
    loaded = await DbTokenStore(sessions, provider="lightspeed-test").load()
    assert loaded == TokenSet("a2", "r2", None)
    assert "r2" not in repr(loaded)


# ---- reads ----


async def test_paging_across_250_cards() -> None:
    sim = LightspeedSimulator(drip_rate=100)
    ids = {sim.add_gift_card(f"GIFT{n:08d}", Decimal(n)) for n in range(250)}
    client = sim_client(sim)
    try:
        seen = [card async for card in client.iter_gift_cards()]
    finally:
        await client.aclose()
    assert {card.credit_account_id for card in seen} == ids
    assert len(seen) == 250


@respx.mock
async def test_paging_follows_next_url_as_given() -> None:
    next_url = f"{API}/CreditAccount.json?after=opaque-cursor&limit=100&giftCard=true"

    def page(request: httpx.Request) -> httpx.Response:
        if "after" in request.url.params:
            return httpx.Response(
                200,
                json={"@attributes": {"next": "", "previous": ""}, "CreditAccount": card_json("3")},
            )
        return httpx.Response(
            200,
            json={
                "@attributes": {"next": next_url, "previous": ""},
                "CreditAccount": [card_json("1"), card_json("2")],
            },
        )

    route = respx.get(f"{API}/CreditAccount.json").mock(side_effect=page)
    client = wire_client()
    try:
        ids = [card.credit_account_id async for card in client.iter_gift_cards()]
    finally:
        await client.aclose()
    assert ids == ["1", "2", "3"]
    first, second = route.calls
    query = parse_qs(first.request.url.query.decode())
    assert query["giftCard"] == ["true"] and query["limit"] == ["100"]
    assert str(second.request.url) == next_url


@respx.mock
async def test_incremental_filter_is_whole_seconds_with_greater_or_equal() -> None:
    """issue 15: the documented form is `timeStamp=>=,YYYY-MM-DDTHH:MM:SS+00:00`, URL-encoded
    (query-parameters.md); fractions of a second are not sent."""
    route = respx.get(f"{API}/CreditAccount.json").respond(200, json={"@attributes": {}})
    client = wire_client()
    try:
        since = datetime(2026, 1, 1, 0, 0, 0, 987654, tzinfo=UTC)
        assert [c async for c in client.iter_gift_cards(since=since, include_archived=True)] == []
    finally:
        await client.aclose()
    raw_query = route.calls.last.request.url.query.decode()
    assert "timeStamp=%3E%3D%2C2026-01-01T00%3A00%3A00%2B00%3A00" in raw_query
    assert "sort=timeStamp" in raw_query and "archived=true" in raw_query


def test_one_object_and_absent_collections_normalise() -> None:
    assert as_list({"a": "1"}) == [{"a": "1"}]
    assert as_list([{"a": "1"}, {"a": "2"}]) == [{"a": "1"}, {"a": "2"}]
    assert as_list(None) == [] and as_list("") == []


async def test_single_card_list_comes_back_as_object() -> None:
    sim = LightspeedSimulator(drip_rate=100)
    card_id = sim.add_gift_card("GIFT00000004", Decimal("12.34"))
    client = sim_client(sim)
    try:
        cards = [card async for card in client.iter_gift_cards()]
    finally:
        await client.aclose()
    assert [(c.credit_account_id, c.balance) for c in cards] == [(card_id, Decimal("12.34"))]


@pytest.mark.parametrize("sign", [BalanceSign.NEGATIVE, BalanceSign.POSITIVE])
async def test_both_balance_signs_normalise_to_money_on_card(sign: BalanceSign) -> None:
    sim = LightspeedSimulator(drip_rate=100, balance_sign=sign)
    card_id = sim.add_gift_card("GIFT00000005", Decimal("100.00"))
    expected_raw = "-100" if sign is BalanceSign.NEGATIVE else "100"
    assert sim.card(card_id)["balance"] == expected_raw
    client = sim_client(sim)
    try:
        card = await client.get_gift_card(card_id)
    finally:
        await client.aclose()
    assert card is not None and card.balance == Decimal("100.00")


def test_card_money_reads_each_sign() -> None:
    assert card_money("-100", BalanceSign.NEGATIVE) == Decimal("100")
    assert card_money("100", BalanceSign.POSITIVE) == Decimal("100")
    assert card_money("0", BalanceSign.NEGATIVE) == Decimal("0")
    assert str(card_money("-0.00", BalanceSign.POSITIVE)) == "0.00"


async def test_lookup_by_code_create_and_archive() -> None:
    sim = LightspeedSimulator(drip_rate=100, code_lookup_interval_s=0)
    customer_id = sim.add_customer("Ada", "Lovelace", "ada@example.com")
    client = sim_client(sim)
    try:
        created = await client.create_gift_card(
            "SHOP12345678", name="Ada", description="order #1001", customer_id=customer_id
        )
        assert created.balance == 0 and created.customer_id == customer_id
        assert created.description == "order #1001"
        found = await client.get_gift_card_by_code("SHOP12345678")
        assert found is not None and found.credit_account_id == created.credit_account_id
        await client.archive_gift_card(created.credit_account_id)
        archived = await client.get_gift_card(created.credit_account_id)
        assert archived is not None and archived.archived
        assert [c async for c in client.iter_gift_cards()] == []
        assert len([c async for c in client.iter_gift_cards(include_archived=True)]) == 1
        assert await client.get_gift_card("999999") is None
        with pytest.raises(LightspeedError) as caught:
            await client.create_gift_card("SHOP12345678")
        assert caught.value.code == "validation"
        sent = [r for r in sim.merchant.cards.values() if r.code == "SHOP12345678"]
        assert len(sent) == 1
    finally:
        await client.aclose()


@respx.mock
async def test_reads_retry_on_5xx() -> None:
    route = respx.get(f"{API}/CreditAccount/7.json")
    route.side_effect = [
        httpx.Response(503),
        httpx.ConnectError("refused"),
        httpx.Response(200, json={"CreditAccount": card_json("7")}),
    ]
    client = wire_client()
    client._sleep = no_sleep
    try:
        card = await client.get_gift_card("7")
    finally:
        await client.aclose()
    assert card is not None and route.call_count == 3


# ---- the merchant's set-up (issue 15: ids, eCom register, balancing type, masked codes) ----


CORRECT = {"shop_id": "1", "register_id": "4", "employee_id": "3", "payment_type_id": "7"}


@pytest.mark.parametrize(
    ("change", "name", "detail"),
    [
        ({"shop_id": "9"}, "lightspeed_shop", "no shop 9"),
        ({"register_id": "99"}, "lightspeed_register", "no register 99"),
        ({"register_id": "3"}, "lightspeed_register", "named eCom"),
        ({"register_id": "5"}, "lightspeed_register", "is in shop 2"),
        ({"register_id": "6"}, "lightspeed_register", "is archived"),
        ({"employee_id": "42"}, "lightspeed_employee", "no employee 42"),
        ({"employee_id": "4"}, "lightspeed_employee", "is archived"),
        ({"payment_type_id": "77"}, "lightspeed_payment_type", "does not exist"),
        ({"payment_type_id": "8"}, "lightspeed_payment_type", "is archived"),
        ({"payment_type_id": "5"}, "lightspeed_payment_type", "cannot balance"),
        ({"payment_type_id": "4"}, "lightspeed_payment_type", "cannot balance"),
        ({"shop_id": None}, "lightspeed_shop", "not set"),
    ],
)
async def test_a_wrong_set_up_is_an_error_check_and_no_sale_is_sent(
    change: dict[str, str | None], name: str, detail: str
) -> None:
    sim = LightspeedSimulator(drip_rate=1000)
    card_id = sim.add_gift_card("2000000000000001", Decimal("50"))
    sales_before = dict(sim.sales)
    set_up = {k: v for k, v in {**CORRECT, **change}.items() if v is not None}
    client = sim_client(sim, set_up=set_up)
    try:
        checks = {c.name: c for c in await client.setup_checks()}
        with pytest.raises(LightspeedSetupError) as caught:
            await client.redeem_gift_card(card_id, Decimal("5"), reference="r-1")
    finally:
        await client.aclose()
    assert checks[name].ok is False and checks[name].severity == "error"
    assert detail in checks[name].detail
    assert detail in str(caught.value)
    failed = {c.name for c in checks.values() if not c.ok}
    # An unknown shop also leaves the register outside it; nothing else fails.
    assert failed == ({name, "lightspeed_register"} if detail == "no shop 9" else {name})
    assert sim.sales == sales_before and sim.money_on(card_id) == Decimal("50")


async def test_the_correct_set_up_passes_every_check() -> None:
    sim = LightspeedSimulator(drip_rate=1000)
    sim.add_gift_card("2000000000000001", Decimal("50"))
    client = sim_client(sim)
    try:
        checks = await client.setup_checks()
    finally:
        await client.aclose()
    assert [(c.name, c.ok) for c in checks] == [
        ("lightspeed_shop", True),
        ("lightspeed_register", True),
        ("lightspeed_employee", True),
        ("lightspeed_gift_card_type", True),
        ("lightspeed_payment_type", True),
        ("lightspeed_gift_card_codes", True),
    ]
    assert [c.detail for c in checks][1] == "register 4 (Online Gift Cards)"


async def test_a_cash_balancing_type_is_a_warning_and_sales_still_go() -> None:
    """issue 15: online money booked as cash lands in the drawer's count: warn, do not stop."""
    sim = LightspeedSimulator(drip_rate=1000)
    card_id = sim.add_gift_card("2000000000000001", Decimal("50"))
    client = sim_client(sim, set_up={**CORRECT, "payment_type_id": "1"})
    try:
        checks = {c.name: c for c in await client.setup_checks()}
        await client.load_gift_card(card_id, Decimal("5"), reference="r-cash")
    finally:
        await client.aclose()
    check = checks["lightspeed_payment_type"]
    assert (check.ok, check.severity) == (False, "warning")
    assert "drawer" in check.detail
    assert sim.money_on(card_id) == Decimal("55")


async def test_an_employee_limited_to_another_shop_is_a_warning() -> None:
    sim = LightspeedSimulator(drip_rate=1000)
    client = sim_client(sim, set_up={**CORRECT, "employee_id": "2"})
    try:
        checks = {c.name: c for c in await client.setup_checks()}
    finally:
        await client.aclose()
    assert (checks["lightspeed_employee"].ok, checks["lightspeed_employee"].severity) == (
        False,
        "warning",
    )


async def test_masked_codes_are_an_error_naming_the_scope_and_reads_stop() -> None:
    """issue 15: without the scope every code reads `**********8904`."""
    sim = LightspeedSimulator(drip_rate=1000, can_view_gift_card_numbers=False)
    card_id = sim.add_gift_card("2000000000018904", Decimal("50"))
    client = sim_client(sim)
    try:
        checks = {c.name: c for c in await client.setup_checks()}
        with pytest.raises(LightspeedSetupError) as read:
            await client.get_gift_card(card_id)
        with pytest.raises(LightspeedSetupError):
            await client.load_gift_card(card_id, Decimal("5"), reference="r-masked")
    finally:
        await client.aclose()
    codes = checks["lightspeed_gift_card_codes"]
    assert (codes.ok, codes.severity) == (False, "error")
    assert GIFT_CARD_SCOPE in codes.detail and GIFT_CARD_SCOPE in str(read.value)
    assert sim.money_on(card_id) == Decimal("50")


async def test_set_up_is_read_once_a_minute() -> None:
    clock = FakeClock()
    sim = LightspeedSimulator(drip_rate=1000, clock=clock)
    sim.add_gift_card("2000000000000001", Decimal("5"))
    client = sim_client(sim, clock=clock)
    try:
        await client.setup_checks()
        first = sim.request_count
        await client.setup_checks()
        assert sim.request_count == first
        clock.advance(61)
        await client.setup_checks()
    finally:
        await client.aclose()
    # Shop with its registers, employee, payment types; the code probe only the first time.
    assert sim.request_count - first == 3


# ---- balance moves ----


async def test_load_and_redeem_name_the_merchants_set_up_and_reference() -> None:
    """issue 15: not shop/register/employee 1, not the first cash type: the settings."""
    sim = LightspeedSimulator(drip_rate=1000)
    # A merchant whose first register is the eCom one: a hard-coded "1" is refused.
    sim.merchant.registers["1"].name = "eCom"
    card_id = sim.add_gift_card("2000000000000006", Decimal("0"))
    sim.merchant.cards[card_id].money = Decimal("100")
    client = sim_client(sim)
    try:
        loaded = await client.load_gift_card(card_id, Decimal("25.00"), reference="job-1")
        redeemed = await client.redeem_gift_card(card_id, Decimal("10.50"), reference="job-2")
        # The same reference again is answered from the first sale, not applied twice.
        again = await client.redeem_gift_card(card_id, Decimal("10.50"), reference="job-2")
        with pytest.raises(LightspeedError) as caught:
            await client.redeem_gift_card(card_id, Decimal("1000"), reference="job-3")
        card = await client.get_gift_card(card_id)
    finally:
        await client.aclose()
    assert loaded.amount == Decimal("-25.00") and loaded.completed
    assert loaded.remote_reference == "job-1" and loaded.credit_account_id == card_id
    assert redeemed.amount == Decimal("10.5") and again == redeemed
    assert caught.value.code == "validation"
    assert sim.money_on(card_id) == Decimal("114.50")
    assert card is not None and card.balance == Decimal("114.5")
    load_sale, redeem_sale = (sim.sales[p.sale_id] for p in (loaded, redeemed))
    for sale in (load_sale, redeem_sale):
        assert (sale.shop_id, sale.register_id, sale.employee_id) == ("1", "4", "3")
    balancing = [
        sim.payments[pid] for pid in load_sale.payment_ids if pid != loaded.sale_payment_id
    ]
    assert [p.payment_type_id for p in balancing] == ["7"]
    assert [p.payment_type_id for p in (sim.payments[pid] for pid in redeem_sale.payment_ids)] == [
        "5"
    ]


@pytest.mark.parametrize(
    "readings", [Readings.strict(), Readings.lenient()], ids=["strict", "lenient"]
)
async def test_a_redemption_follows_the_documented_shape_with_a_line(readings: Readings) -> None:
    """issue 15: a sale without a line is unconfirmed; the documented redemption has one."""
    sim = LightspeedSimulator(drip_rate=1000, readings=readings)
    card_id = sim.add_gift_card("2000000000000006", Decimal("40"))
    client = sim_client(sim)
    try:
        payment = await client.redeem_gift_card(card_id, Decimal("15"), reference="spent-1")
    finally:
        await client.aclose()
    sale = sim.sales[payment.sale_id]
    [line] = sale.lines
    assert (line.item_id, line.unit_price, line.unit_quantity) == ("0", Decimal("15.00"), 1)
    assert "giftsync" in line.note
    assert sim.money_on(card_id) == Decimal("25")


@respx.mock
async def test_the_load_on_the_wire_is_the_tutorials_option_2() -> None:
    mock_set_up()
    respx.get(f"{API}/Sale.json").respond(200, json={"@attributes": {}})
    sales = respx.post(f"{API}/Sale.json").respond(200, json=sale_answer("r-1"))
    client = wire_client()
    try:
        await client.load_gift_card("7", Decimal("5"), reference="r-1")
    finally:
        await client.aclose()
    assert json.loads(sales.calls.last.request.content) == {
        "employeeID": "3",
        "registerID": "4",
        "shopID": "1",
        "completed": True,
        "referenceNumber": "r-1",
        "referenceNumberSource": "giftsync",
        "SalePayments": {
            "SalePayment": [
                {
                    "amount": "-5.00",
                    "creditAccountID": "7",
                    "paymentTypeID": "5",
                    "remoteReference": "r-1",
                },
                {"amount": "5.00", "paymentTypeID": "7"},
            ]
        },
    }


async def test_lost_answer_is_looked_up_not_applied_twice() -> None:
    faults = Faults(lose_answer_rate=1.0)
    sim = LightspeedSimulator(drip_rate=1000, faults=faults)
    card_id = sim.add_gift_card("GIFT00000007", Decimal("50"))
    client = sim_client(sim, timeout=0.3)
    try:
        payment = await client.redeem_gift_card(card_id, Decimal("20"), reference="job-lost")
    finally:
        await client.aclose()
    assert payment.remote_reference == "job-lost" and payment.amount == Decimal("20")
    assert sim.money_on(card_id) == Decimal("30")
    assert [s.reference_number for s in sim.sales.values()].count("job-lost") == 1


@pytest.mark.parametrize(
    "readings", [Readings.strict(), Readings.lenient()], ids=["strict", "lenient"]
)
async def test_a_lost_sale_is_found_by_its_reference_number_under_either_reading(
    readings: Readings,
) -> None:
    """Whether `referenceNumber=X` filters is unconfirmed: the window is read and matched."""
    sim = LightspeedSimulator(drip_rate=1000, readings=readings)
    card_id = sim.add_gift_card("GIFT00000017", Decimal("50"))
    for n in range(3):
        sim.spend_in_store(sim.add_gift_card(f"GIFT0000010{n}", Decimal("9")), Decimal("1"))
    dropping = DropSaleAnswers()
    client = sim_client(sim, transport=dropping.around(httpx.ASGITransport(app=sim.app)))
    try:
        payment = await client.redeem_gift_card(card_id, Decimal("20"), reference="job-window")
    finally:
        await client.aclose()
    assert dropping.dropped == 1
    assert payment.remote_reference == "job-window" and sim.money_on(card_id) == Decimal("30")


class DropSaleAnswers(httpx.AsyncBaseTransport):
    """The first Sale POST reaches Lightspeed and its answer is lost on the way back."""

    def __init__(self) -> None:
        self.inner: httpx.AsyncBaseTransport | None = None
        self.dropped = 0

    def around(self, inner: httpx.AsyncBaseTransport) -> DropSaleAnswers:
        self.inner = inner
        return self

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert self.inner is not None
        response = await self.inner.handle_async_request(request)
        if (
            request.method == "POST"
            and request.url.path.endswith("/Sale.json")
            and not self.dropped
        ):
            self.dropped += 1
            raise httpx.ReadTimeout("answer lost", request=request)
        return response


def sale_answer(reference: str) -> dict[str, Any]:
    return {
        "Sale": {
            "saleID": "9",
            "completed": "true",
            "referenceNumber": reference,
            "timeStamp": "2026-01-02T03:04:05+00:00",
            "SalePayments": {
                "SalePayment": [
                    {
                        "salePaymentID": "91",
                        "saleID": "9",
                        "amount": "-5",
                        "creditAccountID": "7",
                        "paymentTypeID": "5",
                        "createTime": "2026-01-02T03:04:05+00:00",
                    },
                    {"salePaymentID": "92", "saleID": "9", "amount": "5", "paymentTypeID": "7"},
                ]
            },
        }
    }


def mock_set_up() -> None:
    """What a correct account answers to the set-up read (respx)."""
    register = {"registerID": "4", "name": "Online", "shopID": "1", "archived": "false"}
    respx.get(f"{API}/Shop/1.json").respond(
        200,
        json={
            "Shop": {
                "shopID": "1",
                "name": "Main",
                "archived": "false",
                "Registers": {"Register": register},
            }
        },
    )
    respx.get(f"{API}/Employee/3.json").respond(
        200, json={"Employee": {"employeeID": "3", "archived": "false", "limitToShopID": "0"}}
    )
    types = fixture_json("paymenttype_list.json")
    types["PaymentType"].append(
        {"paymentTypeID": "7", "name": "Shopify", "type": "user defined", "archived": "false"}
    )
    respx.get(f"{API}/PaymentType.json").respond(200, json=types)
    respx.get(f"{API}/CreditAccount.json").respond(200, json={"CreditAccount": card_json("1")})


@respx.mock
async def test_lost_answer_not_found_is_resent_once() -> None:
    mock_set_up()
    lookups = respx.get(f"{API}/Sale.json").respond(200, json={"@attributes": {}})
    sales = respx.post(f"{API}/Sale.json")
    sales.side_effect = [httpx.ReadTimeout("lost"), httpx.Response(200, json=sale_answer("r-1"))]
    client = wire_client()
    try:
        payment = await client.load_gift_card("7", Decimal("5"), reference="r-1")
    finally:
        await client.aclose()
    assert payment.amount == Decimal("-5") and payment.sale_payment_id == "91"
    # One look-up before the first send, one after the lost answer.
    assert sales.call_count == 2 and lookups.call_count == 2
    after = parse_qs(lookups.calls.last.request.url.query.decode())
    assert after["referenceNumber"] == ["r-1"] and after["load_relations"] == ['["SalePayments"]']
    assert after["timeStamp"][0].startswith(">=,") and "." not in after["timeStamp"][0]


@respx.mock
async def test_twice_lost_answer_raises_unknown_outcome() -> None:
    mock_set_up()
    respx.get(f"{API}/Sale.json").respond(200, json={"@attributes": {}})
    sales = respx.post(f"{API}/Sale.json").mock(side_effect=httpx.ReadTimeout("lost"))
    client = wire_client()
    try:
        with pytest.raises(LightspeedUnknownOutcome) as caught:
            await client.redeem_gift_card("7", Decimal("5"), reference="r-2")
    finally:
        await client.aclose()
    assert caught.value.reference == "r-2" and sales.call_count == 2


@respx.mock
async def test_a_sale_answered_503_was_not_sent_and_is_sent_again_without_a_look_up() -> None:
    mock_set_up()
    lookups = respx.get(f"{API}/Sale.json").respond(200, json={"@attributes": {}})
    sales = respx.post(f"{API}/Sale.json")
    sales.side_effect = [httpx.Response(503), httpx.Response(200, json=sale_answer("r-3"))]
    client = wire_client()
    client._sleep = no_sleep
    try:
        payment = await client.load_gift_card("7", Decimal("5"), reference="r-3")
    finally:
        await client.aclose()
    assert payment.remote_reference == "r-3"
    assert sales.call_count == 2 and lookups.call_count == 1  # before the first send only


@respx.mock
async def test_a_sale_never_sent_is_unavailable_not_an_unknown_outcome() -> None:
    mock_set_up()
    respx.get(f"{API}/Sale.json").respond(200, json={"@attributes": {}})
    sales = respx.post(f"{API}/Sale.json").mock(side_effect=httpx.ConnectError("refused"))
    client = wire_client()
    client._sleep = no_sleep
    try:
        with pytest.raises(LightspeedUnavailable) as caught:
            await client.redeem_gift_card("7", Decimal("5"), reference="r-4")
    finally:
        await client.aclose()
    assert not isinstance(caught.value, LightspeedUnknownOutcome)
    assert sales.call_count == 4


@respx.mock
async def test_a_sale_answer_without_our_payment_is_looked_up_as_lost() -> None:
    mock_set_up()
    lookups = respx.get(f"{API}/Sale.json")
    lookups.side_effect = [
        httpx.Response(200, json={"@attributes": {}}),  # before sending
        httpx.Response(200, json=sale_answer("r-5")),  # after the unreadable answer: applied
    ]
    sales = respx.post(f"{API}/Sale.json").respond(200, json={"Sale": {"saleID": "9"}})
    client = wire_client()
    try:
        payment = await client.load_gift_card("7", Decimal("5"), reference="r-5")
    finally:
        await client.aclose()
    assert payment.sale_payment_id == "91" and payment.remote_reference == "r-5"
    assert sales.call_count == 1 and lookups.call_count == 2


@pytest.mark.parametrize(
    "readings", [Readings.strict(), Readings.lenient()], ids=["strict", "lenient"]
)
async def test_gift_card_payments_are_followed_on_sales_with_whole_second_cursors(
    readings: Readings,
) -> None:
    """issue 15: SalePayment has no `Sale` relation (nor a timeStamp field): Sale is read
    with its SalePayments, `>=` on the second already seen, and several sales in one second."""
    clock = FakeClock()
    sim = LightspeedSimulator(drip_rate=1000, readings=readings, clock=clock)
    card_id = sim.add_gift_card("GIFT00000008", Decimal("80"))
    sim.spend_in_store(card_id, Decimal("30"))
    client = sim_client(sim, clock=clock)
    try:
        first = [p async for p in client.iter_gift_card_payments(since=sim.merchant.now())]
        cursor = first[-1].time_stamp
        sim.reload_in_store(card_id, Decimal("5"))  # the same second as the cursor
        later = [p async for p in client.iter_gift_card_payments(since=cursor)]
    finally:
        await client.aclose()
    assert [(p.amount, p.completed, p.credit_account_id) for p in first] == [
        (Decimal("-80"), True, card_id),
        (Decimal("30"), True, card_id),
    ]
    assert [p.amount for p in later] == [Decimal("-80"), Decimal("30"), Decimal("-5")]
    assert sim.money_on(card_id) == Decimal("55")


# ---- cost per card (issue 15: the documented minimum of 7 units) ---------------------------


async def test_a_new_card_with_a_balance_costs_7_units_and_no_look_up() -> None:
    sim = LightspeedSimulator(drip_rate=1000)
    client = sim_client(sim)
    try:
        # The first card also reads the set-up and the gift card type, once per client.
        await client.create_loaded_gift_card("10000000000000000001", Decimal("10"), reference="c1")
        units, lookups, requests = sim.units_charged, sim.code_lookups, sim.request_count
        card = await client.create_loaded_gift_card(
            "10000000000000000002",
            Decimal("25.00"),
            reference="c2",
            name="Ada",
            description="#1001",
        )
    finally:
        await client.aclose()
    assert sim.units_charged - units == 7.0
    assert (sim.code_lookups - lookups, sim.request_count - requests) == (0, 2)
    assert card.balance == Decimal("25.00") and card.code == "10000000000000000002"
    assert sim.money_on(card.credit_account_id) == Decimal("25.00")
    assert sim.card(card.credit_account_id)["name"] == "Ada"


async def test_a_card_an_earlier_attempt_made_is_completed_once() -> None:
    sim = LightspeedSimulator(drip_rate=1000, code_lookup_interval_s=0)
    client = sim_client(sim)
    try:
        first = await client.create_loaded_gift_card(
            "10000000000000000003", Decimal("15"), reference="c3"
        )
        again = await client.create_loaded_gift_card(
            "10000000000000000003", Decimal("15"), reference="c3"
        )
        # A crash between the create and the load leaves an empty card with the code.
        empty = await client.create_gift_card("10000000000000000004")
        completed = await client.create_loaded_gift_card(
            "10000000000000000004", Decimal("9"), reference="c4"
        )
    finally:
        await client.aclose()
    assert again.credit_account_id == first.credit_account_id and again.balance == Decimal("15")
    assert completed.credit_account_id == empty.credit_account_id and completed.balance == Decimal(
        "9"
    )
    assert len(sim.cards) == 2
    assert sorted(s.reference_number for s in sim.sales.values()) == ["c3", "c4"]


# ---- OAuth: a lost refresh answer (issue 15) --------------------------------------------------


class LoseFirstTokenAnswer(httpx.AsyncBaseTransport):
    """The token endpoint rotates, and its answer never comes back, once."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/auth/oauth/token") and not self.lost:
            self.lost += 1
            raise httpx.ReadTimeout("answer lost", request=request)
        return response


@pytest.mark.parametrize(
    "readings", [Readings.strict(), Readings.lenient()], ids=["strict", "lenient"]
)
async def test_a_lost_refresh_answer_is_retried_with_the_old_token(readings: Readings) -> None:
    """refresh-token.md: the old refresh token is revoked only once the new access token is
    used, and the lost one never was."""
    sim = LightspeedSimulator(drip_rate=1000, readings=readings)
    card_id = sim.add_gift_card("GIFT00000011", Decimal("5"))
    store = MemoryTokenStore()
    losing = LoseFirstTokenAnswer(httpx.ASGITransport(app=sim.app))
    client = sim_client(sim, store, transport=losing)
    client._sleep = no_sleep
    try:
        card = await client.get_gift_card(card_id)
    finally:
        await client.aclose()
    assert card is not None and card.balance == Decimal("5")
    assert losing.lost == 1 and sim.refresh_count == 2 and store.saves == 1


# ---- documented payloads ----------------------------------------------------------------------


def test_the_documented_answers_parse() -> None:
    created = parse_gift_card(
        fixture_json("creditaccount_create.json")["CreditAccount"], BalanceSign.NEGATIVE
    )
    assert created.code_masked and created.balance == 0
    sale = fixture_json("sale_load_option1.json")["Sale"]
    [payment] = card_payments(sale, "5")
    assert (payment.credit_account_id, payment.amount, payment.completed) == (
        "9",
        Decimal("-100"),
        True,
    )
    assert payment.time_stamp == datetime(2021, 10, 11, 18, 21, 8, tzinfo=UTC)


# ---- rate limits ----


@respx.mock
async def test_429_retry_after_is_honoured() -> None:
    route = respx.get(f"{API}/CreditAccount/7.json")
    route.side_effect = [
        httpx.Response(
            429,
            headers={"Retry-After": "2", "X-LS-API-RateLimit-Type": "bucket"},
            json={"message": "Rate limit"},
        ),
        httpx.Response(200, json={"CreditAccount": card_json("7")}),
    ]
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    client = wire_client()
    client._sleep = record
    try:
        card = await client.get_gift_card("7")
    finally:
        await client.aclose()
    assert card is not None and route.call_count == 2
    assert slept == [2.0]


@respx.mock
async def test_bucket_headers_slow_the_next_request() -> None:
    respx.get(f"{API}/CreditAccount/7.json").respond(
        200,
        headers={"X-LS-API-Bucket-Level": "60/60", "X-LS-API-Drip-Rate": "2"},
        json={"CreditAccount": card_json("7")},
    )
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)
        client.bucket.level = 0.0  # as if the wait had passed

    client = wire_client()
    client._sleep = record
    try:
        await client.get_gift_card("7")
        await client.get_gift_card("7")
    finally:
        await client.aclose()
    assert client.bucket.size == 60 and client.bucket.drip_rate == 2
    assert len(slept) == 1 and slept[0] > 0


async def test_a_burst_of_reads_is_paced_for_both_limiters() -> None:
    """issue 15: the burst limiter (20 a second beside a 90 bucket) is paced like the bucket."""
    clock = FakeClock()
    sim = LightspeedSimulator(drip_rate=1000, clock=clock)
    card_id = sim.add_gift_card("GIFT00000009", Decimal("1"))
    client = sim_client(sim, clock=clock)
    try:
        results = await asyncio.gather(*(client.get_gift_card(card_id) for _ in range(120)))
    finally:
        await client.aclose()
    assert all(result is not None for result in results)
    assert sim.rate_limited_by == {}
    assert client.burst.limit == 20


async def test_a_slow_drip_is_waited_for_without_a_429() -> None:
    clock = FakeClock()
    sim = LightspeedSimulator(clock=clock)  # 90 units, 1 a second: the real default
    card_id = sim.add_gift_card("GIFT00000010", Decimal("1"))
    client = sim_client(sim, clock=clock)
    try:
        results = await asyncio.gather(*(client.get_gift_card(card_id) for _ in range(150)))
    finally:
        await client.aclose()
    assert all(result is not None for result in results)
    assert sim.rate_limited_by == {}
