"""Upstream faults against the service's real flows: the answer, the compensation, the recovery.

Each upstream (Vii, Shopify, Lightspeed R-Series, OnSite) is made slow (beyond the client's
timeout), down (connection refused, 503), throttling (Shopify THROTTLED, HTTP 429), answering
garbage (an HTML error page, a body cut short, wrong types) or losing its answer after applying
the request. Then, through the flows the service really runs (`POST /check-balance` and its
release, the close job that captures after `orders/paid` through the webhook inbox and the
worker, the omni pollers and move jobs), each test shows:

- the service answers within its timeouts with the documented 503 problem (never a 500, never a
  hang; acknowledging a webhook touches no upstream at all);
- it compensates: no Vii hold is left without a live shadow card, no live Shopify card without
  its hold, and a Shopify card is never left spendable after its hold was freed;
- it recovers by itself once the fault is cleared: its jobs are retried (made due at once in
  SQL instead of sleeping through their backoff) and every balance ends exact, counted once.

A test marked `xfail(strict=True)` is a bug found here (its reason names the code); it fails
today, and once the code is fixed it passes and must lose its mark.

Already covered elsewhere, and not repeated here:
- tests/sync/shadow/test_intents.py: an unexpected exception at every apply step (the durable
  intent the recovery job reverses), a Shopify refusal of the create (hold freed before the
  503), an unknown create (hold kept until search shows no card).
- tests/sync/shadow/test_money_rules.py: release, expiry, cancellation and late or duplicated
  webhooks around spends; the close captures what the deactivated card spent.
- tests/sync/test_omni.py: Shopify 503 during a mirrored move, retried until it lands.
- tests/sync/test_pos_lightspeed.py, tests/sync/test_pos_onsite.py: lost answers and 503s at
  the POS adapters; tests/clients/test_*.py: each client's own error mapping on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.clients.errors import UpstreamError
from app.runtime import Runtime
from tests.faults.rig import (
    HTML_ERROR_PAGE,
    SLOW_MS,
    OmniRig,
    ShadowRig,
    cut_short,
    end_search_grace,
    http,
    omni_rig,
    replace_json_values,
    replace_xml_values,
    shadow_rig,
    shopify_op,
    unfinished_jobs,
    vii_type,
)

CARD = "6280001234567890"
PIN = "4321"
SERIAL = "gc20261123a1"
# Every answer must come well inside this: the sum of the timeouts of every call a checkout
# can make (3 Vii balance attempts, a pre-auth, 3 cancel attempts; a Shopify create, 4 searches,
# a second create, 4 more), at the rig's 0.3 s client timeout, with room to spare. A hung
# upstream would otherwise hold the shopper for the hour the simulators hang.
ANSWER_DEADLINE_S = 15.0
# What a shopper may be kept waiting by an upstream's pacing: the Shopify client's own default
# timeout for one call. Pacing waits are virtual in these tests (see rig.VirtualSleep).
CHECKOUT_WAIT_BUDGET_S = 10.0

Fault = Callable[[ShadowRig], Any]

_THROTTLED = json.dumps(
    {
        "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
        "extensions": {
            "cost": {
                "requestedQueryCost": 10,
                "actualQueryCost": None,
                "throttleStatus": {
                    "maximumAvailable": 1000.0,
                    "currentlyAvailable": 0.0,
                    "restoreRate": 100.0,
                },
            }
        },
    }
).encode()


async def answered(call: Awaitable[httpx.Response]) -> httpx.Response:
    """The service's answer; a hang past every timeout it has fails the test instead."""
    async with asyncio.timeout(ANSWER_DEADLINE_S):
        return await call


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    if status == 503:
        assert int(response.headers["Retry-After"]) > 0
    return body


def set_faults(target: str, **switches: Any) -> Fault:
    """Switch the simulator's own `Faults` (`target` is `vii` or `shop`)."""

    def apply(rig: ShadowRig) -> None:
        sim = rig.vii_sim if target == "vii" else rig.shop_sim
        sim.faults.update(switches)

    return apply


@pytest.fixture
async def rig(runtime: Runtime, engine: AsyncEngine) -> AsyncIterator[ShadowRig]:
    async with shadow_rig(runtime, engine) as rig:
        rig.add_vii_card(CARD, PIN, "50.00")
        yield rig


async def apply_ok(rig: ShadowRig, cart: str, *, pin: str | None = PIN) -> dict[str, Any]:
    response = await answered(rig.apply(cart, card=CARD, pin=pin))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def resize_ok(rig: ShadowRig, cart: str) -> dict[str, Any]:
    """A re-size with the apply token the last answer gave (no PIN), as the checkout sends it."""
    response = await answered(rig.resize(cart, card=CARD))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["applyToken"] == rig.apply_tokens["c-1"]
    return answer


# --- checkout: Vii faults at apply ------------------------------------------------------------

