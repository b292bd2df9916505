"""`POST /webhooks/shopify` under duplicates, disorder, lateness and hostile requests.

Every refusal is a problem body with the right status, and leaves no inbox row and no job:
nothing unsigned is stored or processed, and nothing signed is processed twice. Late
deliveries (Shopify retries for 4 hours) are processed like fresh ones, idempotently.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.routers.webhooks import MAX_BODY_BYTES, MAX_JSON_DEPTH
from app.runtime import Runtime
from app.sync.inbox import Delivery
from app.sync.shadow import CLOSE_JOB
from app.worker import Worker
from tests.wiring import Upstreams, shadow_upstreams

SECRET = "shpss_test_7204f8ff39c46c2d"  # make_settings' shopify_api_secret
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}
CARD = "6280001234567890"
PIN = "4321"


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def headers_for(
    body: bytes,
    *,
    topic: str = "orders/paid",
    webhook_id: str | None = None,
    event_id: str | None = None,
    triggered_at: str | None = None,
    **extra: str,
) -> dict[str, str]:
    headers = {
        "X-Shopify-Hmac-Sha256": sign(body),
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
        "X-Shopify-Shop-Domain": "sandbox.myshopify.com",
        "X-Shopify-API-Version": "2025-01",
        "X-Shopify-Triggered-At": triggered_at or datetime.now(UTC).isoformat(),
        "Content-Type": "application/json",
    }
    headers.update({name.replace("_", "-"): value for name, value in extra.items()})
    return headers


async def post(
    client: httpx.AsyncClient, payload: Any, **kwargs: Any
) -> tuple[httpx.Response, dict[str, str]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = headers_for(body, **kwargs)
    return await client.post("/webhooks/shopify", content=body, headers=headers), headers


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert set(body) >= PROBLEM_KEYS
    assert (body["status"], body["code"]) == (status, code)


async def count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text(f"SELECT count(*) FROM {table}")))


async def assert_nothing_stored(engine: AsyncEngine) -> None:
    assert await count(engine, "webhook_inbox") == 0
    assert await count(engine, "jobs") == 0


def recording(runtime: Runtime, *topics: str) -> list[tuple[str, dict[str, Any], Delivery]]:
    """Replace the topics' handlers with one that records each call."""
    seen: list[tuple[str, dict[str, Any], Delivery]] = []
    for topic in topics:

        async def handler(payload: dict[str, Any], delivery: Delivery, topic: str = topic) -> None:
            seen.append((topic, payload, delivery))

        runtime.topic_handlers[topic] = (handler,)
    return seen


async def run_jobs(runtime: Runtime, engine: AsyncEngine, *, rounds: int = 10) -> int:
    """Run everything due, making delayed retries due at once; bounded, so never endless."""
    worker = Worker(runtime.sessions, runtime.handlers)
    ran = 0
    for _ in range(rounds):
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE jobs SET run_at = now() WHERE state = 'queued'"))
        done = await worker.run_once()
        if not done:
            break
        ran += done
    return ran


# ---- duplicates ----------------------------------------------------------------------------


