"""The liability page and its CSV: outstanding balances by system and by state, and totals that
disagree flagged (issue 17)."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import liability
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import make_settings
from tests.console.conftest import Console
from tests.console.store import Sold, Store, store


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        pos_kind="retail", create_update_shopify_gift_cards=True, download_shopify_gift_cards=True
    )


@pytest.fixture
async def shop(runtime: Runtime) -> AsyncIterator[Store]:
    async with store(runtime) as found:
        yield found


async def _open_checkout(engine: AsyncEngine, hold_minor: int, shopify_minor: int) -> uuid.UUID:
    """A Vii shadow card mid-checkout: a Shopify card backed by an open hold."""
    card_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO gift_cards (id, kind, currency) VALUES (:c, 'vii_shadow', 'AUD')"),
            {"c": card_id},
        )
        await connection.execute(
            text(
                "INSERT INTO card_links (card_id, system, external_id, last_seen_balance_minor) "
                "VALUES (:c, 'shopify', :gid, :b)"
            ),
            {
                "c": card_id,
                "gid": f"gid://shopify/GiftCard/{card_id.int % 10**9}",
                "b": shopify_minor,
            },
        )
        await connection.execute(
            text(
                "INSERT INTO shadow_cards (id, card_id, checkout_token, vii_card_hash, vii_last4, "
                "hold_amount_minor, state, expires_at) "
                "VALUES (gen_random_uuid(), :c, 'tok', repeat('a', 64), '4321', :h, 'applied', now() + interval '1 day')"
            ),
            {"c": card_id, "h": hold_minor},
        )
    return card_id


async def _cards(shop: Store) -> list[Sold]:
    await shop.flow.pollers.poll_shopify()  # its first look only sets the cursor
    cards = [
        await shop.sell("gc2026liab0001", "50.00"),
        await shop.sell("gc2026liab0002", "30.00"),
        await shop.sell("gc2026liab0003", "20.00"),
    ]
    shop.flow.spend_in_store(cards[1].external_id, cards[1].serial, "12.50")
    await shop.flow.pollers.poll_pos()
    await shop.flow.drain()
    # What giftsync last saw of Shopify is from before its own mirrored debit, until the next
    # Shopify poll reads the card again.
    await shop.flow.pollers.poll_shopify()
    await shop.flow.drain()
    return cards


def _csv(body: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body)))


def _sum(rows: list[dict[str, str]], column: str) -> Decimal:
    return sum(
        (Decimal(r[column]) for r in rows if r[column] and r["state"] == "active"),
        Decimal("0.00"),
    )


async def test_totals_by_system_match_the_upstreams_and_the_csv(
    shop: Store, console: Console, engine: AsyncEngine
) -> None:
    cards = await _cards(shop)
    await _open_checkout(engine, hold_minor=4000, shopify_minor=4000)
    assert shop.shopify_total() == Decimal("87.50")  # the shadow card lives in the database only
    assert shop.pos_total(cards) == Decimal("87.50")

    page = (await console.http.get("/console/liability")).text
    assert '<td class="num" data-total="shopify">87.50</td>' in page
    assert '<td class="num" data-total="pos">87.50</td>' in page
    assert '<td class="num" data-total="agreed">87.50</td>' in page
    assert '<td class="num" data-total="shopify_shadow">40.00</td>' in page
    assert '<td class="num" data-total="vii_holds">40.00</td>' in page
    assert "Every total agrees." in page

    response = await console.http.get("/console/liability.csv")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith(
        'attachment; filename="giftsync-liability-'
    )
    rows = _csv(response.text)
    assert list(rows[0]) == list(liability.CSV_COLUMNS)
    assert len(rows) == 4
    omni = [r for r in rows if r["kind"] == "omni"]
    assert _sum(omni, "shopify") == shop.shopify_total()
    assert _sum(omni, "pos") == shop.pos_total(cards)
    assert _sum(rows, "vii_hold") == Decimal("40.00")
    assert {r["pos_system"] for r in omni} == {"lightspeed"}
    assert {r["disagrees"] for r in rows} == {"no"}


async def test_totals_that_disagree_are_flagged(
    shop: Store, console: Console, engine: AsyncEngine
) -> None:
    cards = await _cards(shop)
    await _open_checkout(engine, hold_minor=1000, shopify_minor=2500)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE card_links SET last_seen_balance_minor = 4500 "
                "WHERE card_id = :c AND system = 'shopify'"
            ),
            {"c": cards[0].card_id},
        )
        await connection.execute(
            text("UPDATE gift_cards SET state = 'deactivated' WHERE id = :c"),
            {"c": cards[2].card_id},
        )

    page = (await console.http.get("/console/liability")).text
    assert "Totals disagree" in page
    assert "Shopify (62.50) and POS (67.50) differ by -5.00 AUD" in page
    assert "Shopify (62.50) and the agreed balances (67.50) differ by -5.00 AUD" in page
    assert "Shopify shadow cards (25.00) exceed the open Vii holds (10.00) AUD" in page
    assert "Cards whose systems disagree (2)" in page
    assert f'href="/console/cards/{cards[0].card_id}"' in page
    assert f'href="/console/cards/{cards[2].card_id}"' not in page.split("disagree (2)")[1]

    rows = _csv((await console.http.get("/console/liability.csv")).text)
    assert sum(r["disagrees"] == "yes" for r in rows) == 2
    deactivated = next(r for r in rows if r["card_id"] == str(cards[2].card_id))
    assert (deactivated["state"], deactivated["shopify"]) == ("deactivated", "20.00")
    report = await liability.report(shop.runtime.sessions, has_pos=True)
    [aud] = report.totals
    assert (aud.shopify_omni, aud.pos, aud.cards) == (6250, 6750, 3)
    assert [(s.kind, s.state, s.cards) for s in report.by_state] == [
        ("omni", "active", 2),
        ("omni", "deactivated", 1),
        ("vii_shadow", "active", 1),
    ]


async def test_no_cards_no_totals(console: Console) -> None:
    page = (await console.http.get("/console/liability")).text
    assert "No active cards." in page
    assert (await console.http.get("/console/liability.csv")).text == (
        ",".join(liability.CSV_COLUMNS) + "\r\n"
    )


async def test_a_card_disabled_in_one_system_is_not_outstanding_there(
    shop: Store, console: Console
) -> None:
    cards = await _cards(shop)
    shop.status_conflict(cards[0])  # disabled in Shopify, reloaded by 20.00 in store
    await shop.flow.pollers.poll_pos()  # the merge sees both sides and records the conflict
    await shop.flow.drain()

    rows = _csv((await console.http.get("/console/liability.csv")).text)
    conflicted = next(r for r in rows if r["card_id"] == str(cards[0].card_id))
    assert (conflicted["shopify"], conflicted["shopify_status"]) == ("50.00", "disabled")
    assert (conflicted["pos"], conflicted["pos_status"], conflicted["disagrees"]) == (
        "70.00",
        "enabled",
        "yes",
    )
    page = (await console.http.get("/console/liability")).text
    # What Shopify can still spend is what its enabled cards hold, as the simulator says.
    assert shop.shopify_total() == Decimal("37.50")
    assert '<td class="num" data-total="shopify">37.50</td>' in page
    assert '<td class="num" data-total="pos">107.50</td>' in page
    assert "Cards whose systems disagree (1)" in page
