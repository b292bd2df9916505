"""The Lightspeed R-Series simulator on the wire: what a real account would answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.sandbox.lightspeed import LightspeedSimulator
from app.settings import BalanceSign

API = "/API/V3/Account/12345"


async def refresh(http: httpx.AsyncClient, sim: LightspeedSimulator, token: str) -> httpx.Response:
    return await http.post(
        "/auth/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": token,
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
        },
    )


async def authorised(sim: LightspeedSimulator) -> httpx.AsyncClient:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://ls.test")
    answer = await refresh(http, sim, sim.issue_refresh_token())
    http.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return http


@pytest.fixture
def sim() -> LightspeedSimulator:
    return LightspeedSimulator(drip_rate=1000)


@pytest.fixture
async def http(sim: LightspeedSimulator) -> AsyncIterator[httpx.AsyncClient]:
    client = await authorised(sim)
    yield client
    await client.aclose()


async def test_refresh_rotates_both_tokens_and_rejects_reuse(sim: LightspeedSimulator) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url="http://ls.test"
    ) as http:
        first = sim.issue_refresh_token()
        answer = await refresh(http, sim, first)
        assert answer.status_code == 200
        body = answer.json()
        assert body["refresh_token"] != first and body["token_type"] == "bearer"
        reused = await refresh(http, sim, first)
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
        unknown = await refresh(http, sim, "never-issued")
        assert unknown.status_code == 400
        second = await refresh(http, sim, body["refresh_token"])
        assert second.status_code == 200
    assert sim.refresh_count == 2


async def test_expired_or_missing_access_token_is_401(
    sim: LightspeedSimulator, http: httpx.AsyncClient
) -> None:
    assert (await http.get(f"{API}/PaymentType.json")).status_code == 200
    sim.expire_access_tokens()
    assert (await http.get(f"{API}/PaymentType.json")).status_code == 401
    anonymous = await http.get(f"{API}/PaymentType.json", headers={"Authorization": ""})
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    ("sign", "raw"), [(BalanceSign.NEGATIVE, "-100.00"), (BalanceSign.POSITIVE, "100.00")]
)
async def test_cards_render_as_strings_with_the_configured_sign(
    sign: BalanceSign, raw: str
) -> None:
    sim = LightspeedSimulator(balance_sign=sign, can_view_gift_card_numbers=False)
    card_id = sim.add_gift_card("2000000000018904", Decimal(100))
    http = await authorised(sim)
    try:
        body = (await http.get(f"{API}/CreditAccount/{card_id}.json")).json()
    finally:
        await http.aclose()
    card = body["CreditAccount"]
    assert card["balance"] == raw and card["giftCard"] == "true"
    assert card["code"] == "************8904"
    assert all(isinstance(value, str) for value in card.values())


async def test_lists_need_gift_card_filter_and_page_by_cursor(
    sim: LightspeedSimulator, http: httpx.AsyncClient
) -> None:
    for n in range(150):
        sim.add_gift_card(f"GIFT{n:08d}", Decimal(n))
    assert (await http.get(f"{API}/CreditAccount.json")).status_code == 400
    page = (await http.get(f"{API}/CreditAccount.json?giftCard=true&limit=100")).json()
    attributes = page["@attributes"]
    assert attributes["count"] == "150" and attributes["limit"] == "100"
    assert len(page["CreditAccount"]) == 100 and attributes["previous"] == ""
    rest = (await http.get(attributes["next"])).json()
    assert len(rest["CreditAccount"]) == 50 and rest["@attributes"]["next"] == ""
    ids = {c["creditAccountID"] for c in page["CreditAccount"] + rest["CreditAccount"]}
    assert len(ids) == 150


async def test_one_item_is_an_object_and_none_is_absent(
    sim: LightspeedSimulator, http: httpx.AsyncClient
) -> None:
    empty = (await http.get(f"{API}/CreditAccount.json?giftCard=true")).json()
    assert "CreditAccount" not in empty
    sim.add_gift_card("GIFT00000001", Decimal(1))
    single = (await http.get(f"{API}/CreditAccount.json?giftCard=true")).json()
    assert isinstance(single["CreditAccount"], dict)


def gift_sale(card_id: str, amount: str, reference: str) -> dict[str, Any]:
    balancing = str(-Decimal(amount))
    return {
        "completed": "true",
        "SalePayments": {
            "SalePayment": [
                {
                    "amount": amount,
                    "paymentTypeID": "5",
                    "creditAccountID": card_id,
                    "remoteReference": reference,
                },
                {"amount": balancing, "paymentTypeID": "1"},
            ]
        },
    }


async def test_sales_move_balances_and_keep_the_reference(
    sim: LightspeedSimulator, http: httpx.AsyncClient
) -> None:
    card_id = sim.add_gift_card("GIFT00000002", Decimal(40))
    before = sim.card(card_id)["timeStamp"]
    answer = await http.post(f"{API}/Sale.json", json=gift_sale(card_id, "-10.00", "load-1"))
    assert answer.status_code == 200
    assert answer.headers["X-LS-Api-Request-Cost"] == "6"
    assert sim.money_on(card_id) == Decimal(50)
    assert sim.card(card_id)["timeStamp"] > before
    too_much = await http.post(f"{API}/Sale.json", json=gift_sale(card_id, "60.00", "r-1"))
    assert too_much.status_code == 422
    unbalanced = gift_sale(card_id, "5.00", "r-2")
    unbalanced["SalePayments"]["SalePayment"].pop()
    assert (await http.post(f"{API}/Sale.json", json=unbalanced)).status_code == 422
    assert sim.money_on(card_id) == Decimal(50)
    found = (await http.get(f"{API}/SalePayment.json", params={"remoteReference": "load-1"})).json()
    assert found["SalePayment"]["amount"] == "-10.00"


async def test_bucket_overflow_answers_429_with_headers() -> None:
    sim = LightspeedSimulator(bucket_size=3, drip_rate=0.01)
    http = await authorised(sim)
    try:
        answers = [await http.get(f"{API}/PaymentType.json") for _ in range(4)]
    finally:
        await http.aclose()
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[1].headers["X-LS-API-Bucket-Level"] == "2/3"
    throttled = answers[3]
    assert int(throttled.headers["Retry-After"]) >= 1
    assert throttled.headers["X-LS-API-RateLimit-Type"] == "bucket"
    assert sim.rate_limited_count == 1


async def test_code_lookup_has_its_own_limit(
    sim: LightspeedSimulator, http: httpx.AsyncClient
) -> None:
    sim.add_gift_card("GIFT00000003", Decimal(1))
    url = f"{API}/CreditAccount.json?giftCard=true&archived=true&code=GIFT00000003"
    assert (await http.get(url)).status_code == 200
    again = await http.get(url)
    assert again.status_code == 429
    assert again.headers["X-LS-API-RateLimit-Type"] == "endpoint"


async def test_faults_switch_and_seed_demo(
    sim: LightspeedSimulator, http: httpx.AsyncClient
) -> None:
    assert (await http.post("/_sim/faults", json={"error_rate": 1.0})).status_code == 200
    assert (await http.get(f"{API}/PaymentType.json")).status_code == 503
    await http.post("/_sim/faults", json={"error_rate": 0.0, "force_throttle": True})
    assert (await http.get(f"{API}/PaymentType.json")).status_code == 429
    lines = sim.seed_demo()
    assert lines and all("2000000000018904" not in line for line in lines)
    assert len(sim.cards) == 2
