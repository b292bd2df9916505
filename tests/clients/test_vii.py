"""Vii client on the wire (respx): exact XML, error mapping, retry rules, secrets kept out."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from defusedxml import ElementTree as SafeET
from pydantic import SecretStr

import app.clients.vii.client as vii_module
from app.clients.errors import UnknownOutcome, UpstreamRejected, UpstreamUnavailable
from app.clients.vii import (
    ViiAuthFailed,
    ViiCardInactive,
    ViiClient,
    ViiError,
    ViiHoldNotFound,
    ViiInsufficientFunds,
    ViiInvalidPin,
    ViiUnavailable,
    ViiUnknownCard,
    ViiUnknownOutcome,
)
from tests.conftest import make_settings

URL = "https://vii.example.test/api/gateway"
CARD = "6280009876543210"
PIN = "97531864"
USER = "shop-user"
PASSWORD = "shop-password-xyz"
STORE = "STORE-42"


def answer(code: str = "0", message: str = "Approved", **fields: str) -> httpx.Response:
    parts = "".join(f"<{name}>{value}</{name}>" for name, value in fields.items())
    body = (
        f"<?xml version='1.0' encoding='utf-8'?><Response><ResponseCode>{code}</ResponseCode>"
        f"<ResponseMessage>{message}</ResponseMessage>{parts}</Response>"
    )
    return httpx.Response(200, content=body.encode(), headers={"Content-Type": "text/xml"})


BALANCE_FIELDS = {
    "CardNumber": CARD,
    "AvailableBalance": "80.00",
    "CurrentBalance": "100.00",
    "ExpiryDate": "31/12/2027 11:59:59 PM",
    "CardStatusId": "1",
}


def expected_xml(request_type: str, tran_id: str, body: list[tuple[str, str]]) -> bytes:
    header = (
        f"<RequestType>{request_type}</RequestType><viiUserName>{USER}</viiUserName>"
        f"<viiPassword>{PASSWORD}</viiPassword><viiTranId>{tran_id}</viiTranId>"
        f"<StoreId>{STORE}</StoreId>"
    )
    rest = "".join(f"<{name}>{value}</{name}>" for name, value in body)
    return f"<?xml version='1.0' encoding='utf-8'?>\n<Request>{header}{rest}</Request>".encode()


def sent(route: respx.Route, index: int = -1) -> tuple[httpx.Request, dict[str, str]]:
    request = route.calls[index].request
    root = SafeET.fromstring(request.content)
    return request, {child.tag: child.text or "" for child in root}


@pytest.fixture
async def vii() -> AsyncIterator[ViiClient]:
    client = ViiClient(URL, USER, PASSWORD, STORE, timeout=1.0, backoff=0.0)
    yield client
    await client.aclose()


@pytest.fixture
def mock() -> AsyncIterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


# --- exact wire ----------------------------------------------------------------------------


async def test_check_balance_sends_exact_xml_and_reads_the_answer(
    vii: ViiClient, mock: respx.MockRouter
) -> None:
    route = mock.post(URL).mock(return_value=answer(**BALANCE_FIELDS))
    balance = await vii.check_balance(CARD, PIN)
    request, fields = sent(route)
    assert request.headers["Content-Type"] == "text/xml"
    assert re.fullmatch(r"[0-9a-f]{32}", fields["viiTranId"])
    assert request.content == expected_xml(
        "CheckBalance", fields["viiTranId"], [("CardNumber", CARD), ("PIN", PIN)]
    )
    assert balance.card_last4 == "3210"
    assert balance.available == Decimal("80.00") and balance.current == Decimal("100.00")
    assert balance.status_id == "1"
    assert balance.expires_at == datetime(2027, 12, 31, 23, 59, 59)


async def test_a_balance_with_sub_cent_digits_is_cut_down_to_whole_cents(
    vii: ViiClient, mock: respx.MockRouter
) -> None:
    fields = {**BALANCE_FIELDS, "AvailableBalance": "12.349", "CurrentBalance": "20.005"}
    mock.post(URL).mock(return_value=answer(**fields))
    balance = await vii.check_balance(CARD, PIN)
    assert (balance.available, balance.current) == (Decimal("12.34"), Decimal("20.00"))


async def test_pre_auth_sends_exact_xml_and_uses_the_chosen_tran_id(
    vii: ViiClient, mock: respx.MockRouter
) -> None:
    route = mock.post(URL).mock(
        return_value=answer(**BALANCE_FIELDS, Amount="20.00", PreAuthCode="PA777")
    )
    tran_id = ViiClient.new_tran_id()
    hold = await vii.pre_auth(CARD, PIN, Decimal("20"), "checkout-1", tran_id=tran_id)
    request, _ = sent(route)
    assert request.content == expected_xml(
        "PreAuthRequest",
        tran_id,
        [
            ("CardNumber", CARD),
            ("PIN", PIN),
            ("Amount", "20.00"),
            ("ExternalReference", "checkout-1"),
        ],
    )
    assert hold.pre_auth_code == "PA777" and hold.amount == Decimal("20")
    assert hold.available == Decimal("80.00") and hold.tran_id == tran_id


async def test_redeem_sends_exact_xml_with_and_without_pre_auth_code(
    vii: ViiClient, mock: respx.MockRouter
) -> None:
    route = mock.post(URL).mock(return_value=answer(**BALANCE_FIELDS, Amount="12.50"))
    capture = await vii.redeem(CARD, PIN, Decimal("12.50"), "order-9", pre_auth_code="PA777")
    assert route.calls[0].request.content == expected_xml(
        "Redemption",
        capture.tran_id,
        [
            ("CardNumber", CARD),
            ("PIN", PIN),
            ("Amount", "12.50"),
            ("ExternalReference", "order-9"),
            ("PreAuthCode", "PA777"),
        ],
    )
    direct = await vii.redeem(CARD, PIN, Decimal("5.00"), "order-10")
    assert route.calls[1].request.content == expected_xml(
        "Redemption",
        direct.tran_id,
        [("CardNumber", CARD), ("PIN", PIN), ("Amount", "5.00"), ("ExternalReference", "order-10")],
    )
    assert capture.tran_id != direct.tran_id
    assert capture.amount == Decimal("12.50") and capture.available == Decimal("80.00")


async def test_cancel_and_undo_send_exact_xml(vii: ViiClient, mock: respx.MockRouter) -> None:
    route = mock.post(URL).mock(
        side_effect=[
            answer(message="Pre-auth cancelled", PreAuthCode="PA777"),
            answer(message="Ok - Transaction Reversed"),
            answer(message="Ok - No Transaction to reverse"),
        ]
    )
    await vii.cancel_pre_auth(CARD, "PA777", "checkout-1")
    _, cancel = sent(route, 0)
    assert route.calls[0].request.content == expected_xml(
        "PreAuthCancellation",
        cancel["viiTranId"],
        [("CardNumber", CARD), ("ExternalReference", "checkout-1"), ("PreAuthCode", "PA777")],
    )
    assert await vii.undo(CARD, "abc123") is True
    _, undo = sent(route, 1)
    assert route.calls[1].request.content == expected_xml(
        "Undo", undo["viiTranId"], [("CardNumber", CARD), ("viiTranIdToUndo", "abc123")]
    )
    assert await vii.undo(CARD, "abc123") is False
    tran_ids = {sent(route, i)[1]["viiTranId"] for i in range(3)}
    assert len(tran_ids) == 3


async def test_undo_reports_nothing_to_reverse_even_with_a_non_zero_code(
    vii: ViiClient, mock: respx.MockRouter
) -> None:
    mock.post(URL).mock(return_value=answer(code="12", message="No transaction to reverse"))
    assert await vii.undo(CARD, "abc") is False


async def test_values_are_xml_escaped(mock: respx.MockRouter) -> None:
    client = ViiClient(URL, "u<&>", 'p"&<', STORE, backoff=0.0)
    route = mock.post(URL).mock(return_value=answer(**BALANCE_FIELDS, PreAuthCode="X1"))
    await client.pre_auth(CARD, PIN, Decimal("1.00"), "<ref>&'\"")
    await client.aclose()
    _, fields = sent(route)
    assert fields["viiUserName"] == "u<&>" and fields["viiPassword"] == 'p"&<'
    assert fields["ExternalReference"] == "<ref>&'\""
    assert b"<ref>" not in route.calls.last.request.content


@pytest.mark.parametrize(
    "amount", [Decimal("1.005"), Decimal("-1.00"), Decimal("0"), Decimal("NaN")]
)
async def test_bad_amounts_never_reach_the_wire(
    vii: ViiClient, mock: respx.MockRouter, amount: Decimal
) -> None:
    route = mock.post(URL).mock(return_value=answer(**BALANCE_FIELDS, PreAuthCode="X"))
    with pytest.raises(ValueError):
        await vii.pre_auth(CARD, PIN, amount, "r")
    with pytest.raises(ValueError):
        await vii.redeem(CARD, PIN, amount, "r")
    assert route.call_count == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("31/12/2027 11:59:59 PM", datetime(2027, 12, 31, 23, 59, 59)),
        ("01/02/2027 09:05:00 AM", datetime(2027, 2, 1, 9, 5, 0)),
        ("31/12/2027 23:59:59 PM", datetime(2027, 12, 31, 23, 59, 59)),  # Magento's H:i:s A
        ("31/12/2027 23:59:59", datetime(2027, 12, 31, 23, 59, 59)),
        ("not a date", None),
    ],
)
async def test_expiry_date_formats(
    vii: ViiClient, mock: respx.MockRouter, raw: str, expected: datetime | None
) -> None:
    mock.post(URL).mock(return_value=answer(**{**BALANCE_FIELDS, "ExpiryDate": raw}))
    assert (await vii.check_balance(CARD, PIN)).expires_at == expected


# --- error mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("1", ViiInvalidPin),
        ("2", ViiInsufficientFunds),
        ("3", ViiCardInactive),
        ("4", ViiUnknownCard),
        ("5", ViiAuthFailed),
        ("6", ViiHoldNotFound),
    ],
)
async def test_code_table_when_the_message_says_nothing(
    vii: ViiClient, mock: respx.MockRouter, code: str, error: type[ViiError]
) -> None:
    mock.post(URL).mock(return_value=answer(code=code, message="Declined"))
    with pytest.raises(error) as caught:
        await vii.check_balance(CARD, PIN)
    assert caught.value.code == code
    assert isinstance(caught.value, UpstreamRejected) and caught.value.upstream == "vii"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("Invalid PIN", ViiInvalidPin),
        ("Incorrect pin entered", ViiInvalidPin),
        ("Insufficient Funds", ViiInsufficientFunds),
        ("Amount exceeds available balance", ViiInsufficientFunds),
        ("Card is INACTIVE", ViiCardInactive),
        ("Card not active", ViiCardInactive),
        ("Card blocked", ViiCardInactive),
        ("Card Expired", ViiCardInactive),
        ("Card not found", ViiUnknownCard),
        ("Invalid card number", ViiUnknownCard),
        ("Unknown card", ViiUnknownCard),
        ("Authentication failed", ViiAuthFailed),
        ("Invalid login", ViiAuthFailed),
        ("Bad credentials", ViiAuthFailed),
        ("Invalid user", ViiAuthFailed),
        ("PreAuth not found", ViiHoldNotFound),
        ("Pre-Auth code invalid", ViiHoldNotFound),
    ],
)
async def test_message_keywords_map_errors_whatever_the_code(
    vii: ViiClient, mock: respx.MockRouter, message: str, error: type[ViiError]
) -> None:
    mock.post(URL).mock(return_value=answer(code="E77", message=message, AvailableBalance="3.00"))
    with pytest.raises(error) as caught:
        await vii.check_balance(CARD, PIN)
    assert type(caught.value) is error and caught.value.code == "E77"


async def test_unknown_code_is_a_plain_vii_error_with_the_code(
    vii: ViiClient, mock: respx.MockRouter
) -> None:
    mock.post(URL).mock(return_value=answer(code="42", message="Something odd"))
    with pytest.raises(ViiError) as caught:
        await vii.check_balance(CARD, PIN)
    assert type(caught.value) is ViiError and caught.value.code == "42"
    assert "Something odd" in str(caught.value) and "3210" in str(caught.value)


async def test_insufficient_funds_carries_the_available_balance(
    vii: ViiClient, mock: respx.MockRouter
) -> None:
    route = mock.post(URL).mock(
        return_value=answer(code="2", message="Insufficient funds", AvailableBalance="37.25")
    )
    with pytest.raises(ViiInsufficientFunds) as caught:
        await vii.pre_auth(CARD, PIN, Decimal("50.00"), "r")
    assert caught.value.available == Decimal("37.25")
    assert route.call_count == 1


async def test_amount_above_balance_reads_as_insufficient_funds(
    vii: ViiClient, mock: respx.MockRouter
) -> None:
    # What the Magento integration relies on: a bare decline with Amount > AvailableBalance.
    mock.post(URL).mock(
        return_value=answer(code="99", message="Declined", Amount="80.00", AvailableBalance="30.00")
    )
    with pytest.raises(ViiInsufficientFunds) as caught:
        await vii.pre_auth(CARD, PIN, Decimal("80.00"), "r")
    assert caught.value.available == Decimal("30.00")


async def test_http_401_is_an_auth_failure(vii: ViiClient, mock: respx.MockRouter) -> None:
    mock.post(URL).mock(return_value=httpx.Response(401, text="Unauthorized"))
    with pytest.raises(ViiAuthFailed):
        await vii.check_balance(CARD, PIN)


# --- retries and the stored-value timeout rule ---------------------------------------------


async def test_check_balance_is_retried_then_succeeds(
    vii: ViiClient, mock: respx.MockRouter
) -> None:
    route = mock.post(URL).mock(
        side_effect=[httpx.Response(503), httpx.ReadTimeout("slow"), answer(**BALANCE_FIELDS)]
    )
    assert (await vii.check_balance(CARD, PIN)).available == Decimal("80.00")
    assert route.call_count == 3
    tran_ids = {sent(route, i)[1]["viiTranId"] for i in range(3)}
    assert len(tran_ids) == 3


@pytest.mark.parametrize(
    "failure",
    [httpx.Response(502), httpx.ConnectError("refused"), httpx.ReadTimeout("slow")],
    ids=["502", "connect", "timeout"],
)
@pytest.mark.parametrize("operation", ["balance", "cancel", "undo"])
async def test_safe_requests_give_up_after_a_few_attempts(
    vii: ViiClient, mock: respx.MockRouter, failure: Any, operation: str
) -> None:
    route = mock.post(URL).mock(side_effect=[failure] * 10)
    with pytest.raises(ViiUnavailable) as caught:
        if operation == "balance":
            await vii.check_balance(CARD, PIN)
        elif operation == "cancel":
            await vii.cancel_pre_auth(CARD, "PA1", "r")
        else:
            await vii.undo(CARD, "t1")
    assert isinstance(caught.value, UpstreamUnavailable)
    assert route.call_count == 3


async def test_declines_are_not_retried(vii: ViiClient, mock: respx.MockRouter) -> None:
    route = mock.post(URL).mock(return_value=answer(code="1", message="Invalid PIN"))
    with pytest.raises(ViiInvalidPin):
        await vii.check_balance(CARD, PIN)
    assert route.call_count == 1


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("dropped"),
        httpx.ReadError("reset"),
        httpx.WriteError("broken pipe"),
        httpx.Response(500),
        httpx.Response(502),
        httpx.Response(200, content=b"<html>oops</html>"),
    ],
    ids=["timeout", "dropped", "reset", "write", "500", "502", "garbage"],
)
@pytest.mark.parametrize("operation", ["pre_auth", "redeem"])
async def test_lost_answers_on_money_moves_are_unknown_outcomes_never_retried(
    vii: ViiClient, mock: respx.MockRouter, failure: Any, operation: str
) -> None:
    route = mock.post(URL).mock(side_effect=[failure] * 5)
    tran_id = ViiClient.new_tran_id()
    with pytest.raises(ViiUnknownOutcome) as caught:
        if operation == "pre_auth":
            await vii.pre_auth(CARD, PIN, Decimal("10.00"), "r", tran_id=tran_id)
        else:
            await vii.redeem(CARD, PIN, Decimal("10.00"), "r", tran_id=tran_id)
    assert isinstance(caught.value, UnknownOutcome)
    assert caught.value.reference == tran_id
    assert route.call_count == 1
    assert sent(route)[1]["viiTranId"] == tran_id


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("no connection"),
        httpx.PoolTimeout("no pooled connection"),
        httpx.Response(503),
        httpx.Response(429),
    ],
    ids=["connect", "connect-timeout", "pool", "503", "429"],
)
@pytest.mark.parametrize("operation", ["pre_auth", "redeem"])
async def test_money_moves_not_sent_are_sent_again_under_the_same_tran_id(
    vii: ViiClient, mock: respx.MockRouter, failure: Any, operation: str
) -> None:
    approved = answer(**BALANCE_FIELDS, PreAuthCode="PA9")
    route = mock.post(URL).mock(side_effect=[failure, failure, approved])
    tran_id = ViiClient.new_tran_id()
    if operation == "pre_auth":
        result: Any = await vii.pre_auth(CARD, PIN, Decimal("10.00"), "r", tran_id=tran_id)
    else:
        result = await vii.redeem(CARD, PIN, Decimal("10.00"), "r", tran_id=tran_id)
    assert result.tran_id == tran_id
    assert route.call_count == 3
    assert [sent(route, i)[1]["viiTranId"] for i in range(3)] == [tran_id] * 3


@pytest.mark.parametrize("operation", ["pre_auth", "redeem"])
async def test_money_moves_never_sent_give_up_as_plain_unavailable(
    vii: ViiClient, mock: respx.MockRouter, operation: str
) -> None:
    route = mock.post(URL).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ViiUnavailable) as caught:
        if operation == "pre_auth":
            await vii.pre_auth(CARD, PIN, Decimal("10.00"), "r")
        else:
            await vii.redeem(CARD, PIN, Decimal("10.00"), "r")
    assert not isinstance(caught.value, UnknownOutcome)
    assert route.call_count == 3


async def test_pre_auth_approved_without_a_code_is_an_unknown_outcome(
    vii: ViiClient, mock: respx.MockRouter
) -> None:
    mock.post(URL).mock(return_value=answer(**BALANCE_FIELDS))
    with pytest.raises(ViiUnknownOutcome) as caught:
        await vii.pre_auth(CARD, PIN, Decimal("10.00"), "r", tran_id="t-1")
    assert caught.value.reference == "t-1"


async def test_a_retry_after_beyond_the_policy_is_passed_on_without_waiting(
    vii: ViiClient, mock: respx.MockRouter
) -> None:
    # This client's backoff is 0: any wait Vii asks for is longer than it ever waits.
    route = mock.post(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "7"}))
    with pytest.raises(ViiUnavailable) as caught:
        await vii.pre_auth(CARD, PIN, Decimal("10.00"), "r")
    assert caught.value.retry_after == 7.0
    assert route.call_count == 1


# --- garbage -------------------------------------------------------------------------------

ENTITY_BOMB = b"""<?xml version="1.0"?>
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
<Response><ResponseCode>0</ResponseCode><ResponseMessage>&lol9;</ResponseMessage></Response>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Response><ResponseCode>0</ResponseCode><ResponseMessage>&x;</ResponseMessage></Response>"""


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Bad gateway</body></html>",
        b"not xml at all",
        b"",
        b"<Response><ResponseMessage>no code</ResponseMessage></Response>",
        b"<Response><ResponseCode>0</ResponseCode></Response>",  # no balances
        ENTITY_BOMB,
        EXTERNAL_ENTITY,
    ],
    ids=["html", "text", "empty", "no-code", "no-balance", "entity-bomb", "external-entity"],
)
async def test_garbage_answers_are_unavailable(
    vii: ViiClient, mock: respx.MockRouter, body: bytes
) -> None:
    mock.post(URL).mock(return_value=httpx.Response(200, content=body))
    with pytest.raises(ViiUnavailable):
        await vii.check_balance(CARD, PIN)


async def test_namespaced_or_wrapped_answers_are_read(
    vii: ViiClient, mock: respx.MockRouter
) -> None:
    body = (
        b'<Envelope xmlns="urn:x"><Response><ResponseCode>0</ResponseCode>'
        b"<AvailableBalance>1,234.50</AvailableBalance><CurrentBalance>$1,300.00</CurrentBalance>"
        b"</Response></Envelope>"
    )
    mock.post(URL).mock(return_value=httpx.Response(200, content=body))
    balance = await vii.check_balance(CARD, PIN)
    assert balance.available == Decimal("1234.50") and balance.current == Decimal("1300.00")


# --- secrets -------------------------------------------------------------------------------


class _RecordingLogger:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, _level: str) -> Any:
        def record(event: str, **fields: Any) -> None:
            self.records.append((event, fields))

        return record


async def test_pin_password_and_card_number_never_reach_logs_errors_or_reprs(
    mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _RecordingLogger()
    monkeypatch.setattr(vii_module, "log", recorder)
    vii = ViiClient(URL, USER, PASSWORD, STORE, timeout=1.0, backoff=0.0)
    mock.post(URL).mock(
        side_effect=[
            answer(**BALANCE_FIELDS),
            # A Vii that echoes what it was sent in its message.
            answer(code="1", message=f"Invalid PIN {PIN} for card {CARD}"),
            answer(code="2", message=f"Insufficient funds on {CARD}", AvailableBalance="1.00"),
            httpx.ReadTimeout("slow"),
            # Not sent twice, then an answer that cannot be read.
            httpx.Response(503),
            httpx.ConnectError("refused"),
            httpx.Response(200, content=ENTITY_BOMB),
        ]
        + [httpx.ConnectError("refused")] * 3
        + [answer(**BALANCE_FIELDS, PreAuthCode="PA1")]
        + [httpx.Response(503)] * 3
    )
    seen: list[object] = [vii]
    seen.append(await vii.check_balance(CARD, PIN))
    for call in (
        lambda: vii.check_balance(CARD, PIN),
        lambda: vii.pre_auth(CARD, PIN, Decimal("5.00"), "r"),
        lambda: vii.redeem(CARD, PIN, Decimal("5.00"), "r"),
        lambda: vii.redeem(CARD, PIN, Decimal("5.00"), "r"),
        lambda: vii.pre_auth(CARD, PIN, Decimal("5.00"), "r"),
    ):
        with pytest.raises((ViiError, ViiUnavailable, ViiUnknownOutcome)) as caught:
            await call()
        seen.extend([caught.value, caught.value.args, caught.value.__cause__])
    seen.append(await vii.pre_auth(CARD, PIN, Decimal("5.00"), "r"))
    with pytest.raises(ViiUnavailable) as caught_undo:
        await vii.undo(CARD, "t")
    seen.append(caught_undo.value)
    await vii.aclose()

    text = " ".join([*(f"{item!s} {item!r}" for item in seen), repr(recorder.records)])
    assert recorder.records, "the client logs its calls"
    for secret in (PIN, CARD, PASSWORD):
        assert secret not in text, secret
    assert "3210" in text  # the last 4 are what identifies a card


async def test_from_settings_uses_vii_settings(mock: respx.MockRouter) -> None:
    settings = make_settings(
        vii_base_url=URL,
        vii_username=USER,
        vii_password=SecretStr(PASSWORD),
        vii_store_id=STORE,
    )
    client = ViiClient.from_settings(settings)
    route = mock.post(URL).mock(return_value=answer(**BALANCE_FIELDS))
    await client.check_balance(CARD, PIN)
    await client.aclose()
    _, fields = sent(route)
    assert (fields["viiUserName"], fields["viiPassword"], fields["StoreId"]) == (
        USER,
        PASSWORD,
        STORE,
    )
    assert PASSWORD not in repr(client)
    with pytest.raises(ValueError, match="VII_BASE_URL"):
        ViiClient.from_settings(make_settings())