async def test_a_retried_delivery_is_acknowledged_and_processed_once(
    client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    seen = recording(runtime, "orders/paid")
    webhook_id, event_id = str(uuid.uuid4()), str(uuid.uuid4())
    payload = {"id": 4401, "name": "#4401"}
    first, _ = await post(client, payload, webhook_id=webhook_id, event_id=event_id)
    assert first.status_code == 200 and first.json() == {"received": True, "duplicate": False}
    again, _ = await post(client, payload, webhook_id=webhook_id, event_id=event_id)
    assert again.json() == {"received": True, "duplicate": True}
    await run_jobs(runtime, engine)
    # Shopify retries after a lost acknowledgement, long after we processed the first copy.
    late, _ = await post(client, payload, webhook_id=webhook_id, event_id=event_id)
    assert late.status_code == 200 and late.json()["duplicate"] is True
    await run_jobs(runtime, engine)
    assert [(topic, p["id"]) for topic, p, _ in seen] == [("orders/paid", 4401)]
    assert await count(engine, "webhook_inbox") == 1
    assert await count(engine, "jobs") == 1


async def test_the_same_event_under_a_new_delivery_id_is_a_duplicate(
    client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    seen = recording(runtime, "orders/paid", "orders/cancelled")
    event_id = str(uuid.uuid4())
    payload = {"id": 4402}
    first, _ = await post(client, payload, event_id=event_id)
    other, _ = await post(client, payload, event_id=event_id)  # new X-Shopify-Webhook-Id
    assert (first.json()["duplicate"], other.json()["duplicate"]) == (False, True)
    # The event key is per topic, so another topic's event with that id is its own delivery.
    cancelled, _ = await post(client, payload, event_id=event_id, topic="orders/cancelled")
    assert cancelled.json()["duplicate"] is False
    await run_jobs(runtime, engine)
    assert sorted(topic for topic, _, _ in seen) == ["orders/cancelled", "orders/paid"]
    assert await count(engine, "webhook_inbox") == 2


async def test_concurrent_copies_of_one_event_store_one_delivery(
    client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    seen = recording(runtime, "orders/paid")
    event_id = str(uuid.uuid4())
    body = json.dumps({"id": 4403}).encode()
    answers = await asyncio.gather(
        *(
            client.post(
                "/webhooks/shopify", content=body, headers=headers_for(body, event_id=event_id)
            )
            for _ in range(25)
        )
    )
    assert all(answer.status_code == 200 for answer in answers)
    assert sum(not answer.json()["duplicate"] for answer in answers) == 1
    await run_jobs(runtime, engine)
    assert len(seen) == 1
    assert await count(engine, "jobs") == 1


# ---- out of order: the shadow card is captured exactly once whatever arrives first ------------


@dataclass
class Checkout:
    http: httpx.AsyncClient
    up: Upstreams
    runtime: Runtime
    engine: AsyncEngine

    async def apply(self, cart: str) -> str:
        """The shadow card's Shopify gid after a checkout applied the Vii card."""
        body = {"viiCardNumber": CARD, "viiCardPin": PIN, "cartTotal": cart, "checkoutToken": "c-1"}
        response = await self.http.post("/check-balance", json=body)
        assert response.status_code == 200, response.text
        code = response.json()["shopifyGiftCardCode"].lower()
        for card_id in self.up.shop_sim.shop.gift_cards:
            card = self.up.shop_sim.card(card_id)
            if card["code"].lower() == code:
                return str(card["id"])
        raise AssertionError("the shadow card is not in the Shopify simulator")

    async def scalar(self, sql: str) -> Any:
        async with self.engine.connect() as connection:
            return await connection.scalar(text(sql))

    async def assert_captured_once(self, amount: str) -> None:
        minor = int(Decimal(amount) * 100)
        assert self.up.vii_sim.balance(CARD) == Decimal("50.00") - Decimal(amount)
        assert self.up.vii_sim.open_holds(CARD) == {}
        assert await self.scalar("SELECT state FROM shadow_cards") == "captured"
        assert await self.scalar("SELECT captured_amount_minor FROM shadow_cards") == minor
        captures = "SELECT sum(amount_minor) FROM ledger WHERE cause = 'capture'"
        assert await self.scalar(captures) == -minor
        jobs = f"SELECT count(*) FROM jobs WHERE kind = '{CLOSE_JOB}'"
        assert await self.scalar(jobs) == 1
        assert await self.scalar("SELECT count(*) FROM findings") == 0
        unprocessed = "SELECT count(*) FROM webhook_inbox WHERE processed_at IS NULL"
        assert await self.scalar(unprocessed) == 0


@pytest.fixture
async def checkout(runtime: Runtime, engine: AsyncEngine) -> AsyncIterator[Checkout]:
    async with shadow_upstreams(runtime, vii_timeout=0.5) as up:
        up.vii_sim.add_card(CARD, PIN, Decimal("50.00"))
        app = create_app(runtime, run_worker=False)
        transport = httpx.ASGITransport(app=app, client=("10.0.0.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as http:
            yield Checkout(http, up, runtime, engine)


@pytest.mark.parametrize(
    "schedule",
    [
        "transaction, paid, run",
        "paid, transaction, run",
        "transaction, run, paid, run",
        "paid, run, transaction, run",
        "transaction, transaction-retry, run, paid, paid-same-event, run",
    ],
)
async def test_transaction_and_paid_in_any_order_capture_once(
    checkout: Checkout, schedule: str
) -> None:
    gid = await checkout.apply("20.00")
    order = checkout.up.shop_sim.create_order([(gid, Decimal("15.00"))])
    (sale,) = order["webhooks"]["order_transactions/create"]
    deliveries = {
        "transaction": ("order_transactions/create", sale, "wh-txn", "ev-txn"),
        "transaction-retry": ("order_transactions/create", sale, "wh-txn", "ev-txn"),
        "paid": ("orders/paid", order["webhooks"]["orders/paid"], "wh-paid", "ev-paid"),
        "paid-same-event": ("orders/paid", order["webhooks"]["orders/paid"], "wh-2", "ev-paid"),
    }
    for step in schedule.split(", "):
        if step == "run":
            await run_jobs(checkout.runtime, checkout.engine)
            continue
        topic, payload, webhook_id, event_id = deliveries[step]
        response, _ = await post(
            checkout.http, payload, topic=topic, webhook_id=webhook_id, event_id=event_id
        )
        assert response.status_code == 200
    # 15.00 captured from the 20.00 hold; the rest is released with the capture.
    await checkout.assert_captured_once("15.00")
    assert checkout.up.vii_sim.available(CARD) == Decimal("35.00")


# ---- late deliveries ------------------------------------------------------------------------


async def test_a_late_delivery_is_processed_and_its_retry_is_not(checkout: Checkout) -> None:
    """Shopify retries for 4 hours: a payment reported hours late must still be captured."""
    gid = await checkout.apply("20.00")
    order = checkout.up.shop_sim.create_order([(gid, Decimal("20.00"))])
    hours_ago = (datetime.now(UTC) - timedelta(hours=3, minutes=55)).isoformat()
    paid = order["webhooks"]["orders/paid"]
    first, _ = await post(checkout.http, paid, webhook_id="wh-late", triggered_at=hours_ago)
    assert first.json()["duplicate"] is False
    await run_jobs(checkout.runtime, checkout.engine)
    await checkout.assert_captured_once("20.00")
    stored = await checkout.scalar("SELECT triggered_at FROM webhook_inbox")
    assert stored == datetime.fromisoformat(hours_ago)
    retry, _ = await post(checkout.http, paid, webhook_id="wh-late", triggered_at=hours_ago)
    assert retry.json()["duplicate"] is True
    await run_jobs(checkout.runtime, checkout.engine)
    await checkout.assert_captured_once("20.00")


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("2020-01-01T00:00:00Z", datetime(2020, 1, 1, tzinfo=UTC)),  # years late: still taken
        ("2026-11-23T10:00:00+02:00", datetime(2026, 11, 23, 8, tzinfo=UTC)),
        ("2026-11-23T10:00:00", datetime(2026, 11, 23, 10, tzinfo=UTC)),  # naive means UTC
        ("yesterday", None),
        ("2026-13-45T99:00:00Z", None),
        ("0001-01-01T00:00:00+01:00", None),  # before year 1 in UTC
        ("9999-12-31T23:59:59-01:00", None),  # after year 9999 in UTC
        ("T" * 200, None),
        ("", None),
    ],
)
async def test_any_triggered_at_is_acknowledged_and_only_recorded(
    client: httpx.AsyncClient,
    runtime: Runtime,
    engine: AsyncEngine,
    raw: str,
    stored: datetime | None,
) -> None:
    seen = recording(runtime, "orders/paid")
    body = json.dumps({"id": 4404}).encode()
    headers = headers_for(body)
    headers["X-Shopify-Triggered-At"] = raw
    response = await client.post("/webhooks/shopify", content=body, headers=headers)
    assert response.status_code == 200 and response.json()["duplicate"] is False
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT triggered_at FROM webhook_inbox")) == stored
    await run_jobs(runtime, engine)
    assert len(seen) == 1


# ---- signatures ------------------------------------------------------------------------------


def _hmac_variants(body: bytes) -> dict[str, str | bytes | None]:
    good = sign(body)
    raw = hmac.new(SECRET.encode(), body, hashlib.sha256)
    return {
        "missing": None,
        "empty": "",
        "other secret": sign(body, "not-the-secret"),
        "other body": sign(body + b" "),
        "hex digest": raw.hexdigest(),
        "truncated": good[:-4],
        "doubled": good + good,
        "not base64": "%%%%",
        "raw digest bytes": raw.digest(),
        "flipped last character": good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1],
    }


@pytest.mark.parametrize("variant", list(_hmac_variants(b"{}")))
async def test_a_missing_or_wrong_signature_is_401_and_nothing_is_stored(
    client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine, variant: str
) -> None:
    body = json.dumps({"id": 4405, "total_price": "10.00"}).encode()
    headers: dict[str, str | bytes] = dict(headers_for(body))
    given = _hmac_variants(body)[variant]
    if given is None:
        del headers["X-Shopify-Hmac-Sha256"]
    else:
        headers["X-Shopify-Hmac-Sha256"] = given
    response = await client.post("/webhooks/shopify", content=body, headers=headers)
    assert_problem(response, 401, "invalid_hmac")
    await assert_nothing_stored(engine)
    assert await run_jobs(runtime, engine) == 0


async def test_an_unsigned_request_is_401_whatever_else_is_wrong_with_it(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Nothing about an unsigned request is parsed, so every fault answers the same 401."""
    for body, headers in [
        (b"{not json", {"Content-Type": "application/json"}),
        (b"<xml/>", {"Content-Type": "application/xml", "X-Shopify-Topic": "orders/paid"}),
        (b"[]", {"X-Shopify-Hmac-Sha256": sign(b"{}"), "X-Shopify-Webhook-Id": "w"}),
    ]:
        response = await client.post("/webhooks/shopify", content=body, headers=headers)
        assert_problem(response, 401, "invalid_hmac")
    await assert_nothing_stored(engine)


async def test_without_a_configured_secret_every_delivery_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"shopify_api_secret": None})
    response, _ = await post(client, {"id": 4406})
    assert_problem(response, 401, "invalid_hmac")
    await assert_nothing_stored(engine)


# ---- headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "value", "code"),
    [
        ("X-Shopify-Topic", None, "missing_header"),
        ("X-Shopify-Topic", "", "missing_header"),
        ("X-Shopify-Webhook-Id", None, "missing_header"),
        ("X-Shopify-Webhook-Id", "", "missing_header"),
        ("X-Shopify-Topic", "orders/paid; DROP TABLE jobs", "invalid_header"),
        ("X-Shopify-Topic", "t" * 129, "invalid_header"),
        ("X-Shopify-Webhook-Id", "w" * 256, "invalid_header"),
        ("X-Shopify-Webhook-Id", "has space", "invalid_header"),
        ("X-Shopify-Event-Id", "e" * 256, "invalid_header"),
        ("X-Shopify-Event-Id", "tab\there", "invalid_header"),
        ("X-Shopify-Shop-Domain", "s" * 256, "invalid_header"),
        ("X-Shopify-Shop-Domain", "shop.myshopify.com/../../etc", "invalid_header"),
    ],
)
async def test_missing_or_malformed_delivery_headers_are_400(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    header: str,
    value: str | None,
    code: str,
) -> None:
    body = json.dumps({"id": 4407}).encode()
    headers = headers_for(body)
    if value is None:
        del headers[header]
    else:
        headers[header] = value
    response = await client.post("/webhooks/shopify", content=body, headers=headers)
    assert_problem(response, 400, code)
    await assert_nothing_stored(engine)


async def test_optional_headers_may_be_absent(
    client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    seen = recording(runtime, "orders/paid")
    body = json.dumps({"id": 4408}).encode()
    headers = headers_for(body)
    for name in ("X-Shopify-Event-Id", "X-Shopify-Shop-Domain", "X-Shopify-Triggered-At"):
        del headers[name]
    response = await client.post("/webhooks/shopify", content=body, headers=headers)
    assert response.status_code == 200
    await run_jobs(runtime, engine)
    assert [delivery.event_id for _, _, delivery in seen] == [None]


# ---- bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{not json",
        b'{"id": 1',
        b'{"id": 1} trailing',
        b"\xff\xfe\x00garbage",
        b'{"id": "\xc3\x28"}',  # invalid UTF-8
        b'{"total": NaN}',
        b'{"total": Infinity}',
        b'{"total": -Infinity}',
        b'{"total": 1e309}',
        b'{"id": ' + b"9" * 5000 + b"}",
        b'{"a": ' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1) + b"}",
        b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    ],
    ids=lambda body: body[:24].decode("latin-1"),
)
async def test_signed_bodies_that_are_not_usable_json_are_400(
    client: httpx.AsyncClient, engine: AsyncEngine, body: bytes
) -> None:
    response = await client.post("/webhooks/shopify", content=body, headers=headers_for(body))
    assert_problem(response, 400, "invalid_json")
    await assert_nothing_stored(engine)


@pytest.mark.parametrize("body", [b"[]", b'[{"id": 1}]', b'"orders"', b"1", b"null", b"true"])
async def test_signed_json_that_is_not_an_object_is_400(
    client: httpx.AsyncClient, engine: AsyncEngine, body: bytes
) -> None:
    response = await client.post("/webhooks/shopify", content=body, headers=headers_for(body))
    assert_problem(response, 400, "invalid_json")
    await assert_nothing_stored(engine)


async def test_deep_but_bounded_nesting_and_big_numbers_are_stored_as_sent(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    nested: Any = []
    for _ in range(MAX_JSON_DEPTH - 2):
        nested = [nested]
    payload = {"id": 10**30, "note": nested, "total": "12.50"}
    response, _ = await post(client, payload)
    assert response.status_code == 200
    async with engine.connect() as connection:
        stored = await connection.scalar(text("SELECT payload FROM webhook_inbox"))
    assert stored == payload


async def test_text_postgresql_cannot_hold_is_replaced_not_refused(
    client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    """A genuine order whose note carries NUL or a broken surrogate is still processed."""
    seen = recording(runtime, "orders/paid")
    body = b'{"id": 4409, "note": "a\\u0000b\\ud800c", "x\\u0000": 1, "kept": "\\\\u0000"}'
    response = await client.post("/webhooks/shopify", content=body, headers=headers_for(body))
    assert response.status_code == 200
    await run_jobs(runtime, engine)
    ((_, payload, _),) = seen
    assert payload == {"id": 4409, "note": "a\ufffdb\ufffdc", "x\ufffd": 1, "kept": "\\u0000"}


@pytest.mark.parametrize(
    ("content_type", "encoding", "status"),
    [
        ("application/json", None, 200),
        ("application/json; charset=utf-8", None, 200),
        ("Application/JSON", None, 200),
        (None, None, 200),  # the signed body decides
        ("text/plain", None, 415),
        ("application/x-www-form-urlencoded", None, 415),
        ("multipart/form-data; boundary=x", None, 415),
        ("application/xml", None, 415),
        ("text/json", None, 415),
        ("application/json", "gzip", 415),
    ],
)
async def test_media_type(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    content_type: str | None,
    encoding: str | None,
    status: int,
) -> None:
    body = json.dumps({"id": 4410}).encode()
    headers = headers_for(body)
    del headers["Content-Type"]
    if content_type is not None:
        headers["Content-Type"] = content_type
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    response = await client.post("/webhooks/shopify", content=body, headers=headers)
    if status == 200:
        assert response.status_code == 200
        assert await count(engine, "webhook_inbox") == 1
    else:
        assert_problem(response, status, "unsupported_media_type")
        await assert_nothing_stored(engine)


async def test_a_body_of_exactly_1_mib_is_accepted(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    prefix, suffix = b'{"id": 4411, "note": "', b'"}'
    body = prefix + b"n" * (MAX_BODY_BYTES - len(prefix) - len(suffix)) + suffix
    assert len(body) == MAX_BODY_BYTES
    response = await client.post("/webhooks/shopify", content=body, headers=headers_for(body))
    assert response.status_code == 200
    assert await count(engine, "webhook_inbox") == 1


CHUNK = 64 * 1024


async def _call_asgi(
    runtime: Runtime, headers: dict[str, str], body_size: int
) -> tuple[int, dict[str, Any], int]:
    """Drive the app directly, so the test sees how much of the body it pulled in."""
    app = create_app(runtime, run_worker=False)
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        size = min(CHUNK, body_size - pulled)
        pulled += size
        return {"type": "http.request", "body": b"x" * size, "more_body": pulled < body_size}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/shopify",
        "raw_path": b"/webhooks/shopify",
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("10.0.0.9", 5000),
        "server": ("giftsync.test", 80),
        "state": {},
    }
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), pulled


async def test_a_2_mib_body_with_its_length_declared_is_413_before_it_is_read(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    size = 2 * 1024 * 1024
    headers = headers_for(b"{}", Content_Length=str(size))
    status, problem, pulled = await _call_asgi(runtime, headers, size)
    assert (status, problem["code"]) == (413, "payload_too_large")
    assert pulled == 0
    await assert_nothing_stored(engine)


async def test_a_2_mib_chunked_body_is_413_once_it_passes_1_mib(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    size = 2 * 1024 * 1024
    headers = headers_for(b"{}", Transfer_Encoding="chunked")
    status, problem, pulled = await _call_asgi(runtime, headers, size)
    assert (status, problem["code"]) == (413, "payload_too_large")
    assert pulled <= MAX_BODY_BYTES + CHUNK
    await assert_nothing_stored(engine)


async def test_a_2_mib_body_over_the_client_is_413(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    response = await client.post("/webhooks/shopify", content=body, headers=headers_for(body))
    assert_problem(response, 413, "payload_too_large")
    await assert_nothing_stored(engine)


async def test_unknown_topics_are_stored_acknowledged_and_marked_processed(
    client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    for topic in ("products/update", "app/uninstalled", "bulk_operations/finish"):
        response, _ = await post(client, {"id": 4412}, topic=topic)
        assert response.status_code == 200
    assert await run_jobs(runtime, engine) == 3
    async with engine.connect() as connection:
        pending = await connection.scalar(
            text("SELECT count(*) FROM webhook_inbox WHERE processed_at IS NULL")
        )
    assert pending == 0
