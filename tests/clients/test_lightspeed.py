"""Lightspeed R-Series client: the wire (respx) and behaviour against the simulator."""

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
    LightspeedAuthError,
    LightspeedClient,
    LightspeedError,
    LightspeedUnavailable,
    LightspeedUnknownOutcome,
    as_list,
    card_money,
)
from app.db.engine import SessionFactory
from app.db.tokens import DbTokenStore, TokenSet, TokenStore
from app.sandbox.faults import Faults
from app.sandbox.lightspeed import LightspeedSimulator
from app.settings import BalanceSign
from tests.memory_tokens import MemoryTokenStore

BASE = "https://ls.test"
TOKEN_URL = f"{BASE}/auth/oauth/token"
ACCOUNT = "12345"
API = f"{BASE}/API/V3/Account/{ACCOUNT}"


def sim_client(
    sim: LightspeedSimulator,
    store: TokenStore | None = None,
    *,
    refresh_token: str | None = None,
    sign: BalanceSign | None = None,
    timeout: float = 5.0,
) -> LightspeedClient:
    return LightspeedClient(
        sim.account_id,
        sim.client_id,
        sim.client_secret,
        store if store is not None else MemoryTokenStore(),
        initial_refresh_token=refresh_token or sim.issue_refresh_token(),
        base_url=BASE,
        token_url=TOKEN_URL,
        balance_sign=sign or sim.balance_sign,
        timeout=timeout,
        transport=httpx.ASGITransport(app=sim.app),
    )