VII_AT_APPLY: dict[str, Fault] = {
    "slow": set_faults("vii", latency_ms=SLOW_MS),
    "refused": lambda rig: rig.vii_wire.refuse(),
    "503": set_faults("vii", error_rate=1.0),
    "throttled-429": set_faults("vii", force_throttle=True),
    "html-page": lambda rig: rig.vii_wire.answer(HTML_ERROR_PAGE),
    "wrong-types-balance": lambda rig: rig.vii_wire.garble(
        replace_xml_values("fifty", "AvailableBalance", "CurrentBalance"),
        match=vii_type("CheckBalance"),
    ),
    "pre-auth-slow": lambda rig: rig.vii_wire.stall(vii_type("PreAuthRequest")),
    "pre-auth-503": lambda rig: rig.vii_wire.answer(
        b"Service unavailable", status=503, match=vii_type("PreAuthRequest")
    ),
    # Applied on Vii, then an answer the client cannot read: a hold it never got the code of.
    "pre-auth-cut-short": lambda rig: rig.vii_wire.garble(
        cut_short, match=vii_type("PreAuthRequest")
    ),
    "pre-auth-wrong-types": lambda rig: rig.vii_wire.garble(
        replace_xml_values("n/a", "AvailableBalance", "CurrentBalance"),
        match=vii_type("PreAuthRequest"),
    ),
}


# The faults at the pre-auth, each with whether Vii placed the hold before its answer was lost.
# These leave the outcome of the pre-auth unknown: the apply's durable intent (a `pending` row
# written before Vii was asked) stays for the recovery job.
PRE_AUTH_HOLD_PLACED = {
    "pre-auth-slow": False,
    "pre-auth-cut-short": True,
    "pre-auth-wrong-types": True,
}
# A 503 says Vii did nothing (app/clients/delivery.py): the intent is closed at once, settled.
PRE_AUTH_NOT_DONE = {"pre-auth-503"}


@pytest.mark.parametrize("fault", VII_AT_APPLY)
async def test_vii_fault_at_apply_is_a_503_that_leaves_nothing_and_recovers(
    rig: ShadowRig, fault: str
) -> None:
    VII_AT_APPLY[fault](rig)
    response = await answered(rig.apply("20.00", card=CARD, pin=PIN))
    assert_problem(response, 503, "vii_unavailable")
    assert rig.live_shopify_cards() == {}
    if fault in PRE_AUTH_NOT_DONE:
        [intent] = await rig.shadow_rows()
        assert (intent.state, intent.hold_code, intent.shopify_gift_card_id) == (
            "abandoned",
            None,
            None,
        )
        assert rig.open_holds() == {}
        assert await unfinished_jobs(rig.engine) == []
    elif fault in PRE_AUTH_HOLD_PLACED:
        [intent] = await rig.shadow_rows()
        assert (intent.state, intent.hold_code, intent.shopify_gift_card_id) == (
            "pending",
            None,
            None,
        )
        placed = PRE_AUTH_HOLD_PLACED[fault]
        assert list(rig.open_holds().values()) == ([Decimal("20.00")] if placed else [])
        assert [job[:2] for job in await unfinished_jobs(rig.engine)] == [
            ("shadow.recover", "queued")
        ]
    else:
        # Vii failed before any hold was asked for: nothing was written.
        assert await rig.shadow_rows() == []
        assert await unfinished_jobs(rig.engine) == []

    # While Vii is still failing, compensation keeps being retried, never given up.
    await rig.run_jobs(rounds=2)
    assert not [job for job in await unfinished_jobs(rig.engine) if job[1] == "dead"]

    rig.clear_faults()
    await end_search_grace(rig.engine)  # no Shopify card was ever asked for
    await rig.run_jobs()
    await rig.assert_consistent()  # a hold Vii made anyway has been undone
    assert rig.open_holds() == {}
    assert [row.state for row in await rig.shadow_rows()] == (
        ["abandoned"] if fault in PRE_AUTH_HOLD_PLACED or fault in PRE_AUTH_NOT_DONE else []
    )

    answer = await apply_ok(rig, "20.00")
    assert answer["amountApplied"] == "20.00" and answer["viiBalance"] == "50.00"
    await rig.assert_consistent()


# --- checkout: Shopify faults at apply ----------------------------------------------------------

# (fault, what the checkout can do about it): "recovered" when the client finds the card it
# made by its code and the shopper gets a 200; "503" when the outcome stays unknown or failed.
SHOPIFY_AT_APPLY: dict[str, tuple[Fault, str]] = {
    "slow": (set_faults("shop", latency_ms=SLOW_MS), "503"),
    "refused": (lambda rig: rig.shop_wire.refuse(), "503"),
    "html-page": (lambda rig: rig.shop_wire.answer(HTML_ERROR_PAGE), "503"),
    "create-lost-after-applying": (set_faults("shop", lose_answer_rate=1.0), "recovered"),
    "create-html-after-applying": (
        lambda rig: rig.shop_wire.garble(
            lambda _: HTML_ERROR_PAGE, match=shopify_op("GiftCardCreate")
        ),
        "recovered",
    ),
    "create-cut-short-after-applying": (
        lambda rig: rig.shop_wire.garble(cut_short, match=shopify_op("GiftCardCreate")),
        "recovered",
    ),
    "create-lost-and-search-down": (
        lambda rig: (
            rig.shop_wire.lose(shopify_op("GiftCardCreate")),
            rig.shop_wire.refuse(shopify_op("GiftCardsSearch")),
        ),
        "503",
    ),
}


