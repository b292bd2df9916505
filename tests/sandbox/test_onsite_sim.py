"""OnSite simulator: sessions and seats, invoices as the only gift card record, faults."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from decimal import Decimal

import defusedxml.ElementTree as safe_xml
import httpx
import pytest

from app.sandbox.faults import Faults
from app.sandbox.onsite import SESSION_COOKIE, OnSiteSimulator

BASE = "https://onsite.test:9630"
USER = "clerk"
PASSWORD = "sim-pw-4471"
PAPPID = "sim-pappid-01"
AUTH = {
    "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    "X-PAPPID": PAPPID,
}

LOAD = (
    "<invoice><reference>{ref}</reference><lineitems><lineitem><product><code>GIFTCARD</code>"
    "</product><description>Gift Card</description><serial>{serial}</serial>"
    "<price>{amount}</price><quantity>1</quantity></lineitem></lineitems></invoice>"
)
REDEEM = (
    "<invoice><reference>{ref}</reference><payments><payment><method>Gift Card</method>"
    "<amount>{amount}</amount><reference>{serial}</reference></payment></payments></invoice>"
)


@pytest.fixture
def sim() -> OnSiteSimulator:
    return OnSiteSimulator(username=USER, password=PASSWORD, private_id=PAPPID)


@pytest.fixture
async def http(sim: OnSiteSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=BASE, transport=httpx.ASGITransport(app=sim.app), headers=AUTH
    ) as client:
        yield client


def root_of(response: httpx.Response):  # type: ignore[no-untyped-def]
    return safe_xml.fromstring(response.content)


async def test_basic_auth_and_private_id_are_required(sim: OnSiteSimulator) -> None:
    async with httpx.AsyncClient(base_url=BASE, transport=httpx.ASGITransport(app=sim.app)) as bare:
        no_pappid = await bare.get(
            "/api/customers/", headers={"Authorization": AUTH["Authorization"]}
        )
        assert no_pappid.status_code == 403
        assert root_of(no_pappid).findtext("code") == "invalid_private_app_id"
        no_auth = await bare.get("/api/customers/", headers={"X-PAPPID": PAPPID})
        assert no_auth.status_code == 401
        assert no_auth.headers["WWW-Authenticate"].startswith("Basic")
        wrong = "Basic " + base64.b64encode(f"{USER}:nope".encode()).decode()
        bad = await bare.get(
            "/api/customers/", headers={"Authorization": wrong, "X-PAPPID": PAPPID}
        )
        assert bad.status_code == 401
    assert sim.sessions_opened == 0


async def test_cookie_reuses_the_session_and_logout_frees_the_seat(
    sim: OnSiteSimulator, http: httpx.AsyncClient
) -> None:
    first = await http.get("/api/customers/")
    assert first.status_code == 200
    assert SESSION_COOKIE in first.cookies
    for _ in range(3):
        assert (await http.get("/api/products/")).status_code == 200
    assert sim.sessions_opened == 1 and sim.sessions_open == 1
    out = await http.post("/api/sessions/current/logout/")
    assert out.status_code == 200
    assert sim.sessions_open == 0
    # The client's jar dropped the cookie, so the next call opens a new session.
    assert (await http.get("/api/products/")).status_code == 200
    assert sim.sessions_opened == 2


async def test_unknown_cookie_is_401_even_with_credentials(
    sim: OnSiteSimulator, http: httpx.AsyncClient
) -> None:
    await http.get("/api/products/")
    sim.expire_sessions()
    response = await http.get("/api/products/")
    assert response.status_code == 401
    assert root_of(response).findtext("code") == "session_expired"


async def test_sessions_beyond_the_seats_are_refused() -> None:
    sim = OnSiteSimulator(username=USER, password=PASSWORD, private_id=PAPPID, seats=2)
    transport = httpx.ASGITransport(app=sim.app)
    statuses = []
    for _ in range(3):
        # A fresh client has no cookie: each one takes a seat, as on a real server.
        async with httpx.AsyncClient(base_url=BASE, transport=transport, headers=AUTH) as c:
            statuses.append((await c.get("/api/products/")).status_code)
    assert statuses == [200, 200, 403]
    assert sim.sessions_open == 2


async def test_invoices_create_get_and_balance(
    sim: OnSiteSimulator, http: httpx.AsyncClient
) -> None:
    created = await http.post(
        "/api/invoices/", content=LOAD.format(ref="r1", serial="CARD1", amount="30.00")
    )
    assert created.status_code == 201
    invoice_id = root_of(created).get("id")
    assert created.headers["Location"] == f"/api/invoices/{invoice_id}/"
    assert sim.balance("CARD1") == Decimal("30.00")
    fetched = await http.get(f"/api/invoices/{invoice_id}/")
    assert root_of(fetched).findtext("lineitems/lineitem/serial") == "CARD1"
    redeemed = await http.post(
        "/api/invoices/", content=REDEEM.format(ref="r2", serial="CARD1", amount="12.00")
    )
    assert redeemed.status_code == 201
    assert sim.balance("CARD1") == Decimal("18.00")
    assert (await http.get("/api/invoices/99999/")).status_code == 404


async def test_redeem_above_balance_is_refused_with_xml_error(
    sim: OnSiteSimulator, http: httpx.AsyncClient
) -> None:
    sim.sell_gift_card_in_store("CARD2", Decimal("10.00"))
    response = await http.post(
        "/api/invoices/", content=REDEEM.format(ref="r", serial="CARD2", amount="10.01")
    )
    assert response.status_code == 409
    assert root_of(response).findtext("code") == "insufficient_balance"
    assert sim.balance("CARD2") == Decimal("10.00")
    assert len(sim.invoices) == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            "<invoice><lineitems><lineitem><product><code>GIFTCARD</code></product>"
            "<price>5.00</price></lineitem></lineitems></invoice>",
            "serial_required",
        ),
        ("<invoice/>", "invalid_invoice"),
        ("<order/>", "invalid_invoice"),
        (
            "<invoice><payments><payment><method>Cash</method><amount>1.234</amount>"
            "</payment></payments></invoice>",
            "invalid_invoice",
        ),
        ("not xml", "invalid_xml"),
        (
            '<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><invoice>&b;</invoice>',
            "invalid_xml",
        ),
    ],
)
async def test_bad_invoices_are_refused(
    sim: OnSiteSimulator, http: httpx.AsyncClient, body: str, code: str
) -> None:
    async with asyncio.timeout(5):
        response = await http.post("/api/invoices/", content=body)
    assert response.status_code == 400
    assert root_of(response).findtext("code") == code
    assert sim.invoices == {}


async def test_list_paging_total_count_and_filters(
    sim: OnSiteSimulator, http: httpx.AsyncClient
) -> None:
    ids = [sim.sell_gift_card_in_store(f"C{n:03d}", Decimal("1.00")) for n in range(7)]
    page = await http.get("/api/invoices/", params={"count": 3, "offset": 3})
    root = root_of(page)
    assert root.get("total_count") == "7"
    assert [item.get("id") for item in root.findall("invoice")] == ids[3:6]
    cutoff = sim.invoices[ids[5]].modified_at.isoformat()
    newer = root_of(
        await http.get("/api/invoices/", params={"filter": f'(date_modified >= "{cutoff}")'})
    )
    assert [item.get("id") for item in newer.findall("invoice")] == ids[5:]
    client_invoice = await http.post(
        "/api/invoices/", content=LOAD.format(ref='we "quote"', serial="Q1", amount="2.00")
    )
    found = root_of(
        await http.get(
            "/api/invoices/",
            params={"filter": f'(reference == "we \\"quote\\"") AND (date_modified >= "{cutoff}")'},
        )
    )
    assert [item.get("id") for item in found.findall("invoice")] == [
        root_of(client_invoice).get("id")
    ]
    bad = await http.get("/api/invoices/", params={"filter": '(secret == "x")'})
    assert bad.status_code == 400
    assert (await http.get("/api/invoices/", params={"count": "x"})).status_code == 400


async def test_ignore_filters_plays_a_server_that_ignores_them() -> None:
    sim = OnSiteSimulator(username=USER, password=PASSWORD, private_id=PAPPID, ignore_filters=True)
    for n in range(3):
        sim.sell_gift_card_in_store(f"C{n}", Decimal("1.00"))
    async with httpx.AsyncClient(
        base_url=BASE, transport=httpx.ASGITransport(app=sim.app), headers=AUTH
    ) as http:
        root = root_of(await http.get("/api/invoices/", params={"filter": '(reference == "x")'}))
    assert root.get("total_count") == "3"


async def test_customers_search_by_email_and_get(
    sim: OnSiteSimulator, http: httpx.AsyncClient
) -> None:
    ada = sim.add_customer("Ada", "Lovelace", "ada@example.com")
    sim.add_customer("Grace", "Hopper", "grace@example.com")
    found = root_of(
        await http.get("/api/customers/", params={"filter": '(email == "ADA@example.com")'})
    )
    assert [c.get("id") for c in found.findall("customer")] == [ada]
    one = root_of(await http.get(f"/api/customers/{ada}/"))
    assert one.findtext("first_name") == "Ada"
    assert (await http.get("/api/customers/404/")).status_code == 404


def test_helpers_track_balances_and_refuse_overspend(sim: OnSiteSimulator) -> None:
    ada = sim.add_customer("Ada", "Lovelace", "ada@example.com")
    sold = sim.sell_gift_card_in_store("CARD9", Decimal("25.00"), ada)
    assert sim.invoices[sold].customer_id == ada
    sim.redeem_in_store("CARD9", Decimal("20.00"))
    assert sim.balance("CARD9") == Decimal("5.00")
    with pytest.raises(ValueError, match="balance"):
        sim.redeem_in_store("CARD9", Decimal("5.01"))
    assert sim.balance("CARD9") == Decimal("5.00")
    assert sim.balance("UNKNOWN") == Decimal(0)


def test_seed_demo_describes_cards_without_secrets(sim: OnSiteSimulator) -> None:
    lines = sim.seed_demo()
    assert any("ONSITE0001" in line and "50.00" in line for line in lines)
    assert any("ONSITE0002" in line and "70.00" in line for line in lines)
    joined = "\n".join(lines) + repr(sim)
    assert PASSWORD not in joined and PAPPID not in joined


async def test_faults_throttle_errors_and_lost_answers(
    sim: OnSiteSimulator, http: httpx.AsyncClient
) -> None:
    switched = await http.post("/_sim/faults", json={"force_throttle": True})
    assert switched.status_code == 200
    throttled = await http.get("/api/products/")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    await http.post("/_sim/faults", json={"force_throttle": False, "error_rate": 1.0})
    assert (
        await http.post("/api/invoices/", content=LOAD.format(ref="e", serial="E", amount="1.00"))
    ).status_code == 503
    assert sim.invoices == {}
    sim.faults.update({"error_rate": 0.0, "lose_answer_rate": 1.0})
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await http.post(
                "/api/invoices/", content=LOAD.format(ref="lost", serial="L", amount="4.00")
            )
    # Applied, only the answer was lost.
    assert len(sim.invoices_with_reference("lost")) == 1
    assert sim.balance("L") == Decimal("4.00")


def test_faults_given_at_start_are_used() -> None:
    faults = Faults(error_rate=1.0)
    assert OnSiteSimulator(faults=faults).faults is faults
