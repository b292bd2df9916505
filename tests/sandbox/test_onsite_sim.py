"""OnSite simulator: sessions and seats, invoices as the only gift card record, faults.

Sources: onsite-docs.lightspeedhq.com `external_api` (getting started, invoices tutorial) and the
OnSite connector's `invoice.xml` (commercetools/sphere-lightspeed-onsite-connector). What no
source shows runs under each reading (`OnSiteReadings`).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import defusedxml.ElementTree as safe_xml
import httpx
import pytest

from app.sandbox.faults import Faults
from app.sandbox.onsite import SESSION_COOKIE, OnSiteReadings, OnSiteSimulator
from tests.pos_support import fixture_xml

BASE = "https://onsite.test:9630"
USER = "clerk"
PASSWORD = "sim-pw-4471"
PAPPID = "sim-pappid-01"
AUTH = {
    "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    "X-PAPPID": PAPPID,
}

BOTH = [OnSiteReadings.strict(), OnSiteReadings.lenient()]
BOTH_IDS = ["strict", "lenient"]
# The element names of a full invoice (invoice.xml); one POST holding them is UNCONFIRMED.
MOVE = (
    "<invoice><import_id>{ref}</import_id><lineitems><lineitem><quantity>{quantity}</quantity>"
    "<sell_price>{amount}</sell_price><lineitem_product><code>{code}</code></lineitem_product>"
    "<serial>{serial}</serial></lineitem></lineitems><payments><payment><method>{method}</method>"
    "<amount>{paid}</amount></payment></payments></invoice>"
)


def move(ref: str, serial: str, amount: str, *, quantity: str = "1", code: str = "GIFTCARD",
         method: str = "Shopify") -> str:  # fmt: skip
    paid = amount if quantity == "1" else f"-{amount}"
    return MOVE.format(ref=ref, serial=serial, amount=amount, quantity=quantity, code=code,
                       method=method, paid=paid)  # fmt: skip


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
    # invoices tutorial: logging out answers 204.
    assert out.status_code == 204
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
    created = await http.post("/api/invoices/", content=move("r1", "CARD1", "30.00"))
    assert created.status_code == 201
    invoice_id = root_of(created).get("id")
    assert created.headers["Location"].endswith(f"/api/invoices/{invoice_id}/")
    assert sim.balance("CARD1") == Decimal("30.00")
    paid_out = await http.post(
        "/api/invoices/", content=move("r2", "CARD1", "12.00", quantity="-1")
    )
    assert paid_out.status_code == 201
    assert sim.balance("CARD1") == Decimal("18.00")
    assert (await http.get("/api/invoices/99999/")).status_code == 404


async def test_a_list_holds_summaries_with_a_uri_like_the_tutorial(
    sim: OnSiteSimulator, http: httpx.AsyncClient
) -> None:
    customer = sim.add_customer("Ada", "Lovelace", "ada@example.com")
    sim.sell_gift_card_in_store("CARD1", Decimal("30.00"), customer)
    listed = root_of(await http.get("/api/invoices/", params={"count": 10, "offset": 0}))
    documented = safe_xml.fromstring(fixture_xml("invoices_list.xml"))
    [summary] = list(listed)
    assert listed.get("total_count") == "1"
    assert summary.get("full_render") == "false" and summary.get("uri", "").endswith(
        f"/api/invoices/{summary.get('id')}/"
    )
    assert [child.tag for child in summary] == [child.tag for child in documented[0]]
    # No lines, no payments, no modification date in a summary.
    for absent in ("lineitems", "payments", "datetime_modified"):
        assert summary.find(absent) is None
    assert summary.find("invoice_customer/customer").get("id") == customer


@pytest.mark.parametrize("readings", BOTH, ids=BOTH_IDS)
async def test_a_full_invoice_has_the_connectors_element_names(readings: OnSiteReadings) -> None:
    sim = OnSiteSimulator(username=USER, password=PASSWORD, private_id=PAPPID, readings=readings)
    invoice_id = sim.sell_gift_card_in_store("CARD1", Decimal("30.00"))
    async with httpx.AsyncClient(
        base_url=BASE, transport=httpx.ASGITransport(app=sim.app), headers=AUTH
    ) as http:
        full = root_of(await http.get(f"/api/invoices/{invoice_id}/"))
        line_uri = full.find("lineitems/lineitem").get("uri")
        payment_uri = full.find("payments/payment").get("uri")
        line = root_of(await http.get(line_uri.replace(sim.base_url, "")))
        payment = root_of(await http.get(payment_uri.replace(sim.base_url, "")))
    documented = safe_xml.fromstring(fixture_xml("invoice_full.xml"))
    for path in ("datetime_modified", "invoice_customer/customer", "import_id", "totals/total",
                 "lineitems/lineitem/sell_price", "lineitems/lineitem/quantity",
                 "lineitems/lineitem/lineitem_product/code", "payments/payment"):  # fmt: skip
        assert documented.find(path) is not None and full.find(path) is not None, path
    # Payments are references only; the line is not fully rendered.
    assert list(full.find("payments/payment")) == []
    assert full.find("lineitems/lineitem").get("full_render") == "false"
    assert full.find("lineitems/lineitem/lineitem_product/code").text == "GIFTCARD"
    inline = full.find("lineitems/lineitem/serial")
    assert (inline is not None) == (readings.serial_on_line == "inline")
    assert line.findtext("serial") == "CARD1"
    if readings.payment_names == "flat":
        assert (payment.findtext("method"), payment.findtext("amount")) == ("Cash", "30.00")
    else:
        assert (payment.findtext("payment_method/name"), payment.findtext("total")) == (
            "Cash",
            "30.00",
        )
    assert "." in full.findtext("datetime_modified") and "+" not in full.findtext(
        "datetime_modified"
    )


async def test_redeem_above_balance_is_refused_with_xml_error(
    sim: OnSiteSimulator, http: httpx.AsyncClient
) -> None:
    sim.sell_gift_card_in_store("CARD2", Decimal("10.00"))
    response = await http.post("/api/invoices/", content=move("r", "CARD2", "10.01", quantity="-1"))
    assert response.status_code == 409
    assert root_of(response).findtext("code") == "insufficient_balance"
    assert sim.balance("CARD2") == Decimal("10.00")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("not xml", "invalid_xml"),
        ("<order/>", "invalid_invoice"),
        ("<invoice/>", "invalid_invoice"),
        (move("r", "C1", "5.00", code="NOPE"), "unknown_product"),
        (move("r", "C1", "5.00", method="Bitcoin"), "unknown_payment_method"),
        (move("r", "", "5.00"), "serial_required"),
        (
            MOVE.format(
                ref="r",
                serial="C1",
                amount="5.00",
                quantity="1",
                code="GIFTCARD",
                method="Shopify",
                paid="4.00",
            ),
            "unbalanced",
        ),
    ],
)
async def test_bad_invoices_are_refused(
    sim: OnSiteSimulator, http: httpx.AsyncClient, body: str, code: str
) -> None:
    response = await http.post("/api/invoices/", content=body)
    assert response.status_code == 400
    assert root_of(response).findtext("code") == code
    assert sim.invoices == {}


@pytest.mark.parametrize("readings", BOTH, ids=BOTH_IDS)
async def test_filters_take_the_connectors_expressions(readings: OnSiteReadings) -> None:
    sim = OnSiteSimulator(username=USER, password=PASSWORD, private_id=PAPPID, readings=readings)
    sim.sell_gift_card_in_store(
        "CARD1", Decimal("1"), at=datetime(2024, 5, 1, 9, 0, 0, 500000, tzinfo=UTC)
    )
    sim.sell_gift_card_in_store("CARD2", Decimal("1"), at=datetime(2024, 5, 1, 10, 0, tzinfo=UTC))
    async with httpx.AsyncClient(
        base_url=BASE, transport=httpx.ASGITransport(app=sim.app), headers=AUTH
    ) as http:
        later = await http.get(
            "/api/invoices/", params={"filter": 'datetime_modified > "2024-05-01T09:00:00"'}
        )
        ranged = await http.get(
            "/api/invoices/", params={"filter": 'datetime_modified >= "2024-05-01T09:00:00"'}
        )
        guessed = await http.get(
            "/api/invoices/", params={"filter": '(date_modified >= "2024-05-01")'}
        )
        product = await http.get("/api/products/", params={"filter": 'code == "GIFTCARD"'})
    assert root_of(later).get("total_count") == "2"
    assert ranged.status_code == (200 if readings.range_operators else 400)
    assert guessed.status_code == 400
    assert [p.findtext("code") for p in root_of(product)] == ["GIFTCARD"]


@pytest.mark.parametrize("readings", BOTH, ids=BOTH_IDS)
async def test_payment_methods_per_reading(readings: OnSiteReadings) -> None:
    sim = OnSiteSimulator(username=USER, password=PASSWORD, private_id=PAPPID, readings=readings)
    async with httpx.AsyncClient(
        base_url=BASE, transport=httpx.ASGITransport(app=sim.app), headers=AUTH
    ) as http:
        answer = await http.get("/api/payment_methods/")
    if readings.payment_methods_resource:
        assert [m.findtext("name") for m in root_of(answer)] == list(sim.payment_methods)
        assert "Shopify" in sim.payment_methods
    else:
        assert answer.status_code == 404


async def test_ignore_filters_plays_a_server_that_ignores_them() -> None:
    sim = OnSiteSimulator(username=USER, password=PASSWORD, private_id=PAPPID, ignore_filters=True)
    sim.sell_gift_card_in_store("CARD1", Decimal("1"))
    async with httpx.AsyncClient(
        base_url=BASE, transport=httpx.ASGITransport(app=sim.app), headers=AUTH
    ) as http:
        answer = await http.get("/api/invoices/", params={"filter": 'import_id == "nothing"'})
    assert root_of(answer).get("total_count") == "1"


async def test_customers_search_by_email_and_get(
    sim: OnSiteSimulator, http: httpx.AsyncClient
) -> None:
    ada = sim.add_customer("Ada", "Lovelace", "ada@example.com")
    found = root_of(
        await http.get("/api/customers/", params={"filter": 'email == "ADA@example.com"'})
    )
    assert [c.get("id") for c in found] == [ada]
    one = root_of(await http.get(f"/api/customers/{ada}/"))
    assert one.findtext("first_name") == "Ada"
    assert (await http.get("/api/customers/999/")).status_code == 404


def test_helpers_track_balances_and_refuse_overspend(sim: OnSiteSimulator) -> None:
    sim.sell_gift_card_in_store("CARD9", Decimal("20.00"))
    sim.redeem_in_store("CARD9", Decimal("5.00"))
    assert sim.balance("CARD9") == Decimal("15.00")
    with pytest.raises(ValueError, match="too low"):
        sim.redeem_in_store("CARD9", Decimal("15.01"))
    assert sim.balance("CARD9") == Decimal("15.00")


def test_seed_demo_describes_cards_and_set_up(sim: OnSiteSimulator) -> None:
    lines = sim.seed_demo()
    assert any("ONSITE0002" in line and "70.00" in line for line in lines)
    joined = "\n".join(lines) + repr(sim)
    assert PASSWORD not in joined and PAPPID not in joined
    assert any("GIFTCARD" in line and "Shopify" in line for line in lines)
    assert sim.correct_set_up() == {
        "gift_card_product_code": "GIFTCARD",
        "payment_method": "Shopify",
    }


async def test_faults_throttle_errors_and_lost_answers(
    sim: OnSiteSimulator, http: httpx.AsyncClient
) -> None:
    switched = await http.post("/_sim/faults", json={"force_throttle": True})
    assert switched.status_code == 200
    throttled = await http.get("/api/products/")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    await http.post("/_sim/faults", json={"force_throttle": False, "error_rate": 1.0})
    assert (await http.post("/api/invoices/", content=move("e", "E", "1.00"))).status_code == 503
    assert sim.invoices == {}
    sim.faults.update({"error_rate": 0.0, "lose_answer_rate": 1.0})
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await http.post("/api/invoices/", content=move("lost", "L", "4.00"))
    # Applied, only the answer was lost.
    assert len(sim.invoices_with_reference("lost")) == 1
    assert sim.balance("L") == Decimal("4.00")


def test_faults_given_at_start_are_used() -> None:
    faults = Faults(latency_ms=1)
    assert OnSiteSimulator(faults=faults).faults is faults