@pytest.mark.parametrize("fault", SHOPIFY_AT_APPLY)
async def test_shopify_fault_at_apply_never_leaves_a_card_without_its_hold(
    rig: ShadowRig, fault: str
) -> None:
    make_fault, outcome = SHOPIFY_AT_APPLY[fault]
    make_fault(rig)
    response = await answered(rig.apply("20.00", card=CARD, pin=PIN))
    if outcome == "recovered":
        assert response.status_code == 200, response.text
        assert response.json()["amountApplied"] == "20.00"
        rig.clear_faults()
        await rig.assert_consistent()  # one card, one hold, both of 20.00
        assert len(rig.shop_sim.shop.gift_cards) == 1
        return
    assert_problem(response, 503, "shopify_unavailable")
    await _recover_after_shopify_failure(rig)


async def _recover_after_shopify_failure(rig: ShadowRig) -> None:
    # Until the Shopify card is known not to exist, the hold backing it stays.
    for card in rig.live_shopify_cards().values():
        assert sum(rig.open_holds().values()) >= card
    rig.clear_faults()
    await rig.run_jobs()
    await end_search_grace(rig.engine)
    await rig.run_jobs()
    await rig.assert_consistent()
    assert rig.open_holds() == {} and rig.live_shopify_cards() == {}
    answer = await apply_ok(rig, "20.00")
    assert answer["amountApplied"] == "20.00"
    await rig.assert_consistent()


@pytest.mark.parametrize(
    "garble",
    [
        pytest.param(replace_json_values("amount", "abc"), id="wrong-types"),
        pytest.param(lambda _: b'{"data": {"giftCardCreate": null}}', id="null-payload"),
    ],
)
async def test_an_applied_create_with_an_unreadable_answer_keeps_card_and_hold_together(
    rig: ShadowRig, garble: Callable[[bytes], bytes]
) -> None:
    rig.shop_wire.garble(garble, match=shopify_op("GiftCardCreate"))
    response = await answered(rig.apply("20.00", card=CARD, pin=PIN))
    rig.clear_faults()
    if response.status_code == 200:
        await rig.assert_consistent()
        return
    assert_problem(response, 503, "shopify_unavailable")
    await _recover_after_shopify_failure(rig)


async def test_shopify_throttling_at_apply_is_bounded_by_the_checkout_budget(
    rig: ShadowRig,
) -> None:
    rig.shop_sim.faults.force_throttle = True
    response = await answered(rig.apply("20.00", card=CARD, pin=PIN))
    assert_problem(response, 503, "shopify_unavailable")
    assert rig.shop_waits.waited <= CHECKOUT_WAIT_BUDGET_S
    await _recover_after_shopify_failure(rig)


async def test_persistent_shopify_throttling_at_apply_compensates_and_recovers(
    rig: ShadowRig,
) -> None:
    """However long it waited (see the test above), the outcome is clean."""
    rig.shop_sim.faults.force_throttle = True
    response = await answered(rig.apply("20.00", card=CARD, pin=PIN))
    assert_problem(response, 503, "shopify_unavailable")
    await _recover_after_shopify_failure(rig)


async def test_brief_shopify_throttling_at_apply_is_waited_out(rig: ShadowRig) -> None:
    rig.shop_wire.answer(_THROTTLED, content_type="application/json", times=3)
    answer = await apply_ok(rig, "20.00")
    assert answer["amountApplied"] == "20.00"
    assert 0 < rig.shop_waits.waited <= CHECKOUT_WAIT_BUDGET_S
    await rig.assert_consistent()


# --- checkout: Shopify faults at re-size --------------------------------------------------------

SHOPIFY_AT_RESIZE: dict[str, tuple[Fault, str]] = {
    "refused": (lambda rig: rig.shop_wire.refuse(), "503"),
    "slow": (set_faults("shop", latency_ms=SLOW_MS), "503"),
    "503": (set_faults("shop", error_rate=1.0), "503"),
    "throttled": (set_faults("shop", force_throttle=True), "503"),
    "debit-lost-after-applying": (
        lambda rig: rig.shop_wire.lose(shopify_op("GiftCardDebit")),
        "recovered",
    ),
    "debit-cut-short-after-applying": (
        lambda rig: rig.shop_wire.garble(cut_short, match=shopify_op("GiftCardDebit")),
        "recovered",
    ),
}


