"""One Lightspeed R-Series merchant account as the simulator holds it: set-up, cards, sales.

Every rule names the page of Lightspeed's developer docs it comes from (mirrored in
koop-voor-hoop/lightspeed-retail-client `docs/`; see UPSTREAMS.md). Where the docs are silent,
`Readings` says which reading is played, so tests can run a flow under each.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from app.settings import BalanceSign

GIFT_CARD_SCOPE = "employee:customers_view_gift_card_numbers"
# The scopes a token needs per endpoint (each endpoint page's "Scopes Required" table).
REGISTER_SCOPE = "employee:register"
CUSTOMERS_SCOPE = "employee:customers"
DEFAULT_SCOPES = frozenset({REGISTER_SCOPE, CUSTOMERS_SCOPE, GIFT_CARD_SCOPE})


class Refusal(Exception):
    """A request Lightspeed refuses; the simulator answers it with `status` and `message`.

    The body of a 400/409/422 is not shown on any page (errors.md gives statuses only), so the
    simulator sends a neutral JSON object and clients must depend on the status alone.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Readings:
    """The simulator's answer to each question the docs leave open (lightspeed_facts part C)."""

    refusal_status: int = 422
    """Status of a sale refused for its content (eCom register, unknown id, unbalanced):
    errors.md has 422 for validation errors; the status of these cases is not shown."""
    fractional_timestamps: str = "reject"
    """`reject` (400) or `truncate` a timeStamp filter with fractions of a second: every
    documented example has whole seconds (query-parameters.md, searching.md)."""
    credit_account_time_filter: bool = True
    """Whether CreditAccount accepts a timeStamp range: creditaccount.md says "only the equals
    operator = can be used for lookup", which may or may not cover timeStamp."""
    sale_touches_credit_account: bool = False
    """Whether a completed sale changes the card's timeStamp: no page says."""
    itemless_redemption: bool = False
    """Whether a completed sale that takes money off a card with payments only (no SaleLine) is
    accepted: sale.md says a completed sale has SaleLines that make its total; the gift card
    tutorial's redemption has an item line."""
    reference_number_filter: bool = True
    """Whether `Sale.json?referenceNumber=X` filters (query-parameters.md filters by any
    field; no page shows this one)."""
    remote_reference_kept: bool = False
    """Whether a SalePayment's `remoteReference` sent in a Sale POST is kept: no request
    example sets it, every response shows it empty."""
    lost_pair_survives_retry: bool = True
    """After a refresh whose answer was lost, whether that unused pair stays valid once the old
    refresh token is presented again (refresh-token.md only says the old token lives until
    the new access token is used)."""
    burst_fraction: float = 20 / 90
    """The burst limiter's share of the bucket size: rate-limiting.md shows 1/20 beside a
    bucket of 90 and says only "a fraction of the allowed bucket size"."""
    refuse_unknown_relations: bool = True
    """An undocumented `load_relations` entry refused (400) or silently ignored."""

    @classmethod
    def strict(cls) -> Readings:
        """The harsher reading of each question."""
        return cls()

    @classmethod
    def lenient(cls) -> Readings:
        """The kinder reading of each question (still no kinder than any page)."""
        return cls(
            refusal_status=400,
            fractional_timestamps="truncate",
            credit_account_time_filter=False,
            sale_touches_credit_account=True,
            itemless_redemption=True,
            reference_number_filter=False,
            remote_reference_kept=True,
            lost_pair_survives_retry=False,
            burst_fraction=25 / 90,
            refuse_unknown_relations=False,
        )


# ---- the merchant's set-up ------------------------------------------------------------------


@dataclass
class Shop:
    shop_id: str
    name: str
    time_zone: str
    archived: bool = False


@dataclass
class Register:
    register_id: str
    name: str
    shop_id: str
    archived: bool = False


@dataclass
class Employee:
    employee_id: str
    first_name: str
    last_name: str
    archived: bool = False
    lock_out: bool = False
    limit_to_shop_id: str = "0"


@dataclass
class PaymentType:
    payment_type_id: str
    name: str
    type: str
    """paymenttype.md: cash, credit card, gift card, credit account or user defined (a
    merchant-made type reads `user defined` whatever was posted)."""
    internal_reserved: bool
    archived: bool = False
    refund_as_payment_type_id: str = "0"


