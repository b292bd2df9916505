"""Operators (named tokens, limits on failed sign-ins), the audit log, and webhook origin checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import operators
from app.db.engine import SessionFactory
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import make_settings

SHOP = "giftsync-test.myshopify.com"
SECRET = "whsec_test_client_secret_0123456789"


@pytest.fixture
def settings() -> Settings:
    return make_settings(shopify_shop_domain=SHOP, shopify_api_secret=SECRET)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin(runtime: Runtime) -> dict[str, str]:
    assert runtime.settings.admin_token is not None
    return bearer(runtime.settings.admin_token.get_secret_value())


async def add_operator(sessions: SessionFactory, name: str) -> str:
    token = secrets.token_urlsafe(32)
    async with sessions() as session, session.begin():
        await operators.add(session, name, token)
    return token


async def test_a_named_operator_token_works_and_only_its_hash_is_stored(
    client: httpx.AsyncClient, sessions: SessionFactory, engine: AsyncEngine
) -> None:
    token = await add_operator(sessions, "alice")
    assert (await client.get("/internal/jobs?state=dead", headers=bearer(token))).status_code == 200
    async with engine.connect() as connection:
        dump = await connection.scalar(text("SELECT string_agg(t::text, '|') FROM operators t"))
    assert token not in dump and hashlib.sha256(token.encode()).hexdigest() in dump


async def test_failed_bearer_attempts_are_limited_per_address(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for _ in range(10):
        missing = await client.get("/internal/jobs")  # no token: no attempt, never counted
        assert missing.status_code == 401 and missing.json()["code"] == "unauthorized"
    for _ in range(10):
        wrong = await client.get("/internal/jobs", headers=bearer("wrong-token"))
        assert wrong.status_code == 401 and wrong.json()["code"] == "unauthorized"
    refused = await client.get("/internal/jobs", headers=bearer("wrong-token"))
    assert refused.status_code == 429 and refused.json()["code"] == "too_many_attempts"
    assert int(refused.headers["Retry-After"]) > 0
    # Whoever shares the address cannot lock the operators out: a valid token still works.
    assert (await client.get("/internal/jobs", headers=admin(runtime))).status_code == 200


async def test_every_changing_operator_action_is_audited_before_it_answers(
    client: httpx.AsyncClient, runtime: Runtime, sessions: SessionFactory, engine: AsyncEngine
) -> None:
    token = await add_operator(sessions, "bob")
    body = json.dumps({"dryRun": True}).encode()
    started = await client.post(
        "/internal/reconcile",
        content=body,
        headers={**bearer(token), "content-type": "application/json"},
    )
    assert started.status_code in (202, 409, 503)
    await client.get("/internal/jobs?state=dead", headers=bearer(token))  # reads: not audited
    await client.post("/internal/reconcile", json={"dryRun": True}, headers=bearer("wrong"))
    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM audit_log"))).all()
    assert [(r.operator, r.action, r.status) for r in rows] == [
        ("bob", "POST /internal/reconcile", started.status_code)
    ]
    assert rows[0].body_sha256 == hashlib.sha256(body).hexdigest()
    assert rows[0].address == "127.0.0.1"
    page = (await client.get("/internal/audit", headers=admin(runtime))).json()
    assert [e["operator"] for e in page["entries"]] == ["bob"]


async def test_the_audit_log_is_append_only(engine: AsyncEngine, sessions: SessionFactory) -> None:
    async with sessions() as session, session.begin():
        await operators.audit(
            session, operator="x", address="a", action="POST /internal/x", status=200, body=b""
        )
    for statement in ("UPDATE audit_log SET operator = 'y'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"):
            async with engine.begin() as connection:
                await connection.execute(text(statement))


def signed(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def webhook_headers(
    body: bytes, *, shop: str | None = SHOP, webhook_id: str | None = None
) -> dict[str, str]:
    headers = {
        "X-Shopify-Hmac-Sha256": signed(body),
        "X-Shopify-Topic": "orders/paid",
        "X-Shopify-Webhook-Id": webhook_id or uuid.uuid4().hex,
        "Content-Type": "application/json",
    }
    if shop is not None:
        headers["X-Shopify-Shop-Domain"] = shop
    return headers


@pytest.mark.parametrize("shop", ["another-shop.myshopify.com", None])
async def test_a_signed_webhook_for_another_shop_is_refused_and_not_stored(
    client: httpx.AsyncClient, engine: AsyncEngine, shop: str | None
) -> None:
    body = b'{"id": 1}'
    answer = await client.post(
        "/webhooks/shopify", content=body, headers=webhook_headers(body, shop=shop)
    )
    assert answer.status_code == 401 and answer.json()["code"] == "unknown_shop"
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM webhook_inbox")) == 0


async def test_a_signed_body_replayed_under_new_ids_is_stored_once(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = b'{"id": 2, "name": "#1002"}'
    first = await client.post("/webhooks/shopify", content=body, headers=webhook_headers(body))
    replay = await client.post("/webhooks/shopify", content=body, headers=webhook_headers(body))
    assert first.json() == {"received": True, "duplicate": False}
    assert replay.json() == {"received": True, "duplicate": True}
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM webhook_inbox")) == 1