@pytest.mark.parametrize("fault", SHOPIFY_AT_RESIZE)
async def test_shopify_fault_at_resize_keeps_card_and_record_in_step(
    rig: ShadowRig, fault: str
) -> None:
    code = (await apply_ok(rig, "40.00"))["shopifyGiftCardCode"]
    make_fault, outcome = SHOPIFY_AT_RESIZE[fault]
    make_fault(rig)
    response = await answered(rig.resize("30.00", card=CARD))
    if outcome == "recovered":
        assert response.status_code == 200, response.text
        assert response.json()["amountApplied"] == "30.00"
    else:
        assert_problem(response, 503, "shopify_unavailable")
    rig.clear_faults()
    await rig.assert_consistent()  # the card holds exactly what the service recorded
    again = await resize_ok(rig, "25.00")
    assert again["shopifyGiftCardCode"] == code and again["amountApplied"] == "25.00"
    assert rig.live_shopify_cards() == {rig.card_by_code(code)["id"]: Decimal("25.00")}
    assert rig.open_holds() and sum(rig.open_holds().values()) == Decimal("40.00")
    await rig.assert_consistent()


@pytest.mark.parametrize(
    ("make_fault", "confirmed"),
    [
        # The debit landed, its answer was lost and the look-up by its key failed too: the
        # move stays recorded as unconfirmed (503), never as "nothing happened".
        pytest.param(
            lambda rig: (
                rig.shop_wire.lose(shopify_op("GiftCardDebit")),
                rig.shop_wire.refuse(shopify_op("GiftCardTransactions")),
            ),
            False,
            id="debit-lost-and-lookup-down",
        ),
        # The debit landed and its answer is unreadable: the client finds it by its key.
        pytest.param(
            lambda rig: rig.shop_wire.garble(
                replace_json_values("amount", "abc"), match=shopify_op("GiftCardDebit")
            ),
            True,
            id="debit-wrong-types-after-applying",
        ),
    ],
)
async def test_an_unknown_resize_outcome_is_not_recorded_as_unchanged(
    rig: ShadowRig, make_fault: Fault, confirmed: bool
) -> None:
    code = (await apply_ok(rig, "40.00"))["shopifyGiftCardCode"]
    make_fault(rig)
    response = await answered(rig.resize("30.00", card=CARD))
    [row] = await rig.shadow_rows()
    # Either way the card was debited to 30.00 on Shopify, and the 40.00 hold still backs it.
    assert rig.live_shopify_cards() == {rig.card_by_code(code)["id"]: Decimal("30.00")}
    assert list(rig.open_holds().values()) == [Decimal("40.00")]
    if confirmed:
        assert response.status_code == 200, response.text
        assert response.json()["amountApplied"] == "30.00"
        moved = (row.loaded_minor, row.applied_amount_minor, row.applied_unconfirmed)
        assert moved == (3000, 3000, False)
    else:
        assert_problem(response, 503, "shopify_unavailable")
        pending = (row.loaded_minor, row.applied_unconfirmed, row.unconfirmed_move_minor)
        assert pending == (4000, True, -1000)
    rig.clear_faults()
    # Unconfirmed is recorded as such: the next call reads the card before moving it.
    again = await resize_ok(rig, "25.00")
    assert again["amountApplied"] == "25.00"
    [row] = await rig.shadow_rows()
    assert (row.loaded_minor, row.applied_amount_minor) == (2500, 2500)
    await rig.assert_consistent()


# --- checkout: Vii faults at a re-hold ----------------------------------------------------------

# A cart grown past the hold: the card is emptied, what it spent is captured from the old hold,
# the rest freed, the balance read again and a new hold placed. Vii failing at the last two
# steps leaves the card live but empty, with no hold (bool: the new hold was placed anyway).
VII_AT_REHOLD: dict[str, tuple[Fault, bool]] = {
    "balance-503": (
        lambda rig: rig.vii_wire.answer(
            b"Service unavailable", status=503, match=vii_type("CheckBalance")
        ),
        False,
    ),
    "pre-auth-refused": (lambda rig: rig.vii_wire.refuse(vii_type("PreAuthRequest")), False),
    "pre-auth-slow": (lambda rig: rig.vii_wire.stall(vii_type("PreAuthRequest")), False),
    "pre-auth-cut-short-after-applying": (
        lambda rig: rig.vii_wire.garble(cut_short, match=vii_type("PreAuthRequest")),
        True,
    ),
}


@pytest.mark.parametrize("fault", VII_AT_REHOLD)
async def test_vii_fault_at_a_rehold_leaves_an_empty_card_without_a_hold_and_recovers(
    rig: ShadowRig, fault: str
) -> None:
    code = (await apply_ok(rig, "20.00"))["shopifyGiftCardCode"]
    gid = rig.card_by_code(code)["id"]
    rig.shop_sim.create_order([(gid, Decimal("5.00"))])
    make_fault, placed = VII_AT_REHOLD[fault]
    make_fault(rig)
    response = await answered(rig.apply("45.00", card=CARD, pin=PIN))
    assert_problem(response, 503, "vii_unavailable")
    # Nothing spendable is left without a hold; what was spent (5.00) was taken, once.
    card = rig.card_by_code(code)
    assert (card["enabled"], card["balance"]) == (True, Decimal("0.00"))
    assert rig.vii_sim.balance(CARD) == Decimal("45.00")
    [row] = await rig.shadow_rows()
    assert (row.state, row.hold_code, row.captured_amount_minor) == ("applied", None, 500)
    assert list(rig.open_holds().values()) == ([Decimal("45.00")] if placed else [])

    rig.clear_faults()
    await rig.run_jobs()  # a new hold Vii placed anyway is undone
    assert rig.open_holds() == {}
    await rig.assert_consistent()

    # The shopper tries again with the PIN: the same card, backed by a new hold.
    again = await apply_ok(rig, "45.00")
    assert again["shopifyGiftCardCode"] == code and again["amountApplied"] == "45.00"
    assert list(rig.open_holds().values()) == [Decimal("45.00")]
    await rig.assert_consistent()
    assert (await rig.release(code)).status_code == 200
    await rig.run_jobs()
    assert rig.vii_sim.balance(CARD) == Decimal("45.00") and rig.open_holds() == {}
    await rig.assert_consistent()


