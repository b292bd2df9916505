from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.routers.webhooks import _valid_hmac
from app.runtime import Runtime
from app.sync.inbox import Delivery
from app.worker import Worker

SECRET = "shpss_test_7204f8ff39c46c2d"


def signed(body: bytes, secret: str = SECRET, **headers: str) -> dict[str, str]:
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    base = {
        "X-Shopify-Hmac-Sha256": digest,
        "X-Shopify-Topic": "orders/paid",
        "X-Shopify-Webhook-Id": "wh-1",
        "X-Shopify-Event-Id": "ev-1",
        "X-Shopify-Shop-Domain": "shop.myshopify.com",
        "X-Shopify-Triggered-At": "2026-11-23T10:00:00.000Z",
        "Content-Type": "application/json",
    }
    base.update({k.replace("_", "-"): v for k, v in headers.items()})
    return base


async def _count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text(f"SELECT count(*) FROM {table}")))


def test_hmac_matches_shopifys_published_test_vector() -> None:
    assert _valid_hmac(
        "test_secret_key", b'{"foo": "bar"}', "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g="
    )
    assert not _valid_hmac(
        "test_secret_key", b'{"foo":"bar"}', "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g="
    )


async def test_signed_delivery_is_stored_and_queued_once(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = json.dumps({"id": 1001, "name": "#1001"}).encode()
    first = await client.post("/webhooks/shopify", content=body, headers=signed(body))
    assert first.status_code == 200 and first.json() == {"received": True, "duplicate": False}
    again = await client.post("/webhooks/shopify", content=body, headers=signed(body))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    other_delivery_same_event = await client.post(
        "/webhooks/shopify", content=body, headers=signed(body, X_Shopify_Webhook_Id="wh-2")
    )
    assert other_delivery_same_event.json()["duplicate"] is True
    assert await _count(engine, "webhook_inbox") == 1
    assert await _count(engine, "jobs") == 1


async def test_concurrent_duplicate_deliveries_store_one(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = b'{"id": 7}'
    answers = await asyncio.gather(
        *(client.post("/webhooks/shopify", content=body, headers=signed(body)) for _ in range(20))
    )
    assert all(a.status_code == 200 for a in answers)
    assert sum(not a.json()["duplicate"] for a in answers) == 1
    assert await _count(engine, "jobs") == 1


async def test_bad_or_missing_hmac_is_401_and_nothing_is_written(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = b'{"id": 1}'
    wrong = signed(body, secret="not-the-secret")
    missing = signed(body)
    del missing["X-Shopify-Hmac-Sha256"]
    for headers in (wrong, missing):
        response = await client.post("/webhooks/shopify", content=body, headers=headers)
        assert response.status_code == 401 and response.json()["code"] == "invalid_hmac"
    tampered = await client.post("/webhooks/shopify", content=b'{"id": 2}', headers=signed(body))
    assert tampered.status_code == 401
    assert await _count(engine, "webhook_inbox") == 0


async def test_missing_headers_invalid_json_and_huge_bodies(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = b'{"id": 1}'
    no_topic = signed(body)
    del no_topic["X-Shopify-Topic"]
    response = await client.post("/webhooks/shopify", content=body, headers=no_topic)
    assert response.status_code == 400 and response.json()["code"] == "missing_header"
    bad = b"{not json"
    response = await client.post("/webhooks/shopify", content=bad, headers=signed(bad))
    assert response.status_code == 400 and response.json()["code"] == "invalid_json"
    huge = b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    response = await client.post("/webhooks/shopify", content=huge, headers=signed(huge))
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert await _count(engine, "webhook_inbox") == 0


async def test_worker_processes_a_delivery_once_with_its_topic_handler(
    client: httpx.AsyncClient, runtime: Runtime, engine: AsyncEngine
) -> None:
    seen: list[tuple[str, dict[str, Any], Delivery]] = []

    async def on_paid(payload: dict[str, Any], delivery: Delivery) -> None:
        seen.append(("first", payload, delivery))

    async def also_on_paid(payload: dict[str, Any], delivery: Delivery) -> None:
        seen.append(("second", payload, delivery))

    # A topic may have several handlers (omni and shadow cards both read orders/paid): each
    # runs once, in the order they were installed.
    runtime.topic_handlers["orders/paid"] = (on_paid, also_on_paid)
    body = b'{"id": 55}'
    await client.post("/webhooks/shopify", content=body, headers=signed(body))
    unknown = b'{"id": 56}'
    await client.post(
        "/webhooks/shopify",
        content=unknown,
        headers=signed(
            unknown,
            X_Shopify_Topic="products/update",
            X_Shopify_Webhook_Id="wh-9",
            X_Shopify_Event_Id="ev-9",
        ),
    )
    worker = Worker(runtime.sessions, runtime.handlers)
    assert await worker.run_once() == 2
    assert [(name, p["id"], d.topic, d.event_id) for name, p, d in seen] == [
        ("first", 55, "orders/paid", "ev-1"),
        ("second", 55, "orders/paid", "ev-1"),
    ]
    async with engine.connect() as connection:
        unprocessed = await connection.scalar(
            text("SELECT count(*) FROM webhook_inbox WHERE processed_at IS NULL")
        )
    assert unprocessed == 0
