"""Who may see a code, and limits that hold against parallel guessing and floods (DESIGN 1.B)."""

from __future__ import annotations

import asyncio
import ipaddress
from decimal import Decimal

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from app.sync.shadow.gate import CardGate
from tests.shop import CARD, PIN, Shop

WRONG = "9999"


async def test_without_a_checkout_token_every_apply_is_a_new_card(shop: Shop) -> None:
    first = await shop.apply("10.00", token=None)
    assert first.status_code == 200
    # Same address, same card, no PIN: no code comes back (no token derived from the address).
    follower = await shop.apply("10.00", token=None, pin=None)
    assert follower.status_code == 409 and follower.json()["code"] == "pin_required"
    assert "shopifyGiftCardCode" not in follower.text
    second = await shop.apply("10.00", token=None)
    assert second.json()["shopifyGiftCardCode"] != first.json()["shopifyGiftCardCode"]
    assert shop.held() == Decimal("20.00")


async def test_a_known_checkout_token_alone_never_gets_the_code(shop: Shop) -> None:
    owner = await shop.apply("30.00", token="known")
    code = owner.json()["shopifyGiftCardCode"]
    for attacker in (
        shop.apply("30.00", token="known", pin=None, address="203.0.113.9"),
        shop.apply("30.00", token="known", pin=None, apply_token="guess", address="203.0.113.9"),
    ):
        answer = await attacker
        assert answer.status_code in (403, 409), answer.text
        assert code not in answer.text
    with_token = await shop.resize("25.00", token="known")
    assert with_token.status_code == 200 and with_token.json()["shopifyGiftCardCode"] == code
    assert with_token.json()["applyToken"] == shop.tokens["known"]


async def test_the_apply_token_of_one_card_does_not_open_another(shop: Shop) -> None:
    other = "6280005555550005"
    shop.vii.add_card(other, "5555", Decimal("20.00"))
    mine = await shop.apply("10.00", token="t")
    stolen = mine.json()["applyToken"]
    await shop.apply("10.00", token="t", card=other, pin="5555")
    answer = await shop.apply("12.00", token="t", card=other, pin=None, apply_token=stolen)
    assert answer.status_code == 403 and answer.json()["code"] == "invalid_card_or_pin"


async def test_wrong_pins_reach_vii_at_most_five_times_then_429(shop: Shop) -> None:
    for _ in range(5):
        answer = await shop.apply("10.00", pin=WRONG)
        assert answer.status_code == 403
    asked = shop.vii.request_count
    refused = await shop.apply("10.00", pin=PIN)
    assert refused.status_code == 429 and refused.json()["code"] == "too_many_attempts"
    assert int(refused.headers["Retry-After"]) > 0
    assert shop.vii.request_count == asked  # the sixth never reached Vii


async def test_parallel_guesses_across_processes_cannot_pass_the_limit(shop: Shop) -> None:
    """Twelve guesses at once through two replicas (two gates on one database)."""
    assert shop.runtime.shadow is not None
    first = shop.runtime.shadow.gate
    second = CardGate(shop.runtime.engine, max_in_flight=20, wait_seconds=60)
    first.max_in_flight, first.wait_seconds = 20, 60
    shop.vii.barrier, shop.vii.barrier_cards = asyncio.Event(), {CARD}
    guesses = []
    for n in range(12):
        gate = first if n % 2 else second
        object.__setattr__(shop.runtime.shadow, "gate", gate)
        guesses.append(asyncio.create_task(shop.apply("10.00", token=f"g{n}", pin=WRONG)))
        await asyncio.sleep(0)
    while shop.vii.waiting == 0:
        await asyncio.sleep(0.01)
    shop.vii.barrier.set()
    answers = await asyncio.gather(*guesses)
    codes = sorted(a.json()["code"] for a in answers)
    assert codes == ["invalid_card_or_pin"] * 5 + ["too_many_attempts"] * 7
    failures = await shop.rows("SELECT count(*) AS n FROM pin_failures")
    assert failures[0].n == 5


async def test_ten_failures_in_a_day_lock_the_card_until_an_operator_clears_it(
    shop: Shop,
) -> None:
    for _ in range(5):
        await shop.apply("10.00", pin=WRONG)
    async with shop.engine.begin() as connection:  # the 15-minute window passes
        await connection.execute(
            text("UPDATE pin_failures SET failed_at = failed_at - interval '16 minutes'")
        )
    with capture_logs() as logged:
        for _ in range(5):
            assert (await shop.apply("10.00", pin=WRONG)).status_code == 403
    locked = await shop.apply("10.00", pin=PIN)
    assert locked.status_code == 423 and locked.json()["code"] == "card_locked"
    events = [e for e in logged if e["event"] == "security_event"]
    assert [e["event_kind"] for e in events] == ["card_locked"]
    assert events[0]["vii_last4"] == CARD[-4:] and PIN not in str(logged)
    async with shop.engine.begin() as connection:  # a day later it is still locked
        await connection.execute(
            text("UPDATE pin_failures SET failed_at = failed_at - interval '25 hours'")
        )
    assert (await shop.apply("10.00", pin=PIN)).status_code == 423
    headers = {"Authorization": f"Bearer {shop.runtime.settings.admin_token.get_secret_value()}"}  # type: ignore[union-attr]
    cleared = await shop.http.post(
        "/internal/lockouts/clear", json={"viiCardNumber": CARD}, headers=headers
    )
    assert cleared.status_code == 200 and cleared.json() == {"cleared": True}
    assert (await shop.apply("10.00", pin=PIN)).status_code == 200