# --- release: faults in the close job -----------------------------------------------------------

AT_CLOSE: dict[str, Fault] = {
    "shopify-refused": lambda rig: rig.shop_wire.refuse(),
    "shopify-slow": set_faults("shop", latency_ms=SLOW_MS),
    "shopify-throttled": set_faults("shop", force_throttle=True),
    "shopify-html-page": lambda rig: rig.shop_wire.answer(HTML_ERROR_PAGE),
    "shopify-deactivate-lost-after-applying": set_faults("shop", lose_answer_rate=1.0),
    "vii-refused": lambda rig: rig.vii_wire.refuse(),
    "vii-slow": set_faults("vii", latency_ms=SLOW_MS),
    "vii-503": set_faults("vii", error_rate=1.0),
    "vii-throttled-429": set_faults("vii", force_throttle=True),
    "vii-cancel-lost-after-applying": set_faults("vii", lose_answer_rate=1.0),
    "vii-cancel-cut-short-after-applying": lambda rig: rig.vii_wire.garble(
        cut_short, match=vii_type("PreAuthCancellation")
    ),
}


@pytest.mark.parametrize("fault", AT_CLOSE)
async def test_release_during_an_upstream_fault_never_frees_the_hold_of_a_live_card(
    rig: ShadowRig, fault: str
) -> None:
    code = (await apply_ok(rig, "20.00"))["shopifyGiftCardCode"]
    AT_CLOSE[fault](rig)
    released = await answered(rig.release(code))
    assert released.status_code == 200 and released.json() == {"released": True}

    await rig.run_jobs(rounds=2)
    # Order matters (DESIGN 1.B): the Vii funds stay held while the card can still be spent.
    if rig.card_by_code(code)["enabled"]:
        assert sum(rig.open_holds().values()) == Decimal("20.00")
    # The close is not done while the fault lasts, and not given up either.
    assert [job[:2] for job in await unfinished_jobs(rig.engine)] == [("shadow.close", "queued")]

    rig.clear_faults()
    await rig.run_jobs()
    assert rig.card_by_code(code)["enabled"] is False
    assert rig.open_holds() == {}
    assert [row.state for row in await rig.shadow_rows()] == ["released"]
    assert rig.vii_sim.balance(CARD) == Decimal("50.00")
    await rig.assert_consistent()


# --- capture after orders/paid -------------------------------------------------------------------

AT_CAPTURE: dict[str, Fault] = {
    # Shopify, while the worker reads the paid order's transactions:
    "shopify-refused": lambda rig: rig.shop_wire.refuse(),
    "shopify-slow": set_faults("shop", latency_ms=SLOW_MS),
    "shopify-503": set_faults("shop", error_rate=1.0),
    "shopify-throttled": set_faults("shop", force_throttle=True),
    "shopify-html-page": lambda rig: rig.shop_wire.answer(HTML_ERROR_PAGE),
    "shopify-order-cut-short": lambda rig: rig.shop_wire.garble(
        cut_short, match=shopify_op("OrderGet")
    ),
    "shopify-order-wrong-types": lambda rig: rig.shop_wire.garble(
        replace_json_values("amount", "abc"), match=shopify_op("OrderGet")
    ),
    # Vii, while the capture job redeems from the hold:
    "vii-refused": lambda rig: rig.vii_wire.refuse(),
    "vii-slow": set_faults("vii", latency_ms=SLOW_MS),
    "vii-503": set_faults("vii", error_rate=1.0),
    "vii-throttled-429": set_faults("vii", force_throttle=True),
    "vii-html-page": lambda rig: rig.vii_wire.answer(HTML_ERROR_PAGE),
    "vii-redemption-cut-short-after-applying": lambda rig: rig.vii_wire.garble(
        cut_short, match=vii_type("Redemption")
    ),
    "vii-redemption-wrong-types-after-applying": lambda rig: rig.vii_wire.garble(
        replace_xml_values("?", "AvailableBalance", "CurrentBalance"),
        match=vii_type("Redemption"),
    ),
}


# Vii faults in which the redemption reached Vii and was applied before its answer was lost:
# the close arms an Undo first, so the card's balance may be back at 50.00 or still at 35.00
# while the fault lasts, but the hold was consumed by the redemption either way.
REDEMPTION_APPLIED = {
    "vii-redemption-cut-short-after-applying",
    "vii-redemption-wrong-types-after-applying",
}