def realistic_set_up() -> tuple[list[Shop], list[Register], list[Employee], list[PaymentType]]:
    """Two shops, a register the eCom integration made, employees, reserved and own types."""
    shops = [
        Shop("1", "Main Street", "Australia/Melbourne"),
        Shop("2", "Harbour Outlet", "Australia/Melbourne"),
    ]
    registers = [
        Register("1", "Register 1", "1"),
        Register("2", "Register 2", "1"),
        # The eCom channel's register: a gift card sale must not name it (gift-cards.md).
        Register("3", "eCom", "1"),
        Register("4", "Online Gift Cards", "1"),
        Register("5", "Outlet Front", "2"),
        Register("6", "Old Till", "1", archived=True),
    ]
    employees = [
        Employee("1", "Store", "Owner"),
        Employee("2", "Sam", "Cashier", limit_to_shop_id="2"),
        Employee("3", "giftsync", "Integration"),
        Employee("4", "Former", "Staff", archived=True),
    ]
    # Ids 1, 4 and 5 as in paymenttype.md's examples; the rest are the merchant's own.
    payment_types = [
        PaymentType("1", "Cash", "cash", True),
        PaymentType("2", "Check", "user defined", False),
        PaymentType("3", "Credit Card", "credit card", True),
        PaymentType("4", "Credit Account", "credit account", True, refund_as_payment_type_id="4"),
        PaymentType("5", "Gift Card", "gift card", True, refund_as_payment_type_id="5"),
        PaymentType("6", "EFTPOS", "user defined", False),
        PaymentType("7", "Shopify", "user defined", False),
        PaymentType("8", "Old Voucher", "user defined", False, archived=True),
    ]
    return shops, registers, employees, payment_types


# The set-up giftsync's sandbox settings name: a real shop, a register not named eCom, the
# integration's employee and the merchant's own "Shopify" type (never cash).
CORRECT_SET_UP = {"shop_id": "1", "register_id": "4", "employee_id": "3", "payment_type_id": "7"}


# ---- cards, sales, customers ----------------------------------------------------------------


@dataclass
class Card:
    credit_account_id: str
    code: str
    money: Decimal
    """Money on the card, positive; rendered with the account's sign."""
    name: str = ""
    description: str = ""
    customer_id: str = "0"
    archived: bool = False
    time_stamp: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Payment:
    sale_payment_id: str
    sale_id: str
    amount: Decimal
    payment_type_id: str
    credit_account_id: str
    remote_reference: str
    time_stamp: datetime
    register_id: str
    employee_id: str


@dataclass
class Line:
    sale_line_id: str
    item_id: str
    unit_price: Decimal
    unit_quantity: Decimal
    note: str


@dataclass
class Sale:
    sale_id: str
    completed: bool
    shop_id: str
    register_id: str
    employee_id: str
    customer_id: str
    reference_number: str
    reference_number_source: str
    time_stamp: datetime
    lines: list[Line] = field(default_factory=list)
    payment_ids: list[str] = field(default_factory=list)
    accounts: list[tuple[str, str, str]] = field(default_factory=list)
    """SaleAccount rows: (creditAccountID, salePaymentID, saleLineID), gift-cards.md."""


@dataclass
class Customer:
    customer_id: str
    first_name: str
    last_name: str
    email: str
    time_stamp: datetime


@dataclass
class _Tender:
    amount: Decimal
    payment_type: PaymentType
    card: Card | None
    remote_reference: str


