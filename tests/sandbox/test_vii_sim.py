"""The Vii simulator driven through the real client: balances, holds, Undo, faults, concurrency."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from app.clients.vii import (
    ViiAuthFailed,
    ViiCardInactive,
    ViiClient,
    ViiHoldNotFound,
    ViiInsufficientFunds,
    ViiInvalidPin,
    ViiUnavailable,
    ViiUnknownCard,
    ViiUnknownOutcome,
)
from app.sandbox.faults import Faults
from app.sandbox.vii import (
    DEMO_PASSWORD,
    DEMO_STORE_ID,
    DEMO_USERNAME,
    GARBAGE_ANSWER,
    ViiSimulator,
)

URL = "http://vii.sim/"
CARD = "6280001111222233"
PIN = "4821"


@pytest.fixture
def sim() -> ViiSimulator:
    simulator = ViiSimulator(Faults(seed=7, lost_answer_hang_s=30.0))
    simulator.add_card(CARD, PIN, Decimal("100.00"))
    return simulator


def client_for(sim: ViiSimulator, **overrides: str) -> ViiClient:
    credentials = {"username": DEMO_USERNAME, "password": DEMO_PASSWORD, "store_id": DEMO_STORE_ID}
    credentials.update(overrides)
    return ViiClient(
        URL,
        credentials["username"],
        credentials["password"],
        credentials["store_id"],
        timeout=0.5,
        backoff=0.0,
        transport=httpx.ASGITransport(app=sim.app),
    )


@pytest.fixture
async def vii(sim: ViiSimulator) -> AsyncIterator[ViiClient]:
    client = client_for(sim)
    yield client
    await client.aclose()


async def test_balance_and_pre_auth_capture_flow(sim: ViiSimulator, vii: ViiClient) -> None:
    balance = await vii.check_balance(CARD, PIN)
    assert (balance.available, balance.current, balance.card_last4) == (
        Decimal("100.00"),
        Decimal("100.00"),
        "2233",
    )
    assert balance.status_id == "1" and balance.expires_at is not None
    assert balance.expires_at > datetime.now()

    hold = await vii.pre_auth(CARD, PIN, Decimal("60.00"), "checkout-1")
    assert hold.available == Decimal("40.00")
    assert sim.open_holds(CARD) == {hold.pre_auth_code: Decimal("60.00")}
    after_hold = await vii.check_balance(CARD, PIN)
    assert (after_hold.available, after_hold.current) == (Decimal("40.00"), Decimal("100.00"))

    # Capture less than held: the hold closes and the rest is free again.
    capture = await vii.redeem(
        CARD, PIN, Decimal("45.50"), "order-1", pre_auth_code=hold.pre_auth_code
    )
    assert capture.available == Decimal("54.50")
    assert sim.balance(CARD) == Decimal("54.50") and sim.open_holds(CARD) == {}
    assert sim.hold_state(hold.pre_auth_code) == "captured"

    # A second capture of the same hold finds nothing to capture.
    with pytest.raises(ViiHoldNotFound):
        await vii.redeem(CARD, PIN, Decimal("1.00"), "order-1", pre_auth_code=hold.pre_auth_code)
    assert sim.balance(CARD) == Decimal("54.50")


async def test_redeem_without_hold_spends_only_what_is_not_held(
    sim: ViiSimulator, vii: ViiClient
) -> None:
    await vii.pre_auth(CARD, PIN, Decimal("70.00"), "c")
    with pytest.raises(ViiInsufficientFunds) as caught:
        await vii.redeem(CARD, PIN, Decimal("30.01"), "o")
    assert caught.value.available == Decimal("30.00")
    spent = await vii.redeem(CARD, PIN, Decimal("30.00"), "o")
    assert spent.available == Decimal("0.00") and sim.balance(CARD) == Decimal("70.00")


async def test_no_partial_pre_auth_and_the_error_reports_available(
    sim: ViiSimulator, vii: ViiClient
) -> None:
    sim.spend(CARD, Decimal("62.75"))  # spent in another shop, behind giftsync's back
    with pytest.raises(ViiInsufficientFunds) as caught:
        await vii.pre_auth(CARD, PIN, Decimal("50.00"), "c")
    assert caught.value.available == Decimal("37.25") and caught.value.code == "2"
    assert sim.open_holds(CARD) == {}


async def test_capture_above_the_hold_is_refused(sim: ViiSimulator, vii: ViiClient) -> None:
    hold = await vii.pre_auth(CARD, PIN, Decimal("20.00"), "c")
    with pytest.raises(ViiInsufficientFunds):
        await vii.redeem(CARD, PIN, Decimal("20.01"), "o", pre_auth_code=hold.pre_auth_code)
    assert sim.open_holds(CARD) == {hold.pre_auth_code: Decimal("20.00")}


async def test_cancel_releases_the_hold_and_is_safe_to_repeat(
    sim: ViiSimulator, vii: ViiClient
) -> None:
    hold = await vii.pre_auth(CARD, PIN, Decimal("20.00"), "c")
    await vii.cancel_pre_auth(CARD, hold.pre_auth_code, "c")
    await vii.cancel_pre_auth(CARD, hold.pre_auth_code, "c")
    assert sim.open_holds(CARD) == {} and sim.available(CARD) == Decimal("100.00")
    with pytest.raises(ViiHoldNotFound):
        await vii.redeem(CARD, PIN, Decimal("5.00"), "o", pre_auth_code=hold.pre_auth_code)
    with pytest.raises(ViiHoldNotFound):
        await vii.cancel_pre_auth(CARD, "0000000000", "c")


async def test_spending_elsewhere_cannot_touch_held_funds(
    sim: ViiSimulator, vii: ViiClient
) -> None:
    await vii.pre_auth(CARD, PIN, Decimal("90.00"), "c")
    with pytest.raises(ValueError, match="available"):
        sim.spend(CARD, Decimal("10.01"))
    assert sim.spend(CARD, Decimal("10.00")) == Decimal("90.00")


async def test_errors_map_to_their_exceptions(sim: ViiSimulator, vii: ViiClient) -> None:
    with pytest.raises(ViiInvalidPin):
        await vii.check_balance(CARD, "0000")
    with pytest.raises(ViiInvalidPin):
        await vii.pre_auth(CARD, "0000", Decimal("1.00"), "c")
    with pytest.raises(ViiUnknownCard):
        await vii.check_balance("6280009999999999", PIN)
    sim.deactivate(CARD)
    with pytest.raises(ViiCardInactive):
        await vii.check_balance(CARD, PIN)
    with pytest.raises(ViiCardInactive):
        await vii.redeem(CARD, PIN, Decimal("1.00"), "o")
    sim.activate(CARD)
    sim.add_card(
        "6280004444555566", "1111", Decimal("10"), expires_at=datetime.now() - timedelta(1)
    )
    with pytest.raises(ViiCardInactive):
        await vii.pre_auth("6280004444555566", "1111", Decimal("1.00"), "c")
    assert sim.balance(CARD) == Decimal("100.00")


@pytest.mark.parametrize("wrong", ["username", "password", "store_id"])
async def test_wrong_credentials_are_auth_failures(sim: ViiSimulator, wrong: str) -> None:
    client = client_for(sim, **{wrong: "nope"})
    with pytest.raises(ViiAuthFailed):
        await client.check_balance(CARD, PIN)
    with pytest.raises(ViiAuthFailed):
        await client.redeem(CARD, PIN, Decimal("1.00"), "o")
    await client.aclose()
    assert sim.balance(CARD) == Decimal("100.00")


async def test_lost_redemption_answer_then_undo_then_redeem_again(
    sim: ViiSimulator, vii: ViiClient
) -> None:
    sim.faults.lose_answer_rate = 1.0
    tran_id = ViiClient.new_tran_id()
    with pytest.raises(ViiUnknownOutcome) as caught:
        await vii.redeem(CARD, PIN, Decimal("25.00"), "o-1", tran_id=tran_id)
    assert caught.value.reference == tran_id
    assert sim.balance(CARD) == Decimal("75.00")  # it did happen
    sim.faults.lose_answer_rate = 0.0

    assert await vii.undo(CARD, tran_id) is True
    assert sim.balance(CARD) == Decimal("100.00")
    assert await vii.undo(CARD, tran_id) is False
    assert sim.balance(CARD) == Decimal("100.00")

    again = await vii.redeem(CARD, PIN, Decimal("25.00"), "o-1")
    assert again.tran_id != tran_id and again.available == Decimal("75.00")
    assert sim.balance(CARD) == Decimal("75.00")


async def test_lost_pre_auth_answer_then_undo_releases_the_hold(
    sim: ViiSimulator, vii: ViiClient
) -> None:
    sim.faults.lose_answer_rate = 1.0
    with pytest.raises(ViiUnknownOutcome) as caught:
        await vii.pre_auth(CARD, PIN, Decimal("40.00"), "c-1")
    sim.faults.lose_answer_rate = 0.0
    assert list(sim.open_holds(CARD).values()) == [Decimal("40.00")]
    assert await vii.undo(CARD, caught.value.reference) is True
    assert sim.open_holds(CARD) == {} and sim.available(CARD) == Decimal("100.00")
    assert await vii.undo(CARD, caught.value.reference) is False


async def test_undo_of_something_that_never_arrived_has_nothing_to_reverse(
    sim: ViiSimulator, vii: ViiClient
) -> None:
    sim.faults.error_rate = 1.0  # 503 before anything is applied: not sent, for the client
    tran_id = ViiClient.new_tran_id()
    with pytest.raises(ViiUnavailable):
        await vii.redeem(CARD, PIN, Decimal("10.00"), "o", tran_id=tran_id)
    sim.faults.error_rate = 0.0
    assert await vii.undo(CARD, tran_id) is False
    assert sim.balance(CARD) == Decimal("100.00")


async def test_undo_of_a_declined_request_has_nothing_to_reverse(
    sim: ViiSimulator, vii: ViiClient
) -> None:
    tran_id = ViiClient.new_tran_id()
    with pytest.raises(ViiInsufficientFunds):
        await vii.redeem(CARD, PIN, Decimal("100.01"), "o", tran_id=tran_id)
    assert await vii.undo(CARD, tran_id) is False
    assert sim.balance(CARD) == Decimal("100.00")


async def test_a_replayed_tran_id_is_applied_once(sim: ViiSimulator, vii: ViiClient) -> None:
    tran_id = ViiClient.new_tran_id()
    first = await vii.redeem(CARD, PIN, Decimal("10.00"), "o", tran_id=tran_id)
    second = await vii.redeem(CARD, PIN, Decimal("10.00"), "o", tran_id=tran_id)
    assert first == second
    assert sim.balance(CARD) == Decimal("90.00")
    hold_id = ViiClient.new_tran_id()
    hold_a = await vii.pre_auth(CARD, PIN, Decimal("5.00"), "c", tran_id=hold_id)
    hold_b = await vii.pre_auth(CARD, PIN, Decimal("5.00"), "c", tran_id=hold_id)
    assert hold_a.pre_auth_code == hold_b.pre_auth_code and len(sim.open_holds(CARD)) == 1


async def test_concurrent_pre_auths_never_exceed_the_balance(
    sim: ViiSimulator, vii: ViiClient
) -> None:
    sim.faults.latency_ms = 5  # every request waits, so they all overlap
    results = await asyncio.gather(
        *(vii.pre_auth(CARD, PIN, Decimal("15.00"), f"c-{i}") for i in range(20)),
        return_exceptions=True,
    )
    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, ViiInsufficientFunds)]
    assert len(granted) == 6 and len(refused) == 14
    assert sum(sim.open_holds(CARD).values()) == Decimal("90.00")
    assert sim.available(CARD) == Decimal("10.00")
    assert all(r.available >= 0 for r in refused)


async def test_concurrent_redemptions_never_overdraw(sim: ViiSimulator, vii: ViiClient) -> None:
    sim.faults.latency_ms = 5
    results = await asyncio.gather(
        *(vii.redeem(CARD, PIN, Decimal("30.00"), f"o-{i}") for i in range(10)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 3
    assert sim.balance(CARD) == Decimal("10.00")


async def test_error_rate_makes_safe_requests_retry_then_give_up(
    sim: ViiSimulator, vii: ViiClient
) -> None:
    sim.faults.error_rate = 1.0
    before = sim.request_count
    with pytest.raises(ViiUnavailable):
        await vii.check_balance(CARD, PIN)
    assert sim.request_count - before == 3


async def test_garbage_and_entity_bomb_answers_are_unavailable(
    sim: ViiSimulator, vii: ViiClient
) -> None:
    sim.garbage_body = GARBAGE_ANSWER
    with pytest.raises(ViiUnavailable):
        await vii.check_balance(CARD, PIN)
    sim.garbage_body = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b"<Response><ResponseCode>0</ResponseCode><ResponseMessage>&c;</ResponseMessage>"
        b"</Response>"
    )
    with pytest.raises(ViiUnavailable):
        await vii.check_balance(CARD, PIN)
    # A garbled answer to a redemption that was applied: outcome unknown, Undo repairs it.
    sim.garbage_body = GARBAGE_ANSWER
    with pytest.raises(ViiUnknownOutcome) as caught:
        await vii.redeem(CARD, PIN, Decimal("10.00"), "o")
    sim.garbage_body = None
    assert sim.balance(CARD) == Decimal("90.00")
    assert await vii.undo(CARD, caught.value.reference) is True
    assert sim.balance(CARD) == Decimal("100.00")


async def test_force_throttle_is_unavailable(sim: ViiSimulator, vii: ViiClient) -> None:
    sim.faults.force_throttle = True
    with pytest.raises(ViiUnavailable) as caught:
        await vii.redeem(CARD, PIN, Decimal("1.00"), "o")
    assert caught.value.retry_after == 1.0
    assert sim.balance(CARD) == Decimal("100.00")


async def test_faults_endpoint_and_malformed_requests(sim: ViiSimulator) -> None:
    transport = httpx.ASGITransport(app=sim.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vii.sim") as http:
        switched = await http.post("/_sim/faults", json={"latency_ms": 1})
        assert switched.status_code == 200 and sim.faults.latency_ms == 1
        bad = await http.post("/", content=b"<Request><oops>")
        assert bad.status_code == 400 and b"<ResponseCode>9</ResponseCode>" in bad.content
        bomb = await http.post(
            "/",
            content=b'<!DOCTYPE r [<!ENTITY a "x">]><Request><RequestType>&a;</RequestType></Request>',
        )
        assert bomb.status_code == 400


async def test_seed_demo_lists_three_demo_cards(sim: ViiSimulator, vii: ViiClient) -> None:
    fresh = ViiSimulator()
    lines = fresh.seed_demo()
    cards = re.findall(r"\b(628000\d{10})\b PIN (\d{4}) balance (\d+\.\d{2})", "\n".join(lines))
    assert len(cards) == 3
    for number, _pin, balance in cards:
        assert fresh.balance(number) == Decimal(balance)
    assert {balance for _, _, balance in cards} == {"50.00", "120.00", "500.00"}
    assert fresh.seed_demo() == lines  # idempotent
    client = client_for(fresh)
    number, pin, balance = cards[0]
    assert (await client.check_balance(number, pin)).available == Decimal(balance)
    await client.aclose()
    assert "4821" not in repr(sim) and CARD not in repr(sim)


async def _capture_15_of_a_20_hold(vii: ViiClient) -> tuple[str, str]:
    """A hold of 20.00 and a capture of 15.00 from it: (hold code, the capture's tran id)."""
    hold = await vii.pre_auth(CARD, PIN, Decimal("20.00"), "c")
    tran_id = ViiClient.new_tran_id()
    await vii.redeem(
        CARD, PIN, Decimal("15.00"), "o", pre_auth_code=hold.pre_auth_code, tran_id=tran_id
    )
    return hold.pre_auth_code, tran_id


async def test_an_undone_capture_goes_back_where_the_reading_says(
    sim: ViiSimulator, vii: ViiClient, capture_frees_rest: bool, undo_restores_hold: bool
) -> None:
    """Silent documents, two readings: the money of an undone capture is free on the card, or
    back in the hold it came from (which reopens)."""
    sim.capture_frees_rest = capture_frees_rest
    sim.undo_restores_hold = undo_restores_hold
    _, tran_id = await _capture_15_of_a_20_hold(vii)

    assert await vii.undo(CARD, tran_id) is True

    assert sim.balance(CARD) == Decimal("100.00")
    rest = Decimal("0.00") if capture_frees_rest else Decimal("5.00")
    held = rest + (Decimal("15.00") if undo_restores_hold else Decimal("0.00"))
    assert sum(sim.open_holds(CARD).values(), Decimal(0)) == held
    assert sim.available(CARD) == Decimal("100.00") - held


async def test_an_undo_never_reopens_a_cancelled_hold(sim: ViiSimulator, vii: ViiClient) -> None:
    sim.capture_frees_rest = False
    sim.undo_restores_hold = True
    hold_code, tran_id = await _capture_15_of_a_20_hold(vii)
    await vii.cancel_pre_auth(CARD, hold_code, "c")

    assert await vii.undo(CARD, tran_id) is True

    assert sim.open_holds(CARD) == {} and sim.available(CARD) == Decimal("100.00")
