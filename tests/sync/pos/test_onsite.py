"""Lightspeed OnSite behind `PosGiftCards`: the invoice projection on real PostgreSQL.

The tests under "issue 15" are one per bullet of its OnSite "what would break" list: each
failed on the client before it followed the sources (summaries with a `uri`, the real element
names, a set-up that must exist on the merchant's server).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import func, select, text
from structlog.testing import capture_logs

from app.clients.errors import UnknownOutcome, UpstreamRejected, UpstreamUnavailable
from app.clients.onsite import OnSiteClient, OnSiteSetupError
from app.crypto import SecretBox, card_hash
from app.db.engine import SessionFactory
from app.db.models import PosCardBalance, PosSeenMove
from app.sandbox.faults import Faults
from app.sandbox.onsite import OnSiteReadings, OnSiteSimulator
from app.sync.pos import PosChange, PosCustomer, PosGiftCards
from app.sync.pos.onsite import OnSitePos
from tests.conftest import PIN_KEY_HEX

HASH_KEY = "57f387c85fb633f1851f213a74ab906eebf2e168fc78961d7bcd89af05c70e04"
SERIAL = "ONSITE00001234"
OTHER = "ONSITE00005678"


class DropInvoicePosts(httpx.AsyncBaseTransport):
    """The network eats every invoice POST before it reaches OnSite; reads go through."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/api/invoices/":
            raise httpx.ReadTimeout("answer lost", request=request)
        return await self.inner.handle_async_request(request)


@asynccontextmanager
async def adapter(
    sim: OnSiteSimulator,
    sessions: SessionFactory,
    *,
    client_timeout: float = 2.0,
    wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
    set_up: dict[str, str] | None = None,
) -> AsyncIterator[OnSitePos]:
    transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=sim.app)
    client = OnSiteClient(
        "https://onsite.test:9630",
        "onsite",
        "onsite-sandbox",
        "com.example.giftsync",
        "giftsync-sandbox-pappid",
        timeout=client_timeout,
        retry_base_delay=0.0,
        transport=wrap(transport) if wrap else transport,
        **{**sim.correct_set_up(), **(set_up or {})},
    )
    try:
        yield OnSitePos(client, sessions, card_hash_key=HASH_KEY, secret_box=SecretBox(PIN_KEY_HEX))
    finally:
        await client.aclose()


def code_hash(serial: str) -> str:
    return card_hash(HASH_KEY, serial)


async def changes(pos: OnSitePos, since: object = None) -> list[PosChange]:
    return [change async for change in pos.changes_since(since)]  # type: ignore[arg-type]


async def seen_moves(sessions: SessionFactory) -> list[tuple[str, int]]:
    async with sessions() as session:
        rows = await session.execute(
            select(PosSeenMove.move_id, PosSeenMove.amount_minor).order_by(PosSeenMove.move_id)
        )
        return [(row.move_id, row.amount_minor) for row in rows]


def test_is_a_pos(sessions: SessionFactory) -> None:
    def accepts(pos: PosGiftCards) -> str:
        return pos.system

    client = OnSiteClient("https://onsite.test", "u", "p", "app", None)
    pos = OnSitePos(client, sessions, card_hash_key=HASH_KEY, secret_box=SecretBox(PIN_KEY_HEX))
    assert accepts(pos) == "onsite"


# ---- the projection ----


async def test_poll_projects_store_sales_and_redemptions(sessions: SessionFactory) -> None:
    sim = OnSiteSimulator()
    ada = sim.add_customer("Ada", "Lovelace", "ada@example.com")
    sold = sim.sell_gift_card_in_store(SERIAL, Decimal("100.00"), ada)
    redeemed = sim.redeem_in_store(SERIAL, Decimal("30.25"))
    async with adapter(sim, sessions) as pos:
        found = await changes(pos)
        card = await pos.get_card(code_hash(SERIAL))
        by_serial = await pos.find_by_serial(SERIAL)
        unknown = await pos.find_by_serial(OTHER)
    assert [change.external_id for change in found] == [code_hash(SERIAL)] * 2
    assert found[0].changed_at == sim.invoices[sold].modified_at
    assert found[1].changed_at == sim.invoices[redeemed].modified_at
    assert card is not None and by_serial == card and unknown is None
    assert (card.serial, card.balance_minor, card.status) == (SERIAL, 6975, "enabled")
    assert card.customer_id == ada  # the buyer, not whoever paid with it later
    assert card.external_id != SERIAL
    assert await seen_moves(sessions) == [
        (f"{sold}:line:1", 10000),
        (f"{redeemed}:payment:1", -3025),
    ]


