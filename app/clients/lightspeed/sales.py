"""The two sales giftsync writes, shaped as Lightspeed's gift card tutorial shows them.

`docs/tutorials/gift-cards.md`:
- **Load** (CONFIRMED, "Option 2 - Single Step"): one completed Sale POST with two payments, the
  gift card type's payment with a negative amount on the card's `creditAccountID`, and the
  payment received. The tutorial receives cash (type 1); giftsync receives the merchant's own
  `LIGHTSPEED_PAYMENT_TYPE_ID` (e.g. a user-defined "Shopify" type), since online money is not in
  any drawer. No SaleLine is sent: the server adds its own "Gift Card Purchase" line.
- **Redeem** ("Using the Gift Card"): a completed sale with a line and the gift card payment of a
  positive amount (CONFIRMED shape). The tutorial's line is a stock item; giftsync has none, so
  the line is the miscellaneous line of `tutorials/credit-accounts.md` (`itemID` 0, a note, a
  price, `taxClassID` 0 so no tax is added to the total). That shape is documented for credit
  accounts; for gift cards it is INFERRED. Whether a sale with payments only and no line is
  accepted is UNCONFIRMED, so giftsync never sends one.

Both carry the caller's reference as the sale's `referenceNumber` (sale.md: "custom reference
sale number from an external system", settable on POST) with `referenceNumberSource`, and on the
gift card payment's `remoteReference` (salepayment.md: "optional client-generated unique
identifier"; whether a POST keeps it is UNCONFIRMED, so nothing depends on it).
Cost of either (sale.md, rate-limiting.md): 2 + 3 for `completed` + 0.5 x 2 nested = 6 units.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from app.clients.lightspeed.errors import LightspeedUnavailable
from app.clients.lightspeed.models import (
    LsGiftCardPayment,
    as_bool,
    as_list,
    money_text,
    optional_id,
    parse_time,
)
from app.clients.lightspeed.setup import SaleSetup

REFERENCE_SOURCE = "giftsync"
REDEMPTION_NOTE = "Gift card spent online (giftsync)"
SALE_RELATIONS = '["SalePayments"]'
# Each sale carries one line or two payments beside the card's: three nested entities at most.
NESTED_PER_SALE = 2


def _header(setup: SaleSetup, reference: str) -> dict[str, Any]:
    return {
        "employeeID": setup.employee_id,
        "registerID": setup.register_id,
        "shopID": setup.shop_id,
        "completed": True,
        "referenceNumber": reference,
        "referenceNumberSource": REFERENCE_SOURCE,
    }


def load_sale(
    setup: SaleSetup, gift_type_id: str, credit_account_id: str, amount: Decimal, reference: str
) -> dict[str, Any]:
    return {
        **_header(setup, reference),
        "SalePayments": {
            "SalePayment": [
                {
                    "amount": money_text(-amount),
                    "creditAccountID": credit_account_id,
                    "paymentTypeID": gift_type_id,
                    "remoteReference": reference,
                },
                {"amount": money_text(amount), "paymentTypeID": setup.payment_type_id},
            ]
        },
    }


def redemption_sale(
    setup: SaleSetup, gift_type_id: str, credit_account_id: str, amount: Decimal, reference: str
) -> dict[str, Any]:
    return {
        **_header(setup, reference),
        "SaleLines": {
            "SaleLine": {
                "itemID": 0,
                "note": REDEMPTION_NOTE,
                "unitQuantity": 1,
                "unitPrice": money_text(amount),
                "taxClassID": 0,
                "avgCost": 0,
                "fifoCost": 0,
            }
        },
        "SalePayments": {
            "SalePayment": {
                "amount": money_text(amount),
                "creditAccountID": credit_account_id,
                "paymentTypeID": gift_type_id,
                "remoteReference": reference,
            }
        },
    }


def card_payments(sale: Mapping[str, Any], gift_type_id: str) -> list[LsGiftCardPayment]:
    """The gift card payments of one sale, timed by the sale's `timeStamp` (sale.md: last
    modified, or when completed), which is what a `timeStamp` cursor on Sale follows."""
    holder = sale.get("SalePayments")
    nested = holder.get("SalePayment") if isinstance(holder, dict) else None
    found: list[LsGiftCardPayment] = []
    for item in as_list(nested):
        card = optional_id(item.get("creditAccountID"))
        if card is None or str(item.get("paymentTypeID")) != gift_type_id:
            continue
        found.append(
            LsGiftCardPayment(
                sale_payment_id=str(item["salePaymentID"]),
                sale_id=str(sale.get("saleID", item.get("saleID", ""))),
                credit_account_id=card,
                amount=_amount(item.get("amount")),
                remote_reference=str(sale.get("referenceNumber") or "") or None,
                time_stamp=parse_time(sale.get("timeStamp") or item.get("createTime")),
                completed=as_bool(sale.get("completed")),
            )
        )
    return found


def payment_of(
    body: Mapping[str, Any], gift_type_id: str, credit_account_id: str, reference: str
) -> LsGiftCardPayment | None:
    """Our payment in a Sale answer or listing: the sale tagged `reference`, the card's payment."""
    for sale in as_list(body.get("Sale")):
        if str(sale.get("referenceNumber") or "") != reference:
            continue
        for payment in card_payments(sale, gift_type_id):
            if payment.credit_account_id == credit_account_id:
                return payment
    return None


def _amount(raw: Any) -> Decimal:
    try:
        return Decimal(str(raw).strip() or "0")
    except ArithmeticError as exc:
        raise LightspeedUnavailable("Lightspeed sent a malformed amount") from exc