class Merchant:
    """The account's records and the rules a sale must pass before it changes any of them."""

    def __init__(self, readings: Readings, now: Callable[[], datetime]) -> None:
        self.readings = readings
        self._now = now
        shops, registers, employees, payment_types = realistic_set_up()
        self.shops = {shop.shop_id: shop for shop in shops}
        self.registers = {register.register_id: register for register in registers}
        self.employees = {employee.employee_id: employee for employee in employees}
        self.payment_types = {kind.payment_type_id: kind for kind in payment_types}
        self.cards: dict[str, Card] = {}
        self.sales: dict[str, Sale] = {}
        self.payments: dict[str, Payment] = {}
        self.customers: dict[str, Customer] = {}
        self._ids = itertools.count(100)

    def next_id(self) -> str:
        return str(next(self._ids))

    def now(self) -> datetime:
        # Whole seconds, like every timeStamp in the docs: several changes share one second.
        return self._now().astimezone(UTC).replace(microsecond=0)

    def gift_card_type(self) -> PaymentType:
        return next(t for t in self.payment_types.values() if t.type == "gift card")

    # ---- cards ----

    def create_card(self, body: dict[str, Any]) -> Card:
        """creditaccount.md / gift-cards.md: the POST makes a gift card from name, code and
        customerID; the code is 8-32 characters ("digits" on the tutorial) and unique."""
        code = str(body.get("code") or "")
        if not 8 <= len(code) <= 32:
            raise Refusal(self.readings.refusal_status, "code must be 8 to 32 characters")
        if any(card.code == code for card in self.cards.values()):
            raise Refusal(self.readings.refusal_status, "a gift card with that code exists")
        customer_id = str(body.get("customerID") or "0")
        if customer_id != "0" and customer_id not in self.customers:
            raise Refusal(self.readings.refusal_status, "customerID does not exist")
        card = Card(
            credit_account_id=self.next_id(),
            code=code,
            money=Decimal(0),
            name=str(body.get("name") or ""),
            description=str(body.get("description") or ""),
            customer_id=customer_id,
            time_stamp=self.now(),
        )
        self.cards[card.credit_account_id] = card
        return card

    # ---- sales ----

    def apply_sale(self, body: dict[str, Any]) -> Sale:
        """Validate a Sale POST whole, then store it; a refusal changes nothing."""
        completed = _flag(body.get("completed"))
        shop_id, register_id, employee_id = self._who(body)
        lines = [_line_input(raw) for raw in as_list(_nested(body, "SaleLines", "SaleLine"))]
        tenders = [
            self._tender(raw) for raw in as_list(_nested(body, "SalePayments", "SalePayment"))
        ]
        if completed:
            self._check_completed(lines, tenders)
        now = self.now()
        sale = Sale(
            sale_id=self.next_id(),
            completed=completed,
            shop_id=shop_id,
            register_id=register_id,
            employee_id=employee_id,
            customer_id=str(body.get("customerID") or "0"),
            # sale.md: referenceNumber and referenceNumberSource are POST attributes.
            reference_number=str(body.get("referenceNumber") or ""),
            reference_number_source=str(body.get("referenceNumberSource") or ""),
            time_stamp=now,
        )
        for unit_price, quantity, item_id, note in lines:
            sale.lines.append(Line(self.next_id(), item_id, unit_price, quantity, note))
        for tender in tenders:
            self._pay(sale, tender, now)
        self.sales[sale.sale_id] = sale
        return sale

    def _who(self, body: dict[str, Any]) -> tuple[str, str, str]:
        """sale.md: shopID, registerID and employeeID are foreign keys to real records."""
        status = self.readings.refusal_status
        shop = self.shops.get(str(body.get("shopID") or ""))
        register = self.registers.get(str(body.get("registerID") or ""))
        employee = self.employees.get(str(body.get("employeeID") or ""))
        if shop is None or shop.archived:
            raise Refusal(status, "shopID is not a shop of this account")
        if register is None or register.archived:
            raise Refusal(status, "registerID is not a register of this account")
        if employee is None or employee.archived:
            raise Refusal(status, "employeeID is not an employee of this account")
        # register.md: a register belongs to one shop.
        if register.shop_id != shop.shop_id:
            raise Refusal(status, "registerID is not a register of shopID")
        # gift-cards.md: "The register specified in the sale payload must not be named (case
        # sensitive) eCom".
        if register.name == "eCom" and _moves_a_card(body, self.gift_card_type().payment_type_id):
            raise Refusal(status, "Gift card sales cannot use the eCom register")
        return shop.shop_id, register.register_id, employee.employee_id

    def _tender(self, raw: dict[str, Any]) -> _Tender:
        status = self.readings.refusal_status
        kind = self.payment_types.get(str(raw.get("paymentTypeID") or ""))
        if kind is None or kind.archived:
            raise Refusal(status, "paymentTypeID is not a payment type of this account")
        card = None
        if kind.type == "gift card":
            # gift-cards.md: the gift card payment names the card's creditAccountID.
            card = self.cards.get(str(raw.get("creditAccountID") or ""))
            if card is None:
                raise Refusal(status, "creditAccountID is not a gift card of this account")
            if card.archived:
                raise Refusal(status, "that gift card is archived")
        kept = self.readings.remote_reference_kept
        return _Tender(
            amount=money(raw.get("amount", "0")),
            payment_type=kind,
            card=card,
            remote_reference=str(raw.get("remoteReference") or "") if kept else "",
        )

    def _check_completed(
        self, lines: list[tuple[Decimal, Decimal, str, str]], tenders: list[_Tender]
    ) -> None:
        status = self.readings.refusal_status
        total = sum((price * quantity for price, quantity, _, _ in lines), Decimal(0))
        paid = sum((tender.amount for tender in tenders), Decimal(0))
        # sale.md / tutorials/sales.md: a completed sale must be balanced.
        if paid != total:
            raise Refusal(status, "Sale is not balanced: payments must equal the sale total")
        redeems = any(t.card is not None and t.amount > 0 for t in tenders)
        if redeems and not lines and not self.readings.itemless_redemption:
            raise Refusal(status, "A completed sale needs SaleLines that make its total")
        spent: dict[str, Decimal] = {}
        for tender in tenders:
            if tender.card is not None:
                key = tender.card.credit_account_id
                spent[key] = spent.get(key, Decimal(0)) + tender.amount
        for card_id, amount in spent.items():
            if self.cards[card_id].money - amount < 0:
                raise Refusal(status, "Gift card balance is too low for this payment")

    def _pay(self, sale: Sale, tender: _Tender, now: datetime) -> None:
        card = tender.card
        payment = Payment(
            sale_payment_id=self.next_id(),
            sale_id=sale.sale_id,
            amount=tender.amount,
            payment_type_id=tender.payment_type.payment_type_id,
            credit_account_id=card.credit_account_id if card is not None else "0",
            remote_reference=tender.remote_reference,
            time_stamp=now,
            register_id=sale.register_id,
            employee_id=sale.employee_id,
        )
        self.payments[payment.sale_payment_id] = payment
        sale.payment_ids.append(payment.sale_payment_id)
        if card is None or not sale.completed:
            return
        card.money -= tender.amount
        if self.readings.sale_touches_credit_account:
            card.time_stamp = now
        if tender.amount < 0:
            # gift-cards.md (Option 1 response): loading a card adds a SaleLine of its own
            # (itemID 0, price 0, a "Gift Card Purchase" note) and a SaleAccount for it.
            line = Line(self.next_id(), "0", Decimal(0), Decimal(1), "Gift Card Purchase")
            sale.lines.append(line)
            sale.accounts.append(
                (card.credit_account_id, payment.sale_payment_id, line.sale_line_id)
            )

    # ---- rendering: every value a string (all example responses) ----

    def render_card(self, card: Card, *, masked: bool, sign: BalanceSign) -> dict[str, str]:
        shown = -card.money if sign is BalanceSign.NEGATIVE else card.money
        return {
            "creditAccountID": card.credit_account_id,
            "name": card.name,
            # gift-cards.md: masked unless the token has the scope; the tutorial's examples
            # show ten asterisks and the last four, whatever the code's length.
            "code": "*" * 10 + card.code[-4:] if masked else card.code,
            "creditLimit": "0",
            "description": card.description,
            "giftCard": "true",
            "archived": _text(card.archived),
            "timeStamp": iso(card.time_stamp),
            "customerID": card.customer_id,
            "balance": amount_text(shown),
        }

    def render_payment(self, payment: Payment) -> dict[str, Any]:
        # salepayment.md's fields: no timeStamp among them, createTime instead.
        return {
            "salePaymentID": payment.sale_payment_id,
            "amount": amount_text(payment.amount),
            "tipAmount": "0",
            "createTime": iso(payment.time_stamp),
            "archived": "false",
            "remoteReference": payment.remote_reference,
            "paymentID": "",
            "saleID": payment.sale_id,
            "paymentTypeID": payment.payment_type_id,
            "ccChargeID": "0",
            "refPaymentID": "0",
            "registerID": payment.register_id,
            "employeeID": payment.employee_id,
            "creditAccountID": payment.credit_account_id,
        }

    def render_sale(self, sale: Sale, relations: set[str]) -> dict[str, Any]:
        payments = [self.payments[pid] for pid in sale.payment_ids]
        total = sum((line.unit_price * line.unit_quantity for line in sale.lines), Decimal(0))
        rendered: dict[str, Any] = {
            "saleID": sale.sale_id,
            "timeStamp": iso(sale.time_stamp),
            "completed": _text(sale.completed),
            "archived": "false",
            "voided": "false",
            "referenceNumber": sale.reference_number,
            "referenceNumberSource": sale.reference_number_source,
            "total": amount_text(total),
            "customerID": sale.customer_id,
            "employeeID": sale.employee_id,
            "registerID": sale.register_id,
            "shopID": sale.shop_id,
        }
        if sale.completed:
            rendered["completeTime"] = iso(sale.time_stamp)
        if "SaleLines" in relations and sale.lines:
            rendered["SaleLines"] = {
                "SaleLine": one_or_list([_line(sale, line) for line in sale.lines])
            }
        if "SalePayments" in relations and payments:
            listed = []
            for payment in payments:
                item = self.render_payment(payment)
                if "SalePayments.SaleAccounts" in relations:
                    links = [a for a in sale.accounts if a[1] == payment.sale_payment_id]
                    if links:
                        card_id, payment_id, line_id = links[0]
                        item["SaleAccounts"] = {
                            "SaleAccount": {
                                "saleAccountID": line_id,
                                "creditAccountID": card_id,
                                "salePaymentID": payment_id,
                                "saleLineID": line_id,
                            }
                        }
                listed.append(item)
            rendered["SalePayments"] = {"SalePayment": one_or_list(listed)}
        return rendered


