"""OnSite client: wire details with respx, behaviour against the simulator."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import respx
from structlog.testing import capture_logs

from app.clients.onsite import (
    OnSiteAuthError,
    OnSiteClient,
    OnSiteCustomer,
    OnSiteError,
    OnSiteGiftCardLine,
    OnSiteGiftCardPayment,
    OnSiteUnavailable,
    OnSiteUnknownOutcome,
)
from app.sandbox.faults import Faults
from app.sandbox.onsite import OnSiteSimulator
from app.settings import Settings

BASE = "https://onsite.test:9630"
USER = "clerk"
PASSWORD = "pw-Zq8!onsite-not-logged"
PAPPID = "pappid-7f3e9c1d-private"
APP_ID = "com.example.giftsync"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def make_sim(**kwargs: object) -> OnSiteSimulator:
    return OnSiteSimulator(username=USER, password=PASSWORD, private_id=PAPPID, **kwargs)  # type: ignore[arg-type]


def make_client(
    sim: OnSiteSimulator | None = None,
    *,
    password: str = PASSWORD,
    private_id: str | None = PAPPID,
    **kwargs: object,
) -> OnSiteClient:
    transport = httpx.ASGITransport(app=sim.app) if sim is not None else None
    options: dict[str, object] = {"retry_base_delay": 0.0, "timeout": 2.0, **kwargs}
    return OnSiteClient(
        BASE,
        USER,
        password,
        APP_ID,
        private_id,
        transport=transport,
        **options,  # type: ignore[arg-type]
    )


def invoices_xml(body: str, total: int | None = None) -> str:
    attr = f' total_count="{total}"' if total is not None else ""
    return f'<?xml version="1.0"?><invoices{attr}>{body}</invoices>'


def invoice_xml(invoice_id: str, modified: str, reference: str = "", extra: str = "") -> str:
    return (
        f'<invoice id="{invoice_id}"><date_modified>{modified}</date_modified>'
        f"<reference>{reference}</reference>{extra}</invoice>"
    )


def xml_response(text: str, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status, content=text.encode(), headers={"Content-Type": "application/xml"}
    )


# --- headers, auth, session ---------------------------------------------------------------------


async def test_sends_private_id_user_agent_and_basic_auth() -> None:
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        route = mock.get("/api/invoices/").mock(return_value=xml_response(invoices_xml("", 0)))
        client = make_client()
        assert [invoice async for invoice in client.iter_invoices_since(None)] == []
        await client.aclose()
    request = route.calls.last.request
    assert request.headers["X-PAPPID"] == PAPPID
    name, _, version = request.headers["User-Agent"].partition("/")
    assert name == APP_ID and version
    expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert request.url.scheme == "https" and request.url.port == 9630


async def test_one_session_for_many_calls_and_logout_on_close() -> None:
    sim = make_sim()
    serial = "CARD0001"
    sim.sell_gift_card_in_store(serial, Decimal("20.00"))
    client = make_client(sim)
    for _ in range(5):
        assert await client.gift_card_balance(serial) == Decimal("20.00")
    await client.find_customer_by_email("nobody@example.com")
    await client.post_balance_move(serial, Decimal("5.00"), reference="r-1")
    assert sim.sessions_opened == 1
    assert sim.sessions_open == 1
    await client.aclose()
    assert sim.sessions_open == 0
    assert sim.logouts == 1
    assert ("POST", "/api/sessions/current/logout/") in sim.request_log


async def test_concurrent_first_calls_open_a_single_session() -> None:
    # Latency makes the calls overlap, as they would on the wire.
    sim = make_sim(faults=Faults(latency_ms=20))
    client = make_client(sim)
    await asyncio.gather(*(client.get_customer("1") for _ in range(8)))
    assert sim.sessions_opened == 1
    await client.aclose()


async def test_close_without_session_does_not_log_in_just_to_log_out() -> None:
    sim = make_sim()
    client = make_client(sim)
    await client.aclose()
    assert sim.sessions_opened == 0
    assert sim.request_log == []


async def test_expired_session_logs_in_again_once_and_retries_the_read() -> None:
    sim = make_sim()
    ada = sim.add_customer("Ada", "Lovelace", "ada@example.com")
    client = make_client(sim)
    assert await client.get_customer(ada) is not None
    sim.expire_sessions()
    customer = await client.get_customer(ada)
    assert customer is not None and customer.first_name == "Ada"
    assert sim.sessions_opened == 2
    assert sim.sessions_open == 1
    await client.aclose()


async def test_concurrent_reads_after_expiry_open_one_new_session() -> None:
    sim = make_sim(faults=Faults(latency_ms=20))
    client = make_client(sim)
    await client.get_customer("1")
    sim.expire_sessions()
    await asyncio.gather(*(client.get_customer("1") for _ in range(6)))
    assert sim.sessions_opened == 2
    assert sim.sessions_open == 1
    await client.aclose()
    assert sim.sessions_open == 0


async def test_expired_session_on_write_logs_in_again_and_applies_once() -> None:
    sim = make_sim()
    client = make_client(sim)
    await client.get_customer("1")
    sim.expire_sessions()
    # The reference look-up re-logs in itself; expire again between look-up and write.
    original_find = client.find_invoice_by_reference
    calls = 0

    async def find_then_expire(reference: str):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        found = await original_find(reference)
        if calls == 1:
            sim.expire_sessions()
        return found

    client.find_invoice_by_reference = find_then_expire  # type: ignore[method-assign]
    invoice_id = await client.post_balance_move("CARD0002", Decimal("10.00"), reference="r-exp")
    assert [inv.invoice_id for inv in sim.invoices_with_reference("r-exp")] == [invoice_id]
    # The 401 refused the write, so it is sent again at once: no second look-up is needed.
    assert calls == 1
    await client.aclose()


async def test_wrong_password_is_an_auth_error_without_the_password() -> None:
    sim = make_sim()
    client = make_client(sim, password="wrong-password-xyz")
    with pytest.raises(OnSiteAuthError) as caught:
        await client.get_customer("1")
    assert caught.value.code == "unauthorized"
    assert "wrong-password-xyz" not in str(caught.value)
    await client.aclose()


async def test_wrong_private_id_is_an_auth_error() -> None:
    sim = make_sim()
    client = make_client(sim, private_id="not-the-pappid")
    with pytest.raises(OnSiteAuthError) as caught:
        await client.get_customer("1")
    assert caught.value.code == "invalid_private_app_id"
    assert "not-the-pappid" not in str(caught.value)
    await client.aclose()


def test_from_settings_maps_every_onsite_setting() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        sandbox=True,
        onsite_base_url=BASE + "/",
        onsite_username=USER,
        onsite_password=PASSWORD,  # type: ignore[arg-type]
        onsite_app_id=APP_ID,
        onsite_private_id=PAPPID,  # type: ignore[arg-type]
        onsite_verify_tls=False,
    )
    client = OnSiteClient.from_settings(settings)
    assert client.base_url == BASE
    assert client.username == USER
    assert client.verify_tls is False
    assert client._http.headers["X-PAPPID"] == PAPPID
    assert client._http.headers["User-Agent"].startswith(f"{APP_ID}/")


def test_from_settings_names_missing_settings() -> None:
    settings = Settings(_env_file=None, sandbox=True)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="ONSITE_BASE_URL"):
        OnSiteClient.from_settings(settings)


# --- reading invoices ---------------------------------------------------------------------------


async def test_pages_through_250_invoices_with_count_and_offset() -> None:
    sim = make_sim()
    for number in range(250):
        sim.sell_gift_card_in_store(
            f"SER{number:05d}", Decimal("1.00"), at=T0 + timedelta(minutes=number)
        )
    client = make_client(sim)
    invoices = [invoice async for invoice in client.iter_invoices_since(None)]
    assert len(invoices) == 250
    assert len({invoice.invoice_id for invoice in invoices}) == 250
    assert {line.serial for inv in invoices for line in inv.lines} == {
        f"SER{n:05d}" for n in range(250)
    }
    await client.aclose()


async def test_paging_urls_on_the_wire() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        query = parse_qs(urlparse(str(request.url)).query)
        offset = int(query["offset"][0])
        size = min(int(query["count"][0]), 250 - offset)
        body = "".join(
            invoice_xml(str(offset + n), "2024-05-01T10:00:00+00:00") for n in range(size)
        )
        return xml_response(invoices_xml(body, 250))

    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/api/invoices/").mock(side_effect=page)
        client = make_client()
        invoices = [invoice async for invoice in client.iter_invoices_since(None)]
        await client.aclose()
    assert len(invoices) == 250
    queries = [parse_qs(urlparse(str(call.request.url)).query) for call in route.calls]
    assert [(q["count"][0], q["offset"][0]) for q in queries] == [
        ("100", "0"),
        ("100", "100"),
        ("100", "200"),
    ]
    assert all("filter" not in q for q in queries)


async def test_paging_stops_on_short_page_without_total_count() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/api/invoices/").mock(
            return_value=xml_response(invoices_xml(invoice_xml("1", "2024-05-01T10:00:00")))
        )
        client = make_client()
        invoices = [invoice async for invoice in client.iter_invoices_since(None)]
        await client.aclose()
    assert [invoice.invoice_id for invoice in invoices] == ["1"]
    assert route.call_count == 1


@pytest.mark.parametrize("ignore_filters", [False, True])
async def test_since_cursor_returns_only_invoices_modified_at_or_after_it(
    ignore_filters: bool,
) -> None:
    sim = make_sim(ignore_filters=ignore_filters)
    ids = [
        sim.sell_gift_card_in_store(f"CARD{n:04d}", Decimal("5.00"), at=T0 + timedelta(hours=n))
        for n in range(6)
    ]
    client = make_client(sim)
    since = T0 + timedelta(hours=2)
    found = [invoice async for invoice in client.iter_invoices_since(since)]
    assert [invoice.invoice_id for invoice in found] == ids[2:]
    assert all(invoice.modified_at >= since for invoice in found)
    await client.aclose()


async def test_since_filter_is_sent_and_naive_cursor_read_as_utc() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/api/invoices/").mock(return_value=xml_response(invoices_xml("", 0)))
        client = make_client()
        _ = [invoice async for invoice in client.iter_invoices_since(datetime(2024, 5, 1, 9, 0))]
        await client.aclose()
    query = parse_qs(urlparse(str(route.calls.last.request.url)).query)
    assert query["filter"] == ['(date_modified >= "2024-05-01T09:00:00+00:00")']
    assert query["order_by"] == ["date_modified"]


async def test_parses_lines_and_payments_in_variant_shapes() -> None:
    variant = """<?xml version="1.0"?>
    <invoices><total_count>1</total_count>
      <invoice><id>77</id>
        <datetime_modified>2024-05-02 10:30:00</datetime_modified>
        <customer><id>42</id></customer>
        <po_number>ext-9</po_number>
        <line_items>
          <line_item><product><name>GiftCard Reload</name></product>
            <serial_number>ABC12345</serial_number><sell_price>10.50</sell_price><qty>2</qty>
          </line_item>
          <line_item><product><code>giftcard</code></product>
            <description>anything</description><serial>DEF67890</serial><price>5</price>
          </line_item>
          <line_item><product><code>MUG</code></product><description>Mug</description>
            <price>12.00</price><quantity>1</quantity></line_item>
          <line_item><description>Gift Card</description><price>9.00</price></line_item>
        </line_items>
        <payments>
          <payment><payment_method><name>GIFT-CARD</name></payment_method>
            <amount>7.25</amount><serial>XYZ99999</serial></payment>
          <payment><type>gift card</type><total>1.00</total><reference>ABC12345</reference></payment>
          <payment><method>Cash</method><amount>3.00</amount><reference>till 2</reference></payment>
        </payments>
      </invoice>
    </invoices>"""
    with respx.mock(base_url=BASE) as mock:
        mock.get("/api/invoices/").mock(return_value=xml_response(variant))
        client = make_client()
        with capture_logs() as logs:
            [invoice] = [invoice async for invoice in client.iter_invoices_since(None)]
        await client.aclose()
    assert invoice.invoice_id == "77"
    assert invoice.modified_at == datetime(2024, 5, 2, 10, 30, tzinfo=UTC)
    assert invoice.customer_id == "42"
    assert invoice.reference == "ext-9"
    assert invoice.lines == [
        OnSiteGiftCardLine("ABC12345", Decimal("21.00")),
        OnSiteGiftCardLine("DEF67890", Decimal("5")),
    ]
    assert invoice.payments == [
        OnSiteGiftCardPayment("XYZ99999", Decimal("7.25")),
        OnSiteGiftCardPayment("ABC12345", Decimal("1.00")),
    ]
    # The gift card line without a serial cannot be mapped: dropped, and said so.
    warnings = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
    assert warnings == ["onsite_gift_card_line_without_serial"]


async def test_parses_the_simulator_shape_with_customer_attribute() -> None:
    sim = make_sim()
    ada = sim.add_customer("Ada", "Lovelace", "ada@example.com")
    sim.sell_gift_card_in_store("CARD7777", Decimal("30.00"), ada)
    sim.redeem_in_store("CARD7777", Decimal("12.50"))
    client = make_client(sim)
    sold, redeemed = [invoice async for invoice in client.iter_invoices_since(None)]
    assert sold.customer_id == ada
    assert sold.lines == [OnSiteGiftCardLine("CARD7777", Decimal("30.00"))]
    assert sold.payments == []
    assert redeemed.lines == []
    assert redeemed.payments == [OnSiteGiftCardPayment("CARD7777", Decimal("12.50"))]
    await client.aclose()


# --- writing balance moves ----------------------------------------------------------------------


async def test_load_and_redeem_are_written_as_invoices() -> None:
    sim = make_sim()
    ada = sim.add_customer("Ada", "Lovelace", "ada@example.com")
    client = make_client(sim)
    load_id = await client.post_balance_move(
        "WEB00001", Decimal("40.00"), reference="order:1:load", customer_id=ada, note="#1001"
    )
    redeem_id = await client.post_balance_move(
        "WEB00001", Decimal("-15.25"), reference="order:2:redeem"
    )
    assert load_id != redeem_id
    assert sim.balance("WEB00001") == Decimal("24.75")
    assert await client.gift_card_balance("WEB00001") == Decimal("24.75")
    load = await client.find_invoice_by_reference("order:1:load")
    assert load is not None
    assert load.customer_id == ada
    assert load.lines == [OnSiteGiftCardLine("WEB00001", Decimal("40.00"))]
    assert load.payments == []
    assert sim.invoices[load_id].notes == "#1001"
    redeem = await client.find_invoice_by_reference("order:2:redeem")
    assert redeem is not None
    assert redeem.lines == []
    assert redeem.payments == [OnSiteGiftCardPayment("WEB00001", Decimal("15.25"))]
    await client.aclose()


async def test_write_body_on_the_wire() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/api/invoices/").mock(return_value=xml_response(invoices_xml("", 0)))
        post = mock.post("/api/invoices/").mock(
            return_value=xml_response(invoice_xml("501", "2024-05-01T10:00:00Z", "ref-1"), 201)
        )
        client = make_client()
        assert await client.post_balance_move("SER1", Decimal("-2.50"), reference="ref-1") == "501"
        await client.aclose()
    request = post.calls.last.request
    assert request.headers["Content-Type"] == "application/xml"
    body = request.content.decode()
    assert "<reference>ref-1</reference>" in body
    assert (
        "<payment><method>Gift Card</method><amount>2.50</amount><reference>SER1</reference>"
        in body
    )


async def test_redeem_above_balance_is_rejected_with_the_server_code() -> None:
    sim = make_sim()
    sim.sell_gift_card_in_store("CARD0003", Decimal("10.00"))
    client = make_client(sim)
    with pytest.raises(OnSiteError) as caught:
        await client.post_balance_move("CARD0003", Decimal("-10.01"), reference="too-much")
    assert caught.value.code == "insufficient_balance"
    assert sim.balance("CARD0003") == Decimal("10.00")
    await client.aclose()


async def test_same_reference_twice_applies_once() -> None:
    sim = make_sim()
    client = make_client(sim)
    first = await client.post_balance_move("CARD0004", Decimal("25.00"), reference="job-1")
    second = await client.post_balance_move("CARD0004", Decimal("25.00"), reference="job-1")
    assert first == second
    assert len(sim.invoices_with_reference("job-1")) == 1
    assert sim.balance("CARD0004") == Decimal("25.00")
    await client.aclose()


async def test_lost_answer_is_resolved_by_reference_and_retry_applies_nothing_more() -> None:
    faults = Faults(lose_answer_rate=1.0)
    sim = make_sim(faults=faults)
    client = make_client(sim, timeout=0.3)
    invoice_id = await client.post_balance_move("CARD0005", Decimal("60.00"), reference="job-lost")
    assert [inv.invoice_id for inv in sim.invoices_with_reference("job-lost")] == [invoice_id]
    # The caller retries with the same reference (e.g. its job was re-run).
    again = await client.post_balance_move("CARD0005", Decimal("60.00"), reference="job-lost")
    assert again == invoice_id
    assert len(sim.invoices_with_reference("job-lost")) == 1
    assert sim.balance("CARD0005") == Decimal("60.00")
    await client.aclose()


async def test_unresolvable_lost_answer_is_unknown_outcome_then_retry_finds_it() -> None:
    applied = invoice_xml("900", "2024-05-01T10:00:00Z", "job-x")
    with respx.mock(base_url=BASE) as mock:
        lookups = mock.get("/api/invoices/").mock(
            side_effect=[
                xml_response(invoices_xml("", 0)),  # before sending
                xml_response(invoices_xml("", 0)),  # after the lost answer: not visible yet
                xml_response(invoices_xml(applied, 1)),  # the caller's retry
            ]
        )
        post = mock.post("/api/invoices/").mock(side_effect=httpx.ReadTimeout("lost"))
        client = make_client()
        with pytest.raises(OnSiteUnknownOutcome) as caught:
            await client.post_balance_move("SER2", Decimal("5.00"), reference="job-x")
        assert caught.value.reference == "job-x"
        assert await client.post_balance_move("SER2", Decimal("5.00"), reference="job-x") == "900"
        await client.aclose()
    assert post.call_count == 1
    assert lookups.call_count == 3


async def test_503_on_write_was_not_sent_and_is_sent_again_without_a_look_up() -> None:
    with respx.mock(base_url=BASE) as mock:
        lookups = mock.get("/api/invoices/").mock(return_value=xml_response(invoices_xml("", 0)))
        post = mock.post("/api/invoices/").mock(
            side_effect=[
                xml_response("<error><code>busy</code></error>", 503),
                xml_response(invoice_xml("77", "2024-05-01T10:00:00Z", "j"), 201),
            ]
        )
        client = make_client()
        assert await client.post_balance_move("S", Decimal("1.00"), reference="j") == "77"
        await client.aclose()
    assert post.call_count == 2
    assert lookups.call_count == 1  # before the first send only


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("full")],
    ids=["connect", "connect-timeout", "pool"],
)
async def test_a_write_never_sent_is_sent_again(failure: Exception) -> None:
    with respx.mock(base_url=BASE) as mock:
        lookups = mock.get("/api/invoices/").mock(return_value=xml_response(invoices_xml("", 0)))
        post = mock.post("/api/invoices/").mock(
            side_effect=[failure, xml_response(invoice_xml("78", "2024-05-01T10:00:00Z", "k"), 201)]
        )
        client = make_client()
        assert await client.post_balance_move("S", Decimal("1.00"), reference="k") == "78"
        await client.aclose()
    assert post.call_count == 2
    assert lookups.call_count == 1


async def test_500_on_write_is_not_blindly_resent() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/api/invoices/").mock(return_value=xml_response(invoices_xml("", 0)))
        post = mock.post("/api/invoices/").mock(return_value=xml_response("<error/>", 500))
        client = make_client()
        with pytest.raises(OnSiteUnknownOutcome):
            await client.post_balance_move("S", Decimal("1.00"), reference="j")
        await client.aclose()
    assert post.call_count == 1


@pytest.mark.parametrize("amount", [Decimal(0), Decimal("1.001"), Decimal("NaN")])
async def test_bad_amounts_are_refused_before_any_request(amount: Decimal) -> None:
    sim = make_sim()
    client = make_client(sim)
    with pytest.raises(ValueError):
        await client.post_balance_move("S", amount, reference="r")
    assert sim.request_log == []
    await client.aclose()


# --- customers and balances ---------------------------------------------------------------------


async def test_customers_by_email_and_id() -> None:
    sim = make_sim()
    sim.add_customer("Ada", "Lovelace", "ada@example.com")
    grace = sim.add_customer("Grace", "Hopper", "Grace@Example.com")
    client = make_client(sim)
    assert await client.find_customer_by_email("grace@example.COM") == OnSiteCustomer(
        grace, "Grace@Example.com", "Grace", "Hopper"
    )
    assert await client.find_customer_by_email("nobody@example.com") is None
    assert (await client.get_customer(grace)) == OnSiteCustomer(
        grace, "Grace@Example.com", "Grace", "Hopper"
    )
    assert await client.get_customer("999") is None
    await client.aclose()


async def test_customer_variant_with_nested_name_and_emails() -> None:
    body = (
        '<customer id="5"><name><first>Kim</first><last>Lee</last></name>'
        "<emails><email>kim@example.com</email></emails></customer>"
    )
    with respx.mock(base_url=BASE) as mock:
        mock.get("/api/customers/5/").mock(return_value=xml_response(body))
        client = make_client()
        assert await client.get_customer("5") == OnSiteCustomer(
            "5", "kim@example.com", "Kim", "Lee"
        )
        await client.aclose()


async def test_balance_of_unknown_card_is_none() -> None:
    sim = make_sim()
    sim.sell_gift_card_in_store("CARD0006", Decimal("5.00"))
    client = make_client(sim)
    assert await client.gift_card_balance("NOPE0000") is None
    await client.aclose()


# --- failures -----------------------------------------------------------------------------------


async def test_reads_retry_on_5xx_then_succeed() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/api/customers/1/").mock(
            side_effect=[
                httpx.Response(503),
                httpx.ConnectError("refused"),
                xml_response('<customer id="1"><email>a@b.c</email></customer>'),
            ]
        )
        client = make_client()
        customer = await client.get_customer("1")
        await client.aclose()
    assert customer is not None and customer.email == "a@b.c"
    assert route.call_count == 3


async def test_reads_give_up_as_unavailable_after_every_attempt() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/api/customers/1/").mock(return_value=httpx.Response(429))
        client = make_client(read_attempts=3)
        with pytest.raises(OnSiteUnavailable) as caught:
            await client.get_customer("1")
        await client.aclose()
    assert route.call_count == 3
    assert caught.value.retry_after is None


async def test_a_retry_after_beyond_the_policy_is_passed_on_at_once() -> None:
    # This client's backoff is 0: any wait OnSite asks for is longer than it ever waits.
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/api/customers/1/").mock(
            return_value=httpx.Response(429, headers={"Retry-After": "7"})
        )
        client = make_client(read_attempts=3)
        with pytest.raises(OnSiteUnavailable) as caught:
            await client.get_customer("1")
        await client.aclose()
    assert route.call_count == 1
    assert caught.value.retry_after == 7.0


async def test_simulated_outage_becomes_unavailable() -> None:
    sim = make_sim(faults=Faults(error_rate=1.0))
    client = make_client(sim, read_attempts=2)
    with pytest.raises(OnSiteUnavailable):
        await client.get_customer("1")
    with pytest.raises(OnSiteUnavailable):
        await client.post_balance_move("S", Decimal("1.00"), reference="r")
    assert sim.invoices == {}
    await client.aclose()


async def test_4xx_maps_to_rejected_with_code() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/api/customers/").mock(
            return_value=xml_response(
                "<error><code>invalid_filter</code><message>no</message></error>", 400
            )
        )
        client = make_client()
        with pytest.raises(OnSiteError) as caught:
            await client.find_customer_by_email("a@b.c")
        await client.aclose()
    assert caught.value.code == "invalid_filter"
    assert not isinstance(caught.value, OnSiteAuthError)
    assert caught.value.upstream == "onsite"


async def test_garbage_is_unavailable() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/api/customers/1/").mock(return_value=xml_response("<customer><oops>"))
        client = make_client()
        with pytest.raises(OnSiteUnavailable):
            await client.get_customer("1")
        await client.aclose()


BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<invoices total_count="1"><invoice id="1"><date_modified>&lol9;</date_modified></invoice></invoices>"""