async def test_the_serial_is_stored_hashed_and_sealed_only(sessions: SessionFactory) -> None:
    sim = OnSiteSimulator()
    sim.sell_gift_card_in_store(SERIAL, Decimal("10"))
    async with adapter(sim, sessions) as pos:
        await changes(pos)
    async with sessions() as session:
        stored: list[str] = []
        for table in ("pos_card_balances", "pos_seen_moves"):
            result = await session.execute(text(f"SELECT * FROM {table}"))
            stored.extend(str(row) for row in result.all())
        dumped = " ".join(stored)
        row = await session.get(PosCardBalance, ("onsite", code_hash(SERIAL)))
    assert SERIAL not in dumped and SERIAL.encode().hex() not in dumped
    assert row is not None and row.code_last4 == "1234"
    with pytest.raises(ValueError):
        SecretBox(PIN_KEY_HEX).open(row.serial_ciphertext, "pos_card_balances:onsite:other")


async def test_polling_again_with_an_overlapping_cursor_counts_each_invoice_once(
    sessions: SessionFactory,
) -> None:
    sim = OnSiteSimulator()
    sim.sell_gift_card_in_store(SERIAL, Decimal("50"))
    sim.sell_gift_card_in_store(OTHER, Decimal("20"))
    async with adapter(sim, sessions) as pos:
        first = await changes(pos)
        cursor = first[-1].changed_at
        again = await changes(pos, cursor)
        rebuilt = await changes(pos)
        sim.redeem_in_store(SERIAL, Decimal("5"))
        later = await changes(pos, cursor)
        a = await pos.get_card(code_hash(SERIAL))
        b = await pos.get_card(code_hash(OTHER))
    # Inclusive cursor: the card changed exactly at it is reported again, counted once.
    assert [change.external_id for change in again] == [code_hash(OTHER)]
    assert rebuilt == first
    assert [change.external_id for change in later] == [code_hash(OTHER), code_hash(SERIAL)]
    assert a is not None and a.balance_minor == 4500
    assert b is not None and b.balance_minor == 2000
    assert len(await seen_moves(sessions)) == 3


async def test_concurrent_polls_count_each_invoice_once(sessions: SessionFactory) -> None:
    sim = OnSiteSimulator()
    for n in range(12):
        sim.sell_gift_card_in_store(f"ONSITE{n:08d}", Decimal("10"))
        sim.redeem_in_store(f"ONSITE{n:08d}", Decimal("2.50"))
    async with (
        adapter(sim, sessions) as first,
        adapter(sim, sessions) as second,
    ):
        await asyncio.gather(changes(first), changes(second), changes(first), changes(second, None))
        cards = [card async for card in first.iter_cards()]
    assert len(cards) == 12 and {card.balance_minor for card in cards} == {750}
    assert len(await seen_moves(sessions)) == 24


async def test_an_edited_invoice_is_corrected_by_the_difference(sessions: SessionFactory) -> None:
    sim = OnSiteSimulator()
    sold = sim.sell_gift_card_in_store(SERIAL, Decimal("40"))
    async with adapter(sim, sessions) as pos:
        cursor = (await changes(pos))[-1].changed_at
        invoice = sim.invoices[sold]
        invoice.lines[0].price = Decimal("25")
        invoice.lines[0].serial = OTHER  # keyed on the wrong card at the till, then fixed
        invoice.modified_at = invoice.modified_at + timedelta(seconds=5)
        await changes(pos, cursor)
        await changes(pos, cursor)
        moved_from = await pos.get_card(code_hash(SERIAL))
        moved_to = await pos.get_card(code_hash(OTHER))
    assert moved_from is not None and moved_from.balance_minor == 0
    assert moved_to is not None and moved_to.balance_minor == 2500
    assert await seen_moves(sessions) == [(f"{sold}:line:1", 2500)]