async def test_twenty_failures_from_one_client_refuse_it_on_any_card(shop: Shop) -> None:
    cards = [f"62800066666600{n:02d}" for n in range(5)]
    for number in cards:
        shop.vii.add_card(number, "6666", Decimal("10.00"))
        for _ in range(4):
            assert (await shop.apply("5.00", card=number, pin=WRONG)).status_code == 403
    fresh = "6280007777770007"
    shop.vii.add_card(fresh, "7777", Decimal("10.00"))
    refused = await shop.apply("5.00", card=fresh, pin="7777")
    assert refused.status_code == 429 and refused.json()["code"] == "too_many_attempts"
    elsewhere = await shop.apply("5.00", card=fresh, pin="7777", address="10.0.0.2")
    assert elsewhere.status_code == 200


async def test_a_flood_on_one_card_never_makes_another_shopper_wait(shop: Shop) -> None:
    flooded = "6280008888880008"
    shop.vii.barrier, shop.vii.barrier_cards = asyncio.Event(), {flooded}
    flood = [
        asyncio.create_task(shop.apply("10.00", token=f"f{n}", card=flooded, pin="1111"))
        for n in range(40)
    ]
    while shop.vii.waiting == 0:
        await asyncio.sleep(0.01)
    honest = await asyncio.wait_for(shop.apply("10.00", token="honest"), timeout=30)
    assert honest.status_code == 200  # answered while the flood still waits on Vii
    shop.vii.barrier.set()
    answers = await asyncio.gather(*flood)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [403, 403] + [429] * 38
    assert {a.json()["code"] for a in answers if a.status_code == 429} == {"busy"}
    assert all(a.headers["Retry-After"] == "2" for a in answers if a.status_code == 429)


async def test_a_card_held_longer_than_the_wait_answers_busy(shop: Shop) -> None:
    assert shop.runtime.shadow is not None
    shop.runtime.shadow.gate.wait_seconds = 0.05
    shop.vii.barrier = asyncio.Event()
    first = asyncio.create_task(shop.apply("10.00", token="a"))
    while shop.vii.waiting == 0:
        await asyncio.sleep(0.01)
    second = await shop.apply("10.00", token="b")
    assert second.status_code == 429 and second.json()["code"] == "busy"
    shop.vii.barrier.set()
    assert (await first).status_code == 200


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "client"),
    [
        ("", "10.0.0.5", "1.2.3.4", "10.0.0.5"),  # no trusted proxy: the header is ignored
        ("10.0.0.0/8", "10.0.0.5", "1.2.3.4", "1.2.3.4"),
        ("10.0.0.0/8", "10.0.0.5", "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # right-most untrusted
        ("10.0.0.0/8", "10.0.0.5", "1.2.3.4, 10.0.0.9", "1.2.3.4"),  # skip trusted hops
        ("10.0.0.0/8", "192.0.2.1", "1.2.3.4", "192.0.2.1"),  # peer not trusted: ignored
        ("127.0.0.1", "127.0.0.1", "not-an-ip", "not-an-ip"),
    ],
)
def test_the_client_is_the_socket_or_the_rightmost_untrusted_forwarded_address(
    trusted: str, peer: str, forwarded: str, client: str
) -> None:
    from starlette.requests import Request

    from app.routers.client import client_address

    scope = {
        "type": "http",
        "client": (peer, 1),
        "headers": [(b"x-forwarded-for", forwarded.encode())],
    }
    networks = [ipaddress.ip_network(part) for part in trusted.split(",") if part]
    assert client_address(Request(scope), networks) == client


async def test_behind_a_trusted_proxy_one_guesser_does_not_lock_out_the_others(
    shop: Shop,
) -> None:
    shop.runtime.settings = shop.runtime.settings.model_copy(
        update={"trusted_proxies": (ipaddress.ip_network("10.0.0.0/8"),)}
    )
    guesser = {"X-Forwarded-For": "198.51.100.7"}
    for n in range(5):
        number = f"62800044444400{n:02d}"
        shop.vii.add_card(number, "4444", Decimal("10.00"))
        for _ in range(4):
            await shop.apply("5.00", card=number, pin=WRONG, headers=guesser)
    assert (await shop.apply("5.00", headers=guesser)).json()["code"] == "too_many_attempts"
    # Same proxy, another shopper: not the guesser's problem.
    other = await shop.apply("5.00", headers={"X-Forwarded-For": "198.51.100.8"})
    assert other.status_code == 200, other.text
