"""The shadow card money rule, attacked as a shopper who knows the code, the token and the timing.

Rule (DESIGN 1.B): once a shadow card is closed, what Vii captured equals what its Shopify card
spent through orders, to the cent; while it is open, the hold plus what was captured covers what
the card can still spend plus what it spent. Each test is one adversarial sequence, asserted
exactly, under both readings of what a Vii capture does to the rest of its hold.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.shop import Shop

pytestmark = pytest.mark.usefixtures("vii_reading")


@pytest.fixture
def vii_reading(shop: Shop, capture_frees_rest: bool) -> None:
    shop.vii.capture_frees_rest = capture_frees_rest


async def assert_closed_exactly(shop: Shop, code: str, spent: str) -> None:
    """Settled: card dead, Vii took exactly what Shopify spent, nothing held, PIN erased."""
    row = await shop.shadow(code)
    assert row.settled_at is not None and row.pin_erased and row.card_number_ciphertext is None
    assert shop.card(code)["enabled"] is False
    assert shop.spent_on_shopify(code) == Decimal(spent)
    assert shop.captured() == Decimal(spent)
    assert row.captured_amount_minor == int(Decimal(spent) * 100)
    assert shop.held() == Decimal("0")


async def test_one_code_on_two_orders_before_any_webhook_is_captured_in_full(shop: Shop) -> None:
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    first = shop.order((code, "25.00"))
    second = shop.order((code, "25.00"))
    await shop.deliver_order(first)
    await shop.deliver_order(second)
    await shop.run_jobs()
    await assert_closed_exactly(shop, code, "50.00")
    assert (await shop.shadow(code)).state == "captured"


async def test_pay_then_release_before_the_paid_webhook_still_captures(shop: Shop) -> None:
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    order = shop.order((code, "50.00"))
    released = await shop.release(code)
    assert released.status_code == 200 and released.json() == {"released": True}
    await shop.run_jobs()
    await assert_closed_exactly(shop, code, "50.00")
    await shop.deliver_order(order)  # the paid webhook, late: nothing more to take
    await shop.run_jobs()
    await assert_closed_exactly(shop, code, "50.00")


async def test_shrink_spend_grow_spend_release_captures_everything_spent(shop: Shop) -> None:
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    shrunk = await shop.resize("20.00")
    assert shrunk.json()["amountApplied"] == "20.00"
    shop.order((code, "10.00"))
    # Growing back re-reads the card: the 10.00 spent is owed, 40.00 is all that is left.
    grown = await shop.apply("50.00")
    assert grown.status_code == 200, grown.text
    assert grown.json()["amountApplied"] == "40.00"
    assert Decimal(shop.card(code)["balance"]) == Decimal("40.00")
    row = await shop.shadow(code)
    assert row.hold_amount_minor + row.captured_amount_minor == 5000
    shop.order((code, "40.00"))
    await shop.release(code)
    await shop.run_jobs()
    await assert_closed_exactly(shop, code, "50.00")


async def test_growing_without_the_pin_never_recredits_spent_money(shop: Shop) -> None:
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    await shop.resize("20.00")
    shop.order((code, "10.00"))
    grown = await shop.resize("50.00")
    # The hold (50) backs the 10 spent and at most 40 more: never 50 again.
    assert grown.json()["amountApplied"] == "40.00"
    shop.order((code, "40.00"))
    await shop.release(code)
    await shop.run_jobs()
    await assert_closed_exactly(shop, code, "50.00")


async def test_expiry_racing_a_late_paid_webhook_captures_what_was_spent(shop: Shop) -> None:
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    order = shop.order((code, "30.00"))
    await shop.expire_all()
    await shop.run_jobs()
    await assert_closed_exactly(shop, code, "30.00")
    assert (await shop.shadow(code)).state == "expired"
    await shop.deliver_order(order)
    await shop.run_jobs()
    await assert_closed_exactly(shop, code, "30.00")


@pytest.mark.parametrize("status", ["FAILURE", "PENDING"])
async def test_failed_or_pending_gift_card_sales_are_never_captured(
    shop: Shop, status: str
) -> None:
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    order = shop.order((code, "20.00", status))
    await shop.deliver_order(order)
    await shop.run_jobs()
    assert (await shop.shadow(code)).state == "applied"  # no successful charge: still live
    await shop.release(code)
    await shop.run_jobs()
    await assert_closed_exactly(shop, code, "0.00")
    if status == "PENDING":
        # The sale ends after the card was deactivated: Shopify cannot take it any more.
        txn = order["transaction_ids"][0]
        assert shop.shopify.settle_pending(txn, success=True)["status"] == "failure"
        await assert_closed_exactly(shop, code, "0.00")


async def test_a_refund_before_the_close_is_given_back_by_capturing_less(shop: Shop) -> None:
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    order = shop.order((code, "30.00"))
    refund = shop.shopify.refund_to_gift_card(order["id"], shop.card(code)["id"], Decimal("10.00"))
    await shop.deliver("refunds/create", refund["webhooks"]["refunds/create"])
    await shop.release(code)
    await shop.run_jobs()
    await assert_closed_exactly(shop, code, "20.00")
    assert await shop.rows("SELECT 1 FROM findings") == []


async def test_a_refund_after_capture_is_a_finding_for_its_amount(shop: Shop) -> None:
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    order = shop.order((code, "30.00"))
    await shop.deliver_order(order)
    await shop.run_jobs()
    await assert_closed_exactly(shop, code, "30.00")
    sale = order["webhooks"]["order_transactions/create"][0]
    refund_txn = {**sale, "id": 99, "kind": "refund", "amount": "10.00", "parent_id": sale["id"]}
    body = {"id": 98, "order_id": sale["order_id"], "transactions": [refund_txn]}
    await shop.deliver("refunds/create", body)
    await shop.deliver("order_transactions/create", refund_txn)
    await shop.run_jobs()
    findings = await shop.rows("SELECT type, subject, evidence FROM findings")
    assert [(f.type, f.subject, f.evidence["amount"]) for f in findings] == [
        ("refund_needs_staff", f"order:{sale['order_id']}:txn:99", "10.00")
    ]


async def test_a_cancelled_order_releases_everything(shop: Shop) -> None:
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    order = shop.order((code, "30.00"))
    shop.shopify.refund_to_gift_card(order["id"], shop.card(code)["id"], Decimal("30.00"))
    await shop.deliver("orders/cancelled", order["webhooks"]["orders/paid"])
    await shop.run_jobs()
    await assert_closed_exactly(shop, code, "0.00")
    assert (await shop.shadow(code)).state == "released"


async def test_duplicated_and_reordered_webhooks_capture_once(shop: Shop) -> None:
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    order = shop.order((code, "35.00"))
    for _ in range(2):
        for payload in reversed(order["webhooks"]["order_transactions/create"]):
            await shop.deliver("order_transactions/create", payload)
        await shop.deliver("orders/paid", order["webhooks"]["orders/paid"])
    await shop.run_jobs()
    await shop.release(code)
    await shop.run_jobs()
    await assert_closed_exactly(shop, code, "35.00")
    captures = await shop.rows("SELECT amount_minor FROM ledger WHERE cause = 'capture'")
    assert [c.amount_minor for c in captures] == [-3500]


async def test_while_open_the_hold_covers_spent_plus_spendable(shop: Shop) -> None:
    code = (await shop.apply("45.00")).json()["shopifyGiftCardCode"]
    shop.order((code, "15.00"))
    await shop.resize("10.00")
    assert Decimal(shop.card(code)["balance"]) == Decimal("10.00")
    assert shop.held() == Decimal("45.00")
    assert shop.held() >= shop.spent_on_shopify(code) + Decimal(shop.card(code)["balance"])


async def test_an_order_between_the_read_and_the_move_is_a_503_then_counted(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = (await shop.apply("50.00")).json()["shopifyGiftCardCode"]
    deps = shop.runtime.shadow
    assert deps is not None
    real_read = deps.shopify.get_gift_card

    async def read_then_an_order_spends(card_id: str) -> object:
        card = await real_read(card_id)
        monkeypatch.setattr(deps.shopify, "get_gift_card", real_read)
        shop.order((code, "45.00"))  # lands after our read, before our debit
        return card

    monkeypatch.setattr(deps.shopify, "get_gift_card", read_then_an_order_spends)
    raced = await shop.resize("20.00")
    assert raced.status_code == 503 and raced.json()["code"] == "shopify_unavailable"
    again = await shop.resize("20.00")
    assert again.status_code == 200 and again.json()["amountApplied"] == "5.00"
    await shop.release(code)
    await shop.run_jobs()
    await assert_closed_exactly(shop, code, "45.00")