@pytest.mark.parametrize("fault", AT_CAPTURE)
async def test_capture_during_an_upstream_fault_debits_vii_exactly_once_after_recovery(
    rig: ShadowRig, fault: str
) -> None:
    applied = await apply_ok(rig, "20.00")
    code = applied["shopifyGiftCardCode"]
    gid = rig.card_by_code(code)["id"]
    order = rig.shop_sim.create_order([(gid, Decimal("15.00"))])
    AT_CAPTURE[fault](rig)
    # The webhook is acknowledged without touching any upstream, fault or not.
    ack = await answered(rig.webhook("orders/paid", order["webhooks"]["orders/paid"]))
    assert ack.status_code == 200 and ack.json()["received"] is True

    await rig.run_jobs(rounds=3)
    [row] = await rig.shadow_rows()
    jobs = await unfinished_jobs(rig.engine)
    assert not [job for job in jobs if job[1] == "dead"]
    # Nothing is captured (recorded) while the fault lasts, and the PIN the capture needs stays.
    assert (row.captured_amount_minor, row.settled_at, row.pin_ciphertext is None) == (
        0,
        None,
        False,
    )
    if fault.startswith("shopify-"):
        # The paid order cannot be read: the card is still live and fully backed by its hold.
        assert row.state == "applied"
        assert [job[:2] for job in jobs] == [("webhook.process", "queued")]
        assert rig.card_by_code(code)["enabled"] is True
        assert rig.open_holds() == {row.hold_code: Decimal("20.00")}
        assert rig.vii_sim.balance(CARD) == Decimal("50.00")
    else:
        # The paid order closed the card: the close deactivated it first (nothing more can be
        # spent), then could not take the 15.00 from Vii; it is retried, never given up.
        assert row.state == "captured"
        assert ("shadow.close", "queued") in [job[:2] for job in jobs]
        assert rig.card_by_code(code)["enabled"] is False
        if fault in REDEMPTION_APPLIED:
            assert rig.open_holds() == {}
            assert rig.vii_sim.balance(CARD) in (Decimal("50.00"), Decimal("35.00"))
        else:
            assert rig.open_holds() == {row.hold_code: Decimal("20.00")}
            assert rig.vii_sim.balance(CARD) == Decimal("50.00")

    rig.clear_faults()
    await rig.run_jobs()
    # 15.00 charged on Shopify, 15.00 taken from Vii once; the rest of the hold freed.
    assert rig.vii_sim.balance(CARD) == Decimal("35.00")
    assert rig.open_holds() == {}
    assert rig.card_by_code(code)["enabled"] is False
    assert rig.card_by_code(code)["balance"] == Decimal("5.00")
    [row] = await rig.shadow_rows()
    assert (row.state, row.captured_amount_minor) == ("captured", 1500)
    assert row.settled_at is not None and row.pin_ciphertext is None
    captures = await rig.scalar(
        "SELECT count(*) FROM ledger WHERE system = 'vii' AND cause = 'capture'"
    )
    assert captures == 1
    assert await rig.scalar("SELECT count(*) FROM findings") == 0
    await rig.assert_consistent()