async def test_iter_cards_reads_history_and_refreshes_the_projection(
    sessions: SessionFactory,
) -> None:
    sim = OnSiteSimulator()
    sim.sell_gift_card_in_store(SERIAL, Decimal("30"))
    sim.sell_gift_card_in_store(OTHER, Decimal("12"))
    sim.redeem_in_store(OTHER, Decimal("2"))
    async with adapter(sim, sessions) as pos:
        assert await pos.get_card(code_hash(SERIAL)) is None  # never polled yet
        cards = {card.serial: card.balance_minor async for card in pos.iter_cards()}
        projected = await pos.get_card(code_hash(OTHER))
        await changes(pos)
        after_poll = await pos.get_card(code_hash(OTHER))
    assert cards == {SERIAL: 3000, OTHER: 1000}
    assert projected is not None and after_poll == projected


# ---- writes ----


async def test_create_card_is_recorded_so_the_poll_does_not_count_it_again(
    sessions: SessionFactory,
) -> None:
    sim = OnSiteSimulator()
    async with adapter(sim, sessions) as pos:
        card = await pos.create_card(
            SERIAL,
            2500,
            reference="order:1:create",
            note="Shopify …k3x9 #1001",
            customer_name="Ada",
        )
        retried = await pos.create_card(SERIAL, 2500, reference="order:1:create")
        polled = await changes(pos)
        after = await pos.get_card(card.external_id)
    (invoice,) = sim.invoices_with_reference("order:1:create")
    assert card.balance_minor == 2500 and card.serial == SERIAL and card.status == "enabled"
    assert retried == card
    assert [change.external_id for change in polled] == [card.external_id]
    assert after is not None and after.balance_minor == 2500
    assert sim.balance(SERIAL) == Decimal("25.00")
    assert invoice.notes == "Shopify …k3x9 #1001; For Ada"
    assert await seen_moves(sessions) == [(f"{invoice.invoice_id}:line:1", 2500)]


async def test_create_card_after_a_lost_answer_sells_one_card_once(
    sessions: SessionFactory,
) -> None:
    faults = Faults(lose_answer_rate=1.0)
    sim = OnSiteSimulator(faults)
    async with adapter(sim, sessions, client_timeout=0.3) as pos:
        card = await pos.create_card(SERIAL, 4000, reference="order:2:create")
        faults.lose_answer_rate = 0.0
        retried = await pos.create_card(SERIAL, 4000, reference="order:2:create")
        await changes(pos)
        after = await pos.get_card(card.external_id)
    assert len(sim.invoices_with_reference("order:2:create")) == 1
    assert card.balance_minor == retried.balance_minor == 4000
    assert after is not None and after.balance_minor == 4000
    assert sim.balance(SERIAL) == Decimal("40.00")


async def test_create_card_with_nothing_on_it_lives_in_the_projection(
    sessions: SessionFactory,
) -> None:
    sim = OnSiteSimulator()
    async with adapter(sim, sessions) as pos:
        card = await pos.create_card(SERIAL, 0, reference="order:3:create")
        with pytest.raises(ValueError):
            await pos.create_card(OTHER, -100, reference="order:4:create")
    assert card.balance_minor == 0 and card.serial == SERIAL
    assert sim.invoices == {}


async def test_move_applies_once_per_reference_and_polls_do_not_recount(
    sessions: SessionFactory,
) -> None:
    sim = OnSiteSimulator()
    sim.sell_gift_card_in_store(SERIAL, Decimal("50"))
    async with adapter(sim, sessions) as pos:
        await changes(pos)
        external_id = code_hash(SERIAL)
        await pos.move(external_id, 1000, reference="card:1:v1:pos")
        await pos.move(external_id, 1000, reference="card:1:v1:pos")
        await pos.move(external_id, -2550, reference="card:1:v2:pos")
        await pos.move(external_id, -2550, reference="card:1:v2:pos")
        await pos.move(external_id, 0, reference="card:1:v3:pos")
        recorded = await pos.get_card(external_id)
        await changes(pos)
        polled = await pos.get_card(external_id)
    assert sim.balance(SERIAL) == Decimal("34.50")
    assert recorded is not None and recorded.balance_minor == 3450
    assert polled == recorded
    assert len(sim.invoices_with_reference("card:1:v1:pos")) == 1
    assert len(sim.invoices_with_reference("card:1:v2:pos")) == 1
    assert len(sim.invoices) == 3