def wire_client(store: TokenStore | None = None, **overrides: Any) -> LightspeedClient:
    values: dict[str, Any] = {
        "initial_refresh_token": "refresh-0",
        "base_url": BASE,
        "token_url": TOKEN_URL,
        "balance_sign": BalanceSign.NEGATIVE,
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
async def test_incremental_filter_is_url_encoded() -> None:
    route = respx.get(f"{API}/CreditAccount.json").respond(200, json={"@attributes": {}})
    client = wire_client()
    try:
        since = datetime(2026, 1, 1, tzinfo=UTC)
        assert [c async for c in client.iter_gift_cards(since=since, include_archived=True)] == []
    finally:
        await client.aclose()
    raw_query = route.calls.last.request.url.query.decode()
    assert "timeStamp=%3E%2C2026-01-01T00%3A00%3A00%2B00%3A00" in raw_query
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
    expected_raw = "-100.00" if sign is BalanceSign.NEGATIVE else "100.00"
    assert sim.card(card_id)["balance"] == expected_raw
    client = sim_client(sim, sign=sign)
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
    sim = LightspeedSimulator(drip_rate=100)
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


# ---- balance moves ----


async def test_load_and_redeem_carry_the_reference() -> None:
    sim = LightspeedSimulator(drip_rate=100)
    card_id = sim.add_gift_card("GIFT00000006", Decimal("100"))
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
    assert redeemed.amount == Decimal("10.50") and again == redeemed
    assert caught.value.code == "validation"
    assert sim.money_on(card_id) == Decimal("114.50")
    assert card is not None and card.balance == Decimal("114.50")


async def test_lost_answer_is_looked_up_not_applied_twice() -> None:
    faults = Faults(lose_answer_rate=1.0)
    sim = LightspeedSimulator(drip_rate=100, faults=faults)
    card_id = sim.add_gift_card("GIFT00000007", Decimal("50"))
    client = sim_client(sim, timeout=0.3)
    try:
        payment = await client.redeem_gift_card(card_id, Decimal("20"), reference="job-lost")
    finally:
        await client.aclose()
    assert payment.remote_reference == "job-lost" and payment.amount == Decimal("20")
    assert sim.money_on(card_id) == Decimal("30")
    assert len(sim.sales) == 1


def sale_answer(reference: str) -> dict[str, Any]:
    return {
        "Sale": {
            "saleID": "9",
            "completed": "true",
            "SalePayments": {
                "SalePayment": [
                    {
                        "salePaymentID": "91",
                        "saleID": "9",
                        "amount": "-5.00",
                        "creditAccountID": "7",
                        "paymentTypeID": "5",
                        "remoteReference": reference,
                        "timeStamp": "2026-01-02T03:04:05+00:00",
                    },
                    {"salePaymentID": "92", "saleID": "9", "amount": "5.00", "paymentTypeID": "1"},
                ]
            },
        }
    }


def mock_payment_types() -> None:
    respx.get(f"{API}/PaymentType.json").respond(
        200,
        json={
            "PaymentType": [
                {"paymentTypeID": "1", "type": "cash", "archived": "false"},
                {"paymentTypeID": "5", "type": "gift card", "archived": "false"},
            ]
        },
    )


@respx.mock
async def test_lost_answer_not_found_is_resent_once() -> None:
    mock_payment_types()
    lookups = respx.get(f"{API}/SalePayment.json").respond(200, json={"@attributes": {}})
    sales = respx.post(f"{API}/Sale.json")
    sales.side_effect = [httpx.ReadTimeout("lost"), httpx.Response(200, json=sale_answer("r-1"))]
    client = wire_client()
    try:
        payment = await client.load_gift_card("7", Decimal("5"), reference="r-1")
    finally:
        await client.aclose()
    assert payment.amount == Decimal("-5.00") and payment.sale_payment_id == "91"
    assert sales.call_count == 2 and lookups.call_count == 2
    sent = json.loads(sales.calls.last.request.content)
    gift, cash = sent["SalePayments"]["SalePayment"]
    assert sent["completed"] == "true"
    assert gift == {
        "amount": "-5.00",
        "paymentTypeID": "5",
        "creditAccountID": "7",
        "remoteReference": "r-1",
    }
    assert cash == {"amount": "5.00", "paymentTypeID": "1"}
    assert parse_qs(lookups.calls.last.request.url.query.decode())["remoteReference"] == ["r-1"]


@respx.mock
async def test_twice_lost_answer_raises_unknown_outcome() -> None:
    mock_payment_types()
    respx.get(f"{API}/SalePayment.json").respond(200, json={"@attributes": {}})
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
    mock_payment_types()
    lookups = respx.get(f"{API}/SalePayment.json").respond(200, json={"@attributes": {}})
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
    mock_payment_types()
    respx.get(f"{API}/SalePayment.json").respond(200, json={"@attributes": {}})
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
    mock_payment_types()
    found = {"SalePayment": sale_answer("r-5")["Sale"]["SalePayments"]["SalePayment"][0]}
    lookups = respx.get(f"{API}/SalePayment.json")
    lookups.side_effect = [
        httpx.Response(200, json={"@attributes": {}}),  # before sending
        httpx.Response(200, json=found),  # after the unreadable answer: it was applied
    ]
    sales = respx.post(f"{API}/Sale.json").respond(200, json={"Sale": {"saleID": "9"}})
    client = wire_client()
    try:
        payment = await client.load_gift_card("7", Decimal("5"), reference="r-5")
    finally:
        await client.aclose()
    assert payment.sale_payment_id == "91" and payment.remote_reference == "r-5"
    assert sales.call_count == 1 and lookups.call_count == 2


async def test_gift_card_payments_since_include_in_store_sales() -> None:
    sim = LightspeedSimulator(drip_rate=100)
    card_id = sim.add_gift_card("GIFT00000008", Decimal("80"))
    sim.spend_in_store(card_id, Decimal("30"))
    client = sim_client(sim)
    try:
        before = datetime.now(UTC) - timedelta(minutes=1)
        first = [p async for p in client.iter_gift_card_payments(since=before)]
        cursor = first[-1].time_stamp
        sim.reload_in_store(card_id, Decimal("5"))
        later = [p async for p in client.iter_gift_card_payments(since=cursor)]
    finally:
        await client.aclose()
    assert [(p.amount, p.completed, p.credit_account_id) for p in first] == [
        (Decimal("30.00"), True, card_id)
    ]
    assert [p.amount for p in later] == [Decimal("-5.00")]
    assert sim.money_on(card_id) == Decimal("55")


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


async def test_burst_of_500_reads_is_paced_without_429() -> None:
    sim = LightspeedSimulator(bucket_size=90, drip_rate=200)
    card_id = sim.add_gift_card("GIFT00000009", Decimal("1"))
    client = sim_client(sim)
    try:
        results = await asyncio.gather(*(client.get_gift_card(card_id) for _ in range(500)))
    finally:
        await client.aclose()
    assert all(result is not None for result in results)
    assert sim.rate_limited_count == 0
    assert sim.request_count == 500