async def test_a_worker_dying_after_vii_approved_the_capture_debits_vii_exactly_once(
    rig: ShadowRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The redemption landed on Vii, then the close job died before recording it: the Undo
    armed before the redemption reverses it, and the retried close captures once."""
    from app.db import shadow_cards

    applied = await apply_ok(rig, "20.00")
    gid = rig.card_by_code(applied["shopifyGiftCardCode"])["id"]
    order = rig.shop_sim.create_order([(gid, Decimal("15.00"))])

    async def dies(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("worker killed after Vii approved the capture")

    monkeypatch.setattr(shadow_cards, "add_captured", dies)
    ack = await answered(rig.webhook("orders/paid", order["webhooks"]["orders/paid"]))
    assert ack.status_code == 200
    await rig.run_jobs(rounds=2)
    [row] = await rig.shadow_rows()
    assert (row.state, row.captured_amount_minor, row.settled_at) == ("captured", 0, None)
    assert rig.vii_sim.balance(CARD) == Decimal("35.00")  # taken, not yet recorded
    assert ("vii.undo", "queued") in [job[:2] for job in await unfinished_jobs(rig.engine)]

    monkeypatch.undo()
    await rig.run_jobs()
    assert rig.vii_sim.balance(CARD) == Decimal("35.00")
    [row] = await rig.shadow_rows()
    assert (row.state, row.captured_amount_minor) == ("captured", 1500)
    captures = await rig.scalar(
        "SELECT count(*) FROM ledger WHERE system = 'vii' AND cause = 'capture'"
    )
    assert captures == 1
    await rig.assert_consistent()


# --- omni: POS faults while polling a card sold in store -------------------------------------

PosFault = Callable[[OmniRig], Any]


def pos_faults(**switches: Any) -> PosFault:
    return lambda rig: rig.pos_faults.update(switches)


def pos_reads(rig: OmniRig) -> Any:
    return http("GET", "/API/V3/" if rig.flow.pos_kind == "retail" else "/api/")


def pos_wrong_types(rig: OmniRig) -> None:
    if rig.flow.pos_kind == "retail":
        rig.pos_wire.garble(replace_json_values("balance", "abc"), match=pos_reads(rig))
    else:
        rig.pos_wire.garble(replace_xml_values("abc", "sell_price"), match=pos_reads(rig))


POS_AT_POLL: dict[str, PosFault] = {
    "refused": lambda rig: rig.pos_wire.refuse(),
    "slow": pos_faults(latency_ms=SLOW_MS),
    "503": pos_faults(error_rate=1.0),
    "throttled-429": pos_faults(force_throttle=True),
    "html-page": lambda rig: rig.pos_wire.answer(HTML_ERROR_PAGE, match=pos_reads(rig)),
    "cut-short": lambda rig: rig.pos_wire.garble(cut_short, match=pos_reads(rig)),
    "wrong-types": pos_wrong_types,
}


@pytest.fixture(params=["retail", "onsite"])
async def omni(
    request: pytest.FixtureRequest, runtime: Runtime, engine: AsyncEngine
) -> AsyncIterator[OmniRig]:
    async with omni_rig(runtime, engine, request.param) as rig:
        yield rig


@pytest.fixture
async def retail(runtime: Runtime, engine: AsyncEngine) -> AsyncIterator[OmniRig]:
    async with omni_rig(runtime, engine, "retail") as rig:
        yield rig


async def poll_through_fault(omni: OmniRig) -> None:
    """A poll during a fault fails cleanly (an UpstreamError the worker logs) or copes."""
    with contextlib.suppress(UpstreamError):
        await omni.flow.pollers.poll_pos()


async def linked_in_store_card(omni: OmniRig, amount: str = "50.00") -> tuple[str, uuid.UUID, str]:
    external_id = omni.flow.sell_in_store(SERIAL, amount)
    await omni.flow.pollers.poll_pos()
    card_id = await omni.flow.omni.linked_card(omni.flow.pos.system, external_id)
    assert card_id is not None
    return external_id, card_id, await omni.shopify_id(card_id)


async def assert_mirrored(
    omni: OmniRig, external_id: str, card_id: uuid.UUID, gid: str, balance: str
) -> None:
    assert omni.flow.shopify_card(gid)["balance"] == Decimal(balance)
    assert omni.flow.pos_money(external_id, SERIAL) == Decimal(balance)
    assert await omni.base(card_id) == int(Decimal(balance) * 100)
    assert await unfinished_jobs(omni.engine) == []
    async with omni.engine.connect() as connection:
        findings = await connection.scalar(text("SELECT count(*) FROM findings"))
    assert findings == 0


@pytest.mark.parametrize("fault", POS_AT_POLL)
async def test_pos_fault_while_polling_fails_cleanly_and_the_next_poll_catches_up(
    omni: OmniRig, fault: str
) -> None:
    external_id = omni.flow.sell_in_store(SERIAL, "50.00")
    POS_AT_POLL[fault](omni)
    with pytest.raises(UpstreamError):
        async with asyncio.timeout(ANSWER_DEADLINE_S):
            await omni.flow.pollers.poll_pos()
    assert omni.flow.shop_sim.shop.gift_cards == {}
    assert await omni.flow.omni.linked_card(omni.flow.pos.system, external_id) is None

    omni.clear_faults()
    await omni.flow.pollers.poll_pos()
    await omni.run_jobs()
    card_id = await omni.flow.omni.linked_card(omni.flow.pos.system, external_id)
    assert card_id is not None
    gid = await omni.shopify_id(card_id)
    assert omni.flow.shopify_card(gid)["code"].lower() == SERIAL
    await assert_mirrored(omni, external_id, card_id, gid, "50.00")


# --- omni: Shopify faults while importing a card sold in store --------------------------------

OmniFault = Callable[[OmniRig], Any]


def shop_faults(**switches: Any) -> OmniFault:
    return lambda rig: rig.flow.shop_sim.faults.update(switches)


SHOPIFY_AT_IMPORT: dict[str, OmniFault] = {
    "refused": lambda rig: rig.shop_wire.refuse(),
    "slow": shop_faults(latency_ms=SLOW_MS),
    "503": shop_faults(error_rate=1.0),
    "throttled": shop_faults(force_throttle=True),
    "html-page": lambda rig: rig.shop_wire.answer(HTML_ERROR_PAGE),
    "create-lost-after-applying": shop_faults(lose_answer_rate=1.0),
    "create-lost-and-search-down": lambda rig: (
        rig.shop_wire.lose(shopify_op("GiftCardCreate")),
        rig.shop_wire.refuse(shopify_op("GiftCardsSearch")),
    ),
    "create-html-after-applying": lambda rig: rig.shop_wire.garble(
        lambda _: HTML_ERROR_PAGE, match=shopify_op("GiftCardCreate")
    ),
    "create-wrong-types-after-applying": lambda rig: rig.shop_wire.garble(
        replace_json_values("amount", "abc"), match=shopify_op("GiftCardCreate")
    ),
}


@pytest.mark.parametrize("fault", SHOPIFY_AT_IMPORT)
async def test_shopify_fault_while_importing_makes_exactly_one_card_after_recovery(
    retail: OmniRig, fault: str
) -> None:
    external_id = retail.flow.sell_in_store(SERIAL, "50.00")
    SHOPIFY_AT_IMPORT[fault](retail)
    async with asyncio.timeout(ANSWER_DEADLINE_S):
        await poll_through_fault(retail)
    await retail.run_jobs(rounds=3)

    retail.clear_faults()
    await retail.flow.pollers.poll_pos()
    await retail.run_jobs()
    card_id = await retail.flow.omni.linked_card(retail.flow.pos.system, external_id)
    assert card_id is not None
    gid = await retail.shopify_id(card_id)
    cards = [retail.flow.shop_sim.card(c) for c in retail.flow.shop_sim.shop.gift_cards]
    assert [(c["id"], c["code"].lower()) for c in cards] == [(gid, SERIAL)]
    await assert_mirrored(retail, external_id, card_id, gid, "50.00")


# --- omni: faults while mirroring a move -------------------------------------------------------

SHOPIFY_AT_MOVE: dict[str, OmniFault] = {
    "refused": lambda rig: rig.shop_wire.refuse(),
    "slow": shop_faults(latency_ms=SLOW_MS),
    "throttled": shop_faults(force_throttle=True),
    "html-page": lambda rig: rig.shop_wire.answer(HTML_ERROR_PAGE),
    "debit-lost-after-applying": shop_faults(lose_answer_rate=1.0),
    # The move job looks for its own transaction before sending (that look succeeds), then
    # the debit's answer is lost and the look-ups that would recover it fail.
    "debit-lost-and-lookup-down": lambda rig: (
        rig.shop_wire.lose(shopify_op("GiftCardDebit")),
        rig.shop_wire.refuse(shopify_op("GiftCardTransactions"), skip=1),
    ),
    "debit-cut-short-after-applying": lambda rig: rig.shop_wire.garble(
        cut_short, match=shopify_op("GiftCardDebit")
    ),
    "debit-wrong-types-after-applying": lambda rig: rig.shop_wire.garble(
        replace_json_values("amount", "abc"), match=shopify_op("GiftCardDebit")
    ),
}


@pytest.mark.parametrize("fault", SHOPIFY_AT_MOVE)
async def test_store_spend_mirrored_through_a_shopify_fault_lands_exactly_once(
    retail: OmniRig, fault: str
) -> None:
    external_id, card_id, gid = await linked_in_store_card(retail)
    retail.flow.spend_in_store(external_id, SERIAL, "12.50")
    SHOPIFY_AT_MOVE[fault](retail)
    async with asyncio.timeout(ANSWER_DEADLINE_S):
        await poll_through_fault(retail)
        await retail.run_jobs(rounds=3)

    retail.clear_faults()
    await retail.flow.pollers.poll_pos()
    await retail.run_jobs()
    await assert_mirrored(retail, external_id, card_id, gid, "37.50")
    debits = [t for t in retail.flow.shopify_card(gid)["transactions"] if t["kind"] == "debit"]
    assert [Decimal(t["amount"]).copy_abs() for t in debits] == [Decimal("12.50")]


def pos_write(rig: OmniRig) -> Any:
    return http("POST", "Sale.json" if rig.flow.pos_kind == "retail" else "/api/invoices")


POS_AT_MOVE: dict[str, PosFault] = {
    "refused": lambda rig: rig.pos_wire.refuse(),
    "slow": pos_faults(latency_ms=SLOW_MS),
    "503": pos_faults(error_rate=1.0),
    "throttled-429": pos_faults(force_throttle=True),
    "write-lost-after-applying": pos_faults(lose_answer_rate=1.0),
    "write-html-after-applying": lambda rig: rig.pos_wire.garble(
        lambda _: HTML_ERROR_PAGE, match=pos_write(rig)
    ),
    "write-cut-short-after-applying": lambda rig: rig.pos_wire.garble(
        cut_short, match=pos_write(rig)
    ),
}


@pytest.mark.parametrize("fault", POS_AT_MOVE)
async def test_online_spend_mirrored_through_a_pos_fault_lands_exactly_once(
    omni: OmniRig, fault: str
) -> None:
    external_id, card_id, gid = await linked_in_store_card(omni)
    order = omni.flow.shop_sim.create_order([(gid, Decimal("20.00"))])
    for payload in order["webhooks"]["order_transactions/create"]:
        await omni.flow.pollers.on_transaction(payload, None)  # type: ignore[arg-type]
    POS_AT_MOVE[fault](omni)
    async with asyncio.timeout(ANSWER_DEADLINE_S):
        await omni.run_jobs(rounds=3)

    omni.clear_faults()
    await omni.run_jobs()
    await omni.flow.pollers.poll_pos()
    await omni.run_jobs()
    await assert_mirrored(omni, external_id, card_id, gid, "30.00")