async def test_move_refusals_are_upstream_rejections(sessions: SessionFactory) -> None:
    sim = OnSiteSimulator()
    sim.sell_gift_card_in_store(SERIAL, Decimal("10"))
    async with adapter(sim, sessions) as pos:
        await changes(pos)
        with pytest.raises(UpstreamRejected):
            await pos.move(code_hash(SERIAL), -1001, reference="card:2:v1:pos")
        with pytest.raises(UpstreamRejected):
            await pos.move(code_hash(OTHER), 100, reference="card:2:v2:pos")
        card = await pos.get_card(code_hash(SERIAL))
    assert card is not None and card.balance_minor == 1000
    assert sim.balance(SERIAL) == Decimal("10") and len(sim.invoices) == 1


async def test_deactivate_redeems_to_zero_and_disables(sessions: SessionFactory) -> None:
    sim = OnSiteSimulator()
    sim.sell_gift_card_in_store(SERIAL, Decimal("42.10"))
    async with adapter(sim, sessions) as pos:
        await changes(pos)
        external_id = code_hash(SERIAL)
        await pos.deactivate(external_id, reference="deactivate:c1:onsite")
        await pos.deactivate(external_id, reference="deactivate:c1:onsite")
        polled = await changes(pos)
        card = await pos.get_card(external_id)
    assert sim.balance(SERIAL) == Decimal("0")
    assert len(sim.invoices_with_reference("deactivate:c1:onsite")) == 1
    assert card is not None and (card.balance_minor, card.status) == (0, "disabled")
    assert {change.external_id for change in polled} == {external_id}


@pytest.mark.parametrize(
    ("spent", "reloaded", "left"),
    [
        (Decimal("20"), Decimal("0"), Decimal("30.00")),
        (Decimal("5"), Decimal("15"), Decimal("60.00")),
    ],
)
async def test_deactivate_redeems_what_is_really_left_when_the_projection_lags(
    sessions: SessionFactory, spent: Decimal, reloaded: Decimal, left: Decimal
) -> None:
    sim = OnSiteSimulator()
    sim.sell_gift_card_in_store(SERIAL, Decimal("50"))
    async with adapter(sim, sessions) as pos:
        await changes(pos)
        # Tills at work since the last poll: the projection still says 50.
        sim.redeem_in_store(SERIAL, spent)
        if reloaded:
            sim.sell_gift_card_in_store(SERIAL, reloaded)
        await pos.deactivate(code_hash(SERIAL), reference="deactivate:c2:onsite")
        await changes(pos)
        card = await pos.get_card(code_hash(SERIAL))
        with pytest.raises(UpstreamRejected):
            await pos.deactivate(code_hash(OTHER), reference="deactivate:c3:onsite")
    assert sim.balance(SERIAL) == Decimal("0")
    (redemption,) = sim.invoices_with_reference("deactivate:c2:onsite")
    # Taken off as a gift card line of -1, paid out to the merchant's own method.
    assert [line.price * line.quantity for line in redemption.lines] == [-left]
    assert [(p.method, p.amount) for p in redemption.payments] == [("Shopify", -left)]
    assert card is not None and (card.balance_minor, card.status) == (0, "disabled")


async def test_customer_gives_email_and_names(sessions: SessionFactory) -> None:
    sim = OnSiteSimulator()
    ada = sim.add_customer("Ada", "Lovelace", "ada@example.com")
    async with adapter(sim, sessions) as pos:
        found = await pos.customer(ada)
        unknown = await pos.customer("777")
        odd = await pos.customer("1/../2")
    assert found == PosCustomer(email="ada@example.com", first_name="Ada", last_name="Lovelace")
    assert unknown is None and odd is None


# ---- upstream failures ----


async def test_onsite_down_surfaces_as_unavailable_and_counts_nothing(
    sessions: SessionFactory,
) -> None:
    sim = OnSiteSimulator(Faults(error_rate=1.0))
    sim.sell_gift_card_in_store(SERIAL, Decimal("10"))
    async with adapter(sim, sessions) as pos:
        with pytest.raises(UpstreamUnavailable):
            await changes(pos)
    assert await seen_moves(sessions) == []


