"""`GET /internal/cards?last4=&email=&serial=`: the store staff lookup (DESIGN 3)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.crypto import card_hash
from app.main import create_app
from app.runtime import Runtime
from app.sync.lookup import serial_hash

ADMIN_TOKEN = "test-admin-oua6Df4cIZNy6hMFDLFrsQyJmY2nJnF3"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HASH_KEY = "57f387c85fb633f1851f213a74ab906eebf2e168fc78961d7bcd89af05c70e04"
SERIAL = "GC00ab12CD34"
VII_NUMBER = "6280001234567890"


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as client:
        yield client


def _at(moment: str | None) -> datetime | None:
    return None if moment is None else datetime.fromisoformat(moment)


async def _card(
    engine: AsyncEngine,
    *,
    email: str | None = None,
    kind: str = "omni",
    base_minor: int | None = None,
    links: list[dict[str, Any]] | None = None,
    created_at: str = "2026-11-01T00:00:00Z",
) -> uuid.UUID:
    card_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO gift_cards (id, kind, currency, customer_email, created_at) "
                "VALUES (:id, :kind, 'AUD', :email, :at)"
            ),
            {"id": card_id, "kind": kind, "email": email, "at": _at(created_at)},
        )
        for link in links or []:
            await connection.execute(
                text(
                    "INSERT INTO card_links (card_id, system, external_id, code_last4, code_hash, "
                    "last_seen_balance_minor, last_seen_status, last_seen_at) VALUES (:card, "
                    ":system, :external_id, :last4, :hash, :balance, :status, :seen)"
                ),
                {
                    "card": card_id,
                    "system": link["system"],
                    "external_id": link["external_id"],
                    "last4": link.get("last4"),
                    "hash": link.get("hash"),
                    "balance": link.get("balance"),
                    "status": link.get("status"),
                    "seen": _at(link.get("seen")),
                },
            )
        if base_minor is not None:
            await connection.execute(
                text("INSERT INTO sync_base (card_id, balance_minor) VALUES (:id, :b)"),
                {"id": card_id, "b": base_minor},
            )
    return card_id


@pytest.fixture
async def omni_card(engine: AsyncEngine) -> uuid.UUID:
    """Sold in store with serial SERIAL, now also in Shopify under the same code."""
    hashed = serial_hash(HASH_KEY, SERIAL)
    return await _card(
        engine,
        email="shopper@example.com",
        base_minor=2500,
        links=[
            {
                "system": "shopify",
                "external_id": "gid://shopify/GiftCard/9",
                "last4": "cd34",
                "hash": hashed,
                "balance": 2500,
                "status": "enabled",
                "seen": "2026-11-23T10:00:00Z",
            },
            {
                "system": "lightspeed",
                "external_id": "4411",
                "last4": "CD34",
                "hash": hashed,
                "balance": 2000,
                "status": "enabled",
                "seen": "2026-11-23T10:01:00Z",
            },
        ],
    )


async def _find(api: httpx.AsyncClient, **query: str) -> list[dict[str, Any]]:
    response = await api.get("/internal/cards", params=query, headers=AUTH)
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


async def test_lookup_by_serial_answers_the_whole_card(
    api: httpx.AsyncClient, omni_card: uuid.UUID
) -> None:
    response = await api.get("/internal/cards", params={"serial": SERIAL}, headers=AUTH)

    assert response.status_code == 200
    assert response.json() == {
        "cards": [
            {
                "cardId": str(omni_card),
                "kind": "omni",
                "state": "active",
                "currency": "AUD",
                "customerEmail": "shopper@example.com",
                "balance": "25.00",
                "links": [
                    {
                        "system": "lightspeed",
                        "externalId": "4411",
                        "last4": "CD34",
                        "lastSeenBalance": "20.00",
                        "lastSeenStatus": "enabled",
                        "lastSeenAt": "2026-11-23T10:01:00Z",
                    },
                    {
                        "system": "shopify",
                        "externalId": "gid://shopify/GiftCard/9",
                        "last4": "cd34",
                        "lastSeenBalance": "25.00",
                        "lastSeenStatus": "enabled",
                        "lastSeenAt": "2026-11-23T10:00:00Z",
                    },
                ],
            }
        ]
    }
    assert SERIAL.lower() not in response.text.lower()
    assert serial_hash(HASH_KEY, SERIAL) not in response.text


async def test_serial_is_matched_as_omni_sync_hashes_it(
    api: httpx.AsyncClient, omni_card: uuid.UUID
) -> None:
    """Codes are case-insensitive in Shopify; staff type them as printed, with stray spaces."""
    for typed in (SERIAL.upper(), SERIAL.lower(), f"  {SERIAL} "):
        assert [card["cardId"] for card in await _find(api, serial=typed)] == [str(omni_card)]
    assert await _find(api, serial=SERIAL[:-1]) == []
    assert serial_hash(HASH_KEY, f" {SERIAL.upper()} ") == card_hash(HASH_KEY, SERIAL.lower())


async def test_serial_never_matches_a_plain_text_column(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """A serial is looked up by its keyed hash only, never by its text."""
    await _card(
        engine,
        links=[{"system": "lightspeed", "external_id": SERIAL, "last4": SERIAL[-4:]}],
    )
    assert await _find(api, serial=SERIAL) == []


async def test_lookup_by_serial_finds_a_shadow_card_by_its_vii_number(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    card_id = await _card(
        engine,
        kind="vii_shadow",
        links=[{"system": "shopify", "external_id": "gid://shopify/GiftCard/3", "last4": "7890"}],
    )
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO shadow_cards (id, card_id, checkout_token, vii_card_hash, vii_last4, "
                "expires_at) VALUES (:id, :card, 'c-1', :hash, '7890', now())"
            ),
            {"id": uuid.uuid4(), "card": card_id, "hash": card_hash(HASH_KEY, VII_NUMBER)},
        )
    [card] = await _find(api, serial=VII_NUMBER)
    assert (card["cardId"], card["kind"], card["balance"]) == (str(card_id), "vii_shadow", None)


async def test_lookup_by_last4_ignores_case_and_matches_any_link(
    api: httpx.AsyncClient, engine: AsyncEngine, omni_card: uuid.UUID
) -> None:
    other = await _card(
        engine,
        created_at="2026-11-20T00:00:00Z",
        links=[{"system": "shopify", "external_id": "gid://shopify/GiftCard/10", "last4": "Cd34"}],
    )
    await _card(engine, links=[{"system": "shopify", "external_id": "gid://x/11", "last4": "9999"}])
    found = await _find(api, last4="CD34")
    assert [card["cardId"] for card in found] == [str(other), str(omni_card)]  # newest first


async def test_lookup_by_email_is_case_insensitive(
    api: httpx.AsyncClient, engine: AsyncEngine, omni_card: uuid.UUID
) -> None:
    await _card(engine, email="someone.else@example.com")
    assert [c["cardId"] for c in await _find(api, email="Shopper@Example.COM")] == [str(omni_card)]
    assert await _find(api, email="nobody@example.com") == []


async def test_filters_combine_with_and(
    api: httpx.AsyncClient, engine: AsyncEngine, omni_card: uuid.UUID
) -> None:
    same_email = await _card(
        engine,
        email="shopper@example.com",
        links=[{"system": "shopify", "external_id": "gid://x/12", "last4": "0001"}],
    )
    assert [c["cardId"] for c in await _find(api, email="shopper@example.com", last4="0001")] == [
        str(same_email)
    ]
    assert await _find(api, serial=SERIAL, last4="0001") == []
    assert [c["cardId"] for c in await _find(api, serial=SERIAL, email="shopper@example.com")] == [
        str(omni_card)
    ]


async def test_a_card_without_links_or_base(api: httpx.AsyncClient, engine: AsyncEngine) -> None:
    card_id = await _card(engine, email="bare@example.com")
    [card] = await _find(api, email="bare@example.com")
    assert card["cardId"] == str(card_id)
    assert card["links"] == []
    assert card["balance"] is None


async def test_lookup_is_capped_at_50(api: httpx.AsyncClient, engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO gift_cards (id, kind, currency, customer_email, created_at) "
                "SELECT gen_random_uuid(), 'omni', 'AUD', 'many@example.com', "
                "timestamptz '2026-01-01' + n * interval '1 minute' "
                "FROM generate_series(1, 60) AS n"
            )
        )
    cards = await _find(api, email="many@example.com")
    assert len(cards) == 50


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"last4": ""},
        {"last4": "123"},
        {"last4": "12345"},
        {"last4": "12 4"},
        {"email": "not-an-email"},
        {"email": "a@b@c"},
        {"email": "x" * 321 + "@example.com"},
        {"serial": ""},
        {"serial": "   "},
        {"serial": "x" * 256},
    ],
    ids=[
        "none",
        "last4-empty",
        "last4-short",
        "last4-long",
        "last4-space",
        "email-no-at",
        "email-two-at",
        "email-long",
        "serial-empty",
        "serial-blank",
        "serial-long",
    ],
)
async def test_bad_filters_are_422(
    api: httpx.AsyncClient, omni_card: uuid.UUID, query: dict[str, str]
) -> None:
    response = await api.get("/internal/cards", params=query, headers=AUTH)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_request"


async def test_a_bad_serial_is_not_echoed(api: httpx.AsyncClient) -> None:
    serial = "S" * 300
    response = await api.get("/internal/cards", params={"serial": serial}, headers=AUTH)
    assert response.status_code == 422
    assert serial not in response.text


async def test_serial_lookup_without_a_hash_key_is_503(
    api: httpx.AsyncClient, runtime: Runtime, omni_card: uuid.UUID
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"card_hash_key": None})
    response = await api.get("/internal/cards", params={"serial": SERIAL}, headers=AUTH)
    assert response.status_code == 503
    assert response.json()["code"] == "serial_lookup_unavailable"
    # The other filters need no key.
    assert len(await _find(api, last4="cd34")) == 1


@pytest.mark.parametrize(
    "query", ["email=a%00b@example.com", "serial=gc%00123456", "email=a@b%01c"]
)
async def test_control_characters_in_a_filter_are_422_not_500(
    client: httpx.AsyncClient, query: str
) -> None:
    response = await client.get(
        f"/internal/cards?{query}",
        headers={"Authorization": "Bearer test-admin-oua6Df4cIZNy6hMFDLFrsQyJmY2nJnF3"},
    )

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