async def test_entity_bomb_is_a_clean_unavailable() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/api/invoices/").mock(return_value=xml_response(BOMB))
        client = make_client()
        async with asyncio.timeout(5):
            with pytest.raises(OnSiteUnavailable, match="XML"):
                _ = [invoice async for invoice in client.iter_invoices_since(None)]
        await client.aclose()


async def test_entity_bomb_in_a_write_answer_is_resolved_by_reference() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/api/invoices/").mock(return_value=xml_response(invoices_xml("", 0)))
        mock.post("/api/invoices/").mock(return_value=xml_response(BOMB, 201))
        client = make_client()
        async with asyncio.timeout(5):
            with pytest.raises(OnSiteUnknownOutcome):
                await client.post_balance_move("S", Decimal("1.00"), reference="bomb")
        await client.aclose()


# --- secrets ------------------------------------------------------------------------------------


async def test_secrets_stay_out_of_repr_errors_and_logs() -> None:
    sim = make_sim(faults=Faults(lose_answer_rate=1.0))
    client = make_client(sim, timeout=0.3)
    text_seen: list[str] = [repr(client), str(client.__dict__.get("_password"))]
    with capture_logs() as logs:
        await client.post_balance_move("CARD0008", Decimal("3.00"), reference="sec-1")
        bad = make_client(sim, password="another-Secret-pw-123")
        try:
            await bad.get_customer("1")
        except OnSiteAuthError as exc:
            text_seen.append(str(exc))
            text_seen.append(repr(exc))
        await bad.aclose()
        await client.aclose()
    text_seen.extend(repr(entry) for entry in logs)
    assert logs, "expected the lost answer to be logged"
    joined = "\n".join(text_seen)
    for secret in (PASSWORD, PAPPID, "another-Secret-pw-123"):
        assert secret not in joined