async def test_a_write_whose_answer_is_lost_and_not_found_is_an_unknown_outcome(
    sessions: SessionFactory,
) -> None:
    sim = OnSiteSimulator()
    sim.sell_gift_card_in_store(SERIAL, Decimal("10"))
    async with adapter(sim, sessions, wrap=DropInvoicePosts) as pos:
        await changes(pos)
        with pytest.raises(UnknownOutcome) as caught:
            await pos.move(code_hash(SERIAL), -500, reference="card:3:v1:pos")
        card = await pos.get_card(code_hash(SERIAL))
    assert caught.value.reference == "card:3:v1:pos"
    assert card is not None and card.balance_minor == 1000
    assert sim.balance(SERIAL) == Decimal("10")
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(PosSeenMove)) == 1


async def test_iter_cards_logs_drift_between_projection_and_history(
    sessions: SessionFactory,
) -> None:
    sim = OnSiteSimulator()
    sim.sell_gift_card_in_store(SERIAL, Decimal("30"))
    voided = sim.redeem_in_store(SERIAL, Decimal("10"))
    async with adapter(sim, sessions) as pos:
        await changes(pos)
        del sim.invoices[voided]  # gone from OnSite's history after giftsync counted it
        with capture_logs() as logs:
            cards = [card async for card in pos.iter_cards()]
    assert [card.balance_minor for card in cards] == [2000]
    drift = [entry for entry in logs if entry["event"] == "onsite_projection_drift"]
    assert drift == [
        {
            "event": "onsite_projection_drift",
            "log_level": "warning",
            "code_last4": "1234",
            "projected_minor": 2000,
            "recomputed_minor": 3000,
        }
    ]
    assert SERIAL not in str(logs)


# ---- issue 15: one test per OnSite "what would break" bullet -----------------------------------

BOTH = [OnSiteReadings.strict(), OnSiteReadings.lenient()]


@pytest.mark.parametrize("readings", BOTH, ids=["strict", "lenient"])
async def test_a_poll_reads_each_summary_at_its_uri(
    sessions: SessionFactory, readings: OnSiteReadings
) -> None:
    """Lists hold summaries without lines, payments or a modification date."""
    sim = OnSiteSimulator(readings=readings)
    sim.sell_gift_card_in_store(SERIAL, Decimal("40"))
    sim.redeem_in_store(SERIAL, Decimal("15.50"))
    async with adapter(sim, sessions) as pos:
        polled = await changes(pos)
        card = await pos.get_card(code_hash(SERIAL))
    assert {change.external_id for change in polled} == {code_hash(SERIAL)}
    assert card is not None and card.balance_minor == 2450


@pytest.mark.parametrize("readings", BOTH, ids=["strict", "lenient"])
async def test_the_invoice_customer_owns_a_card_sold_in_store(
    sessions: SessionFactory, readings: OnSiteReadings
) -> None:
    """`invoice_customer/customer`, `lineitem_product`, `sell_price`: the sources' names."""
    sim = OnSiteSimulator(readings=readings)
    ada = sim.add_customer("Ada", "Lovelace", "ada@example.com")
    sim.sell_gift_card_in_store(SERIAL, Decimal("25.25"), ada)
    async with adapter(sim, sessions) as pos:
        await changes(pos)
        card = await pos.get_card(code_hash(SERIAL))
        owner = await pos.customer(ada)
    assert card is not None and (card.balance_minor, card.customer_id) == (2525, ada)
    assert owner == PosCustomer(email="ada@example.com", first_name="Ada", last_name="Lovelace")


@pytest.mark.parametrize(
    ("set_up", "readings", "named"),
    [
        (
            {"gift_card_product_code": "GIFT-X"},
            OnSiteReadings.strict(),
            "ONSITE_GIFT_CARD_PRODUCT_CODE",
        ),
        ({"payment_method": "giftsync online"}, OnSiteReadings.lenient(), "ONSITE_PAYMENT_METHOD"),
    ],
    ids=["product", "payment-method"],
)
async def test_a_product_or_method_missing_on_the_server_blocks_writes_and_is_named(
    sessions: SessionFactory, set_up: dict[str, str], readings: OnSiteReadings, named: str
) -> None:
    sim = OnSiteSimulator(readings=readings)
    async with adapter(sim, sessions, set_up=set_up) as pos:
        with pytest.raises(OnSiteSetupError, match=named) as caught:
            await pos.create_card(SERIAL, 2000, reference="order:9:create")
    # Unavailable, not refused for good: the job waits until the set-up is fixed.
    assert isinstance(caught.value, UpstreamUnavailable)
    assert sim.invoices == {} and ("POST", "/api/invoices/") not in sim.request_log