def _line(sale: Sale, line: Line) -> dict[str, Any]:
    return {
        "saleLineID": line.sale_line_id,
        "createTime": iso(sale.time_stamp),
        "timeStamp": iso(sale.time_stamp),
        "unitQuantity": amount_text(line.unit_quantity),
        "unitPrice": amount_text(line.unit_price),
        "itemID": line.item_id,
        "saleID": sale.sale_id,
        "Note": {"note": line.note} if line.note else "",
    }


def _line_input(raw: dict[str, Any]) -> tuple[Decimal, Decimal, str, str]:
    """tutorials/credit-accounts.md's misc line (itemID 0, note, unitPrice) or an item line."""
    note = raw.get("note")
    if isinstance(raw.get("Note"), dict):
        note = raw["Note"].get("note")
    return (
        money(raw.get("unitPrice", "0")),
        money(raw.get("unitQuantity", "1")),
        str(raw.get("itemID") or "0"),
        str(note or ""),
    )


def _moves_a_card(body: dict[str, Any], gift_type_id: str) -> bool:
    payments = as_list(_nested(body, "SalePayments", "SalePayment"))
    return any(str(p.get("paymentTypeID")) == gift_type_id for p in payments)


def _nested(body: dict[str, Any], group: str, item: str) -> Any:
    holder = body.get(group)
    return holder.get(item) if isinstance(holder, dict) else None


def as_list(value: Any) -> list[dict[str, Any]]:
    """relations.md: a nested relation may be one object or a list of them."""
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    if isinstance(value, dict):
        return [value]
    return []


def one_or_list(items: list[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    """searching.md, creditaccount.md: one item comes back as an object, several as a list."""
    return items[0] if len(items) == 1 else items


def money(raw: Any) -> Decimal:
    # Request examples mix JSON numbers and strings ("amount": "-100", "amount": 34.48).
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation as exc:
        raise Refusal(400, "amount must be a number") from exc
    if not value.is_finite():
        raise Refusal(400, "amount must be a number")
    return value


def amount_text(value: Decimal) -> str:
    # Responses carry amounts as plain strings without padding: "0", "-100", "11.49".
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def _flag(raw: Any) -> bool:
    return raw is True or str(raw).strip().lower() == "true"


def _text(value: bool) -> str:
    return "true" if value else "false"
