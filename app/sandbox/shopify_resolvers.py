"""State of the simulated Shopify shop and the GraphQL views over it.

The views are plain objects read by graphql-core's default resolver (attributes, or methods
called with `(info, **args)`), so a request gets exactly the fields it selected. Every view has
`typename` so interfaces (Node, GiftCardTransaction) resolve without guessing.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

from graphql import GraphQLError, GraphQLResolveInfo

CODE_ALPHABET = string.ascii_lowercase + string.digits
CODE_PATTERN = re.compile(r"^[a-z0-9]+$")
MAX_PAGE_SIZE = 250
EXPIRING_WITHIN = timedelta(days=30)
GIFT_CARD_LIMIT = Decimal("10000")

T = TypeVar("T")
Info = GraphQLResolveInfo[Any]
SortValue = int | str


def gid(kind: str, number: int) -> str:
    return f"gid://shopify/{kind}/{number}"


def parse_gid(value: str | int | None, kind: str) -> int | None:
    """Accepts a gid of `kind` or a bare number (as the Python helpers do)."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    prefix = f"gid://shopify/{kind}/"
    digits = value[len(prefix) :] if value.startswith(prefix) else value
    return int(digits) if digits.isdigit() else None


def money(amount: Decimal, currency: str) -> dict[str, str]:
    return {"amount": f"{amount:.2f}", "currencyCode": currency}


def money_bag(amount: Decimal, currency: str) -> dict[str, dict[str, str]]:
    return {"shopMoney": money(amount, currency), "presentmentMoney": money(amount, currency)}


def iso(moment: datetime | None) -> str | None:
    """Shopify answers DateTime in UTC with second precision."""
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def to_decimal(value: Any) -> Decimal | None:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() else None


def parse_datetime(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_date(value: str) -> date | None:
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def user_error(field_path: list[str] | None, message: str, code: str | None) -> dict[str, Any]:
    return {"field": field_path, "message": message, "code": code}


# --- state ---------------------------------------------------------------------------------


@dataclass
class CustomerState:
    id: int
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    created_at: datetime
    updated_at: datetime
    notifications_sent: int = 0


@dataclass
class GiftCardTxnState:
    id: int
    card_id: int
    kind: Literal["credit", "debit"]
    amount: Decimal
    """Signed as Shopify shows it: credits positive, debits negative."""
    currency: str
    note: str | None
    processed_at: datetime


@dataclass
class GiftCardState:
    id: int
    code: str = field(repr=False)
    initial_value: Decimal
    balance: Decimal
    currency: str
    source: str
    created_at: datetime
    updated_at: datetime
    note: str | None = None
    expires_on: date | None = None
    customer_id: int | None = None
    order_id: int | None = None
    template_suffix: str | None = None
    deactivated_at: datetime | None = None
    transactions: list[GiftCardTxnState] = field(default_factory=list)
    notifications_sent: int = 0

    @property
    def enabled(self) -> bool:
        return self.deactivated_at is None

    @property
    def last_characters(self) -> str:
        return self.code[-4:]

    def expired(self, today: date) -> bool:
        return self.expires_on is not None and self.expires_on < today


@dataclass
class OrderTxnState:
    id: int
    order_id: int
    kind: str
    status: str
    gateway: str
    amount: Decimal
    currency: str
    receipt: dict[str, Any]
    parent_id: int | None
    created_at: datetime


@dataclass
class LineItemState:
    id: int
    title: str
    quantity: int
    price: Decimal
    is_gift_card: bool


@dataclass
class OrderState:
    id: int
    name: str
    email: str | None
    customer_id: int | None
    shipping_name: str | None
    currency: str
    created_at: datetime
    line_items: list[LineItemState] = field(default_factory=list)
    transactions: list[OrderTxnState] = field(default_factory=list)


@dataclass
class WebhookSubscriptionState:
    id: int
    topic: str
    callback_url: str | None
    format: str
    created_at: datetime
    api_version: str = "2026-07"


@dataclass
class BulkOperationState:
    id: int
    query: str
    status: str
    created_at: datetime
    base_url: str
    completed_at: datetime | None = None
    rows: list[str] = field(default_factory=list, repr=False)
    root_object_count: int = 0
    api_version: str = ""

    @property
    def running(self) -> bool:
        return self.status in ("CREATED", "RUNNING")


class ShopError(Exception):
    """A refused domain operation, carried to the mutation as a userError."""

    def __init__(self, code: str, message: str, field_path: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field_path = field_path

    def as_user_error(self) -> dict[str, Any]:
        return user_error(self.field_path, str(self), self.code)


class ShopState:
    """All the shop's data, in memory. Ids are shared across kinds like Shopify's are unique."""

    def __init__(
        self, currency: str = "AUD", domain: str = "giftsync-sandbox.myshopify.com"
    ) -> None:
        self.currency = currency
        self.domain = domain
        self.customers: dict[int, CustomerState] = {}
        self.gift_cards: dict[int, GiftCardState] = {}
        self.orders: dict[int, OrderState] = {}
        self.order_transactions: dict[int, OrderTxnState] = {}
        self.webhook_subscriptions: dict[int, WebhookSubscriptionState] = {}
        self.bulk_operations: dict[int, BulkOperationState] = {}
        self.gift_card_transactions: dict[int, GiftCardTxnState] = {}
        self._next_id = 1_000_001
        self._order_number = 1000
        self._last_moment = datetime(2000, 1, 1, tzinfo=UTC)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def now(self) -> datetime:
        """Strictly increasing, so `updatedAt` ordering never ties between two changes."""
        moment = datetime.now(UTC)
        if moment <= self._last_moment:
            moment = self._last_moment + timedelta(microseconds=1)
        self._last_moment = moment
        return moment

    # --- customers ---

    def create_customer(
        self,
        email: str | None = None,
        phone: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> CustomerState:
        if not (email or phone or first_name or last_name):
            raise ShopError("INVALID", "A name, phone number, or email address must be present")
        if email and self.customer_by_email(email):
            raise ShopError("TAKEN", "Email has already been taken", ["email"])
        moment = self.now()
        customer = CustomerState(self.new_id(), email, phone, first_name, last_name, moment, moment)
        self.customers[customer.id] = customer
        return customer

    def customer_by_email(self, email: str) -> CustomerState | None:
        wanted = email.strip().lower()
        return next((c for c in self.customers.values() if (c.email or "").lower() == wanted), None)

    # --- gift cards ---

    def card(self, card_id: str | int) -> GiftCardState:
        number = parse_gid(card_id, "GiftCard")
        card = self.gift_cards.get(number) if number is not None else None
        if card is None:
            raise ShopError("GIFT_CARD_NOT_FOUND", "The gift card could not be found.", ["id"])
        return card

    def create_gift_card(
        self,
        initial_value: Decimal,
        code: str | None = None,
        currency: str | None = None,
        source: str = "api_client",
        customer_id: int | None = None,
        note: str | None = None,
        expires_on: date | None = None,
        order_id: int | None = None,
        template_suffix: str | None = None,
    ) -> GiftCardState:
        if initial_value < 0:
            raise ShopError("INVALID", "Initial value must be positive", ["initialValue"])
        if initial_value > GIFT_CARD_LIMIT:
            raise ShopError(
                "GREATER_THAN",
                f"Initial value must be less than or equal to {GIFT_CARD_LIMIT}",
                ["initialValue"],
            )
        if code is None:
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(16))
        code = code.strip().lower()
        if len(code) < 8:
            raise ShopError("TOO_SHORT", "Code is too short (minimum is 8 characters)", ["code"])
        if len(code) > 20:
            raise ShopError("TOO_LONG", "Code is too long (maximum is 20 characters)", ["code"])
        if not CODE_PATTERN.match(code):
            raise ShopError("INVALID", "Code can only contain letters and numbers", ["code"])
        if any(existing.code == code for existing in self.gift_cards.values()):
            raise ShopError("TAKEN", "Code has already been taken", ["code"])
        if customer_id is not None and customer_id not in self.customers:
            raise ShopError("CUSTOMER_NOT_FOUND", "Customer could not be found", ["customerId"])
        moment = self.now()
        card = GiftCardState(
            id=self.new_id(),
            code=code,
            initial_value=initial_value,
            balance=initial_value,
            currency=currency or self.currency,
            source=source,
            created_at=moment,
            updated_at=moment,
            note=note,
            expires_on=expires_on,
            customer_id=customer_id,
            order_id=order_id,
            template_suffix=template_suffix,
        )
        self.gift_cards[card.id] = card
        return card

    def move(
        self,
        card_id: str | int,
        kind: Literal["credit", "debit"],
        amount: Decimal,
        currency: str,
        note: str | None = None,
        processed_at: datetime | None = None,
    ) -> GiftCardTxnState:
        amount_field = ["creditInput" if kind == "credit" else "debitInput"]
        amount_field.append("creditAmount" if kind == "credit" else "debitAmount")
        card = self.card(card_id)
        if not card.enabled:
            raise ShopError("INVALID", "The gift card is deactivated.", ["id"])
        if card.expired(self.now().date()):
            raise ShopError("INVALID", "The gift card is expired.", ["id"])
        if amount <= 0:
            raise ShopError(
                "NEGATIVE_OR_ZERO_AMOUNT",
                "The amount must be greater than zero.",
                [*amount_field, "amount"],
            )
        if currency != card.currency:
            raise ShopError(
                "MISMATCHING_CURRENCY",
                "The currency provided does not match the currency of the gift card.",
                [*amount_field, "currencyCode"],
            )
        if kind == "debit" and amount > card.balance:
            raise ShopError(
                "INSUFFICIENT_FUNDS",
                "The gift card does not have sufficient funds to satisfy the request.",
                [*amount_field, "amount"],
            )
        if kind == "credit" and card.balance + amount > GIFT_CARD_LIMIT:
            raise ShopError(
                "GIFT_CARD_LIMIT_EXCEEDED",
                "The gift card's value exceeds the allowed limits.",
                [*amount_field, "amount"],
            )
        moment = self.now()
        signed = amount if kind == "credit" else -amount
        txn = GiftCardTxnState(
            self.new_id(), card.id, kind, signed, currency, note, processed_at or moment
        )
        card.balance += signed
        card.transactions.append(txn)
        card.updated_at = moment
        self.gift_card_transactions[txn.id] = txn
        return txn

    def deactivate(self, card_id: str | int) -> GiftCardState:
        card = self.card(card_id)
        if card.deactivated_at is None:
            card.deactivated_at = card.updated_at = self.now()
        return card

    def update_card(self, card_id: str | int, changes: dict[str, Any]) -> GiftCardState:
        card = self.card(card_id)
        if "customerId" in changes:
            customer_id = parse_gid(changes["customerId"], "Customer")
            if customer_id is None or customer_id not in self.customers:
                raise ShopError(
                    "CUSTOMER_NOT_FOUND", "Customer could not be found", ["input", "customerId"]
                )
            if card.customer_id is not None and card.customer_id != customer_id:
                raise ShopError(
                    "INVALID", "Customer can't be changed once set", ["input", "customerId"]
                )
            card.customer_id = customer_id
        if "note" in changes:
            card.note = changes["note"]
        if "templateSuffix" in changes:
            card.template_suffix = changes["templateSuffix"]
        if "expiresOn" in changes:
            raw = changes["expiresOn"]
            expires_on = parse_date(raw) if raw is not None else None
            if raw is not None and expires_on is None:
                raise ShopError("INVALID", "Expires on is invalid", ["input", "expiresOn"])
            card.expires_on = expires_on
        card.updated_at = self.now()
        return card

    def notify(self, card_id: str | int) -> GiftCardState:
        card = self.card(card_id)
        customer = self.customers.get(card.customer_id) if card.customer_id else None
        if customer is None:
            raise ShopError("CUSTOMER_NOT_FOUND", "The customer could not be found.", ["id"])
        if not (customer.email or customer.phone):
            raise ShopError("INVALID", "The customer has no email or phone number.", ["id"])
        if not card.enabled:
            raise ShopError("INVALID", "The gift card is deactivated.", ["id"])
        card.notifications_sent += 1
        customer.notifications_sent += 1
        return card

    def search_cards(self, query: str | None) -> list[GiftCardState]:
        today = self.now().date()
        terms = parse_search(query)
        return [c for c in self.gift_cards.values() if all(t(c, today) for t in terms)]


# --- search syntax -------------------------------------------------------------------------

CardTest = Callable[[GiftCardState, date], bool]
SEARCH_TOKEN = re.compile(r'\s*(-?)(?:(\w+):\s*)?(<=|>=|<|>|=)?("[^"]*"|\'[^\']*\'|\S+)')


def _compare(left: Any, operator: str, right: Any) -> bool:
    if left is None or right is None:
        return False
    if operator == ">":
        return bool(left > right)
    if operator == ">=":
        return bool(left >= right)
    if operator == "<":
        return bool(left < right)
    if operator == "<=":
        return bool(left <= right)
    return bool(left == right)


def _moment_term(value: str) -> datetime | None:
    if value.lower() == "now":
        return datetime.now(UTC)
    return parse_datetime(value)


def _status_test(value: str) -> CardTest:
    def test(card: GiftCardState, today: date) -> bool:
        expired = card.expired(today)
        if value == "enabled":
            return card.enabled and not expired
        if value == "disabled":
            return not card.enabled
        if value == "expired":
            return expired
        if value == "expiring":
            return (
                card.enabled
                and card.expires_on is not None
                and today <= card.expires_on <= today + EXPIRING_WITHIN
            )
        return False

    return test


def _balance_status_test(value: str) -> CardTest:
    def test(card: GiftCardState, _today: date) -> bool:
        if value == "full":
            return card.balance == card.initial_value
        if value == "partial":
            return Decimal(0) < card.balance < card.initial_value
        if value == "empty":
            return card.balance == 0
        if value == "full_or_partial":
            return card.balance > 0
        return False

    return test


def _term_test(name: str | None, operator: str, value: str) -> CardTest:
    lowered = value.lower()
    if name is None:
        return lambda card, _t: card.code == lowered or card.last_characters == lowered
    if name == "status":
        return _status_test(lowered)
    if name == "balance_status":
        return _balance_status_test(lowered)
    if name == "source":
        return lambda card, _t: card.source == lowered
    if name == "id":
        number = parse_gid(value, "GiftCard")
        return lambda card, _t: _compare(card.id, operator, number)
    if name == "initial_value":
        amount = to_decimal(value)
        return lambda card, _t: _compare(card.initial_value, operator, amount)
    if name == "created_at":
        moment = _moment_term(value)
        if len(value) == 10 and moment is not None and operator in ("=", "<=", ">"):
            # A bare date means the whole day.
            moment += timedelta(days=1) - timedelta(microseconds=1)
        return lambda card, _t: _compare(card.created_at, operator, moment)
    if name == "expires_on":
        day = parse_date(value)
        return lambda card, _t: _compare(card.expires_on, operator, day)
    if name in ("code", "last_characters"):
        return lambda card, _t: card.code == lowered or card.last_characters == lowered
    if name == "customer_id":
        number = parse_gid(value, "Customer")
        return lambda card, _t: card.customer_id == number
    # Shopify ignores unknown filters with a warning; matching nothing would be harsher.
    return lambda _card, _t: True


def parse_search(query: str | None) -> list[CardTest]:
    """AND of terms: `term`, `field:value`, `field:>=value`, `-field:value` (negation)."""
    tests: list[CardTest] = []
    for match in SEARCH_TOKEN.finditer(query or ""):
        negate, name, operator, value = match.groups()
        if name is None and value.upper() == "AND":
            continue
        test = _term_test(name.lower() if name else None, operator or "=", value.strip("\"'"))
        tests.append(_negated(test) if negate else test)
    return tests


def _negated(test: CardTest) -> CardTest:
    return lambda card, today: not test(card, today)


# --- pagination ----------------------------------------------------------------------------


def encode_cursor(sort_value: SortValue, item_id: int) -> str:
    raw = json.dumps([sort_value, item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[SortValue, int]:
    try:
        sort_value, item_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise GraphQLError(f"Invalid cursor for current pagination sort: {cursor}") from exc
    if not isinstance(item_id, int) or not isinstance(sort_value, int | str):
        raise GraphQLError(f"Invalid cursor for current pagination sort: {cursor}")
    return sort_value, item_id


def connection(
    info: Info,
    items: Iterable[T],
    sort_key: Callable[[T], tuple[SortValue, int]],
    view: Callable[[T], Any],
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    reverse: bool | None,
) -> dict[str, Any]:
    """Relay connection over `items` ordered by `(sort value, id)`; cursors carry that pair,
    so a page boundary holds even when items are added or change between requests."""
    bulk = bool(getattr(info.context, "bulk", False))
    if not bulk:
        if first is None and last is None:
            raise GraphQLError("you must provide one of first or last")
        for name, size in (("first", first), ("last", last)):
            if size is not None and not 0 <= size <= MAX_PAGE_SIZE:
                raise GraphQLError(f"The {name} argument must be between 0 and {MAX_PAGE_SIZE}.")
    ordered = sorted(items, key=sort_key, reverse=bool(reverse))
    keys = [sort_key(item) for item in ordered]

    def comes_after(key: tuple[SortValue, int], mark: tuple[SortValue, int]) -> bool:
        return bool(key < mark) if reverse else bool(key > mark)

    start, end = 0, len(ordered)
    if after:
        mark = decode_cursor(after)
        start = next((i for i, k in enumerate(keys) if comes_after(k, mark)), len(keys))
    if before:
        mark = decode_cursor(before)
        end = next((i for i, k in enumerate(keys) if not comes_after(mark, k)), len(keys))
        end = max(start, end)
    if first is not None:
        end = min(end, start + first)
    if last is not None:
        start = max(start, end - last)
    page = list(zip(ordered[start:end], keys[start:end], strict=True))
    edges = [{"cursor": encode_cursor(*key), "node": view(item)} for item, key in page]
    return {
        "edges": edges,
        "nodes": [edge["node"] for edge in edges],
        "pageInfo": {
            "hasNextPage": end < len(ordered),
            "hasPreviousPage": start > 0,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


CARD_SORT_KEYS: dict[str, Callable[[GiftCardState], SortValue]] = {
    "ID": lambda c: c.id,
    "CREATED_AT": lambda c: micros(c.created_at),
    "UPDATED_AT": lambda c: micros(c.updated_at),
    "BALANCE": lambda c: int(c.balance * 100),
    "INITIAL_VALUE": lambda c: int(c.initial_value * 100),
    "AMOUNT_SPENT": lambda c: int((c.initial_value - c.balance) * 100),
    "CODE": lambda c: c.last_characters,
    "EXPIRES_ON": lambda c: c.expires_on.toordinal() if c.expires_on else 0,
    "DISABLED_AT": lambda c: micros(c.deactivated_at) if c.deactivated_at else 0,
    "RELEVANCE": lambda c: c.id,
    "CUSTOMER_NAME": lambda c: c.customer_id or 0,
}


# --- views ---------------------------------------------------------------------------------


class CustomerView:
    typename = "Customer"

    def __init__(self, shop: ShopState, customer: CustomerState) -> None:
        self._customer = customer
        self.id = gid("Customer", customer.id)
        self.legacyResourceId = str(customer.id)
        self.email = customer.email
        self.phone = customer.phone
        self.firstName = customer.first_name
        self.lastName = customer.last_name
        names = [n for n in (customer.first_name, customer.last_name) if n]
        self.displayName = " ".join(names) or customer.email or customer.phone or ""
        self.createdAt = iso(customer.created_at)
        self.updatedAt = iso(customer.updated_at)
        self.tags: list[str] = []
        self.state = "ENABLED"
        self.verifiedEmail = bool(customer.email)
        # `email` is deprecated since 2026-01 for `defaultEmailAddress.emailAddress`.
        self.defaultEmailAddress = (
            {
                "emailAddress": customer.email,
                "validFormat": "@" in customer.email,
                "marketingState": "NOT_SUBSCRIBED",
                "marketingOptInLevel": None,
                "marketingUpdatedAt": None,
                "openTrackingLevel": "UNKNOWN",
                "sourceLocation": None,
            }
            if customer.email
            else None
        )
        self.numberOfOrders = str(
            sum(1 for o in shop.orders.values() if o.customer_id == customer.id)
        )


class GiftCardTransactionView:
    def __init__(self, shop: ShopState, txn: GiftCardTxnState) -> None:
        self._shop = shop
        self.typename = (
            "GiftCardCreditTransaction" if txn.kind == "credit" else "GiftCardDebitTransaction"
        )
        self.id = gid(self.typename, txn.id)
        self.amount = money(txn.amount, txn.currency)
        self.note = txn.note
        self.processedAt = iso(txn.processed_at)
        self._card_id = txn.card_id

    def giftCard(self, _info: Info) -> GiftCardView:
        return GiftCardView(self._shop, self._shop.gift_cards[self._card_id])


class GiftCardView:
    typename = "GiftCard"

    def __init__(self, shop: ShopState, card: GiftCardState) -> None:
        self._shop = shop
        self._card = card
        self.id = gid("GiftCard", card.id)
        self.balance = money(card.balance, card.currency)
        self.initialValue = money(card.initial_value, card.currency)
        self.createdAt = iso(card.created_at)
        self.updatedAt = iso(card.updated_at)
        self.deactivatedAt = iso(card.deactivated_at)
        self.enabled = card.enabled
        self.expiresOn = card.expires_on.isoformat() if card.expires_on else None
        self.lastCharacters = card.last_characters
        self.maskedCode = f"•••• •••• •••• {card.last_characters}"
        self.note = card.note
        self.templateSuffix = card.template_suffix
        self.recipientAttributes = None

    def customer(self, _info: Info) -> CustomerView | None:
        found = self._shop.customers.get(self._card.customer_id or 0)
        return CustomerView(self._shop, found) if found else None

    def order(self, _info: Info) -> OrderView | None:
        found = self._shop.orders.get(self._card.order_id or 0)
        return OrderView(self._shop, found) if found else None

    def transactions(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        reverse: bool | None = False,
    ) -> dict[str, Any]:
        return connection(
            info,
            self._card.transactions,
            lambda t: (t.id, t.id),
            lambda t: GiftCardTransactionView(self._shop, t),
            first=first,
            after=after,
            last=last,
            before=before,
            reverse=reverse,
        )


def mailing_address(name: str | None) -> dict[str, Any] | None:
    if not name:
        return None
    first, _, last = name.partition(" ")
    return {
        "id": gid("MailingAddress", abs(hash(name)) % 10**9),
        "name": name,
        "firstName": first,
        "lastName": last or None,
        "address1": "1 Sandbox Street",
        "city": "Melbourne",
        "province": "Victoria",
        "provinceCode": "VIC",
        "country": "Australia",
        "countryCodeV2": "AU",
        "zip": "3000",
        "phone": None,
        "company": None,
        "address2": None,
        "formatted": [name, "1 Sandbox Street", "Melbourne VIC 3000", "Australia"],
        "coordinatesValidated": False,
    }


class OrderTransactionView:
    typename = "OrderTransaction"

    def __init__(self, shop: ShopState, txn: OrderTxnState) -> None:
        self._shop = shop
        self._txn = txn
        self.id = gid("OrderTransaction", txn.id)
        self.kind = txn.kind
        self.status = txn.status
        self.gateway = txn.gateway
        self.formattedGateway = "Gift card" if txn.gateway == "gift_card" else txn.gateway
        self.amountSet = money_bag(txn.amount, txn.currency)
        # Shopify's JSON scalar on receiptJson arrives as a JSON-encoded string.
        self.receiptJson = json.dumps(txn.receipt)
        self.createdAt = iso(txn.created_at)
        self.processedAt = iso(txn.created_at)
        self.test = False
        self.manualPaymentGateway = False
        self.manuallyCapturable = False
        self.multiCapturable = False
        self.fees: list[Any] = []
        self.errorCode = None
        self.authorizationCode = None

    def parentTransaction(self, _info: Info) -> OrderTransactionView | None:
        parent = self._shop.order_transactions.get(self._txn.parent_id or 0)
        return OrderTransactionView(self._shop, parent) if parent else None

    def order(self, _info: Info) -> OrderView:
        return OrderView(self._shop, self._shop.orders[self._txn.order_id])


class LineItemView:
    typename = "LineItem"

    def __init__(self, item: LineItemState, currency: str) -> None:
        self.id = gid("LineItem", item.id)
        self.name = item.title
        self.title = item.title
        self.quantity = item.quantity
        self.currentQuantity = item.quantity
        self.isGiftCard = item.is_gift_card
        self.requiresShipping = not item.is_gift_card
        self.sku = None
        self.variantTitle = None
        self.vendor = None
        self.originalUnitPriceSet = money_bag(item.price, currency)
        self.originalTotalSet = money_bag(item.price * item.quantity, currency)
        self.discountedTotalSet = self.originalTotalSet
        self.discountedUnitPriceSet = self.originalUnitPriceSet


class OrderView:
    typename = "Order"

    def __init__(self, shop: ShopState, order: OrderState) -> None:
        self._shop = shop
        self._order = order
        self.id = gid("Order", order.id)
        self.legacyResourceId = str(order.id)
        self.name = order.name
        self.email = order.email
        self.createdAt = iso(order.created_at)
        self.processedAt = iso(order.created_at)
        self.updatedAt = iso(order.created_at)
        self.currencyCode = order.currency
        self.presentmentCurrencyCode = order.currency
        total = sum((i.price * i.quantity for i in order.line_items), Decimal(0))
        self.totalPriceSet = money_bag(total, order.currency)
        self.currentTotalPriceSet = self.totalPriceSet
        self.displayFinancialStatus = "PAID"
        self.paymentGatewayNames = sorted({t.gateway for t in order.transactions})
        self.shippingAddress = mailing_address(order.shipping_name)
        self.cancelledAt = None
        self.test = False

    def customer(self, _info: Info) -> CustomerView | None:
        found = self._shop.customers.get(self._order.customer_id or 0)
        return CustomerView(self._shop, found) if found else None

    def transactions(
        self,
        _info: Info,
        first: int | None = None,
        capturable: bool | None = None,
        manuallyResolvable: bool | None = None,
    ) -> list[OrderTransactionView]:
        views = [OrderTransactionView(self._shop, t) for t in self._order.transactions]
        return views[:first] if first is not None else views

    def lineItems(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        reverse: bool | None = False,
    ) -> dict[str, Any]:
        return connection(
            info,
            self._order.line_items,
            lambda i: (i.id, i.id),
            lambda i: LineItemView(i, self._order.currency),
            first=first,
            after=after,
            last=last,
            before=before,
            reverse=reverse,
        )


class WebhookSubscriptionView:
    typename = "WebhookSubscription"

    def __init__(self, sub: WebhookSubscriptionState) -> None:
        self.id = gid("WebhookSubscription", sub.id)
        self.legacyResourceId = str(sub.id)
        self.topic = sub.topic
        self.format = sub.format
        self.callbackUrl = sub.callback_url
        self.uri = sub.callback_url
        self.endpoint = {"typename": "WebhookHttpEndpoint", "callbackUrl": sub.callback_url}
        self.createdAt = iso(sub.created_at)
        self.updatedAt = iso(sub.created_at)
        self.includeFields: list[str] = []
        self.metafieldNamespaces: list[str] = []
        self.filter = None
        self.metafields: list[Any] = []
        version = sub.api_version
        self.apiVersion = {"handle": version, "displayName": version, "supported": True}


class BulkOperationView:
    typename = "BulkOperation"

    def __init__(self, op: BulkOperationState) -> None:
        self.id = gid("BulkOperation", op.id)
        self.status = op.status
        self.type = "QUERY"
        self.query = op.query
        self.createdAt = iso(op.created_at)
        self.completedAt = iso(op.completed_at)
        self.errorCode = None
        done = op.status == "COMPLETED"
        self.objectCount = str(len(op.rows))
        self.rootObjectCount = str(op.root_object_count)
        self.fileSize = str(sum(len(r.encode()) + 1 for r in op.rows)) if done else None
        self.url = f"{op.base_url}/_sim/bulk/{op.id}.jsonl" if done and op.rows else None
        self.partialDataUrl = None


def typename_of(value: Any, _info: Info, _abstract: Any) -> str | None:
    """Type resolver for interfaces and unions: every view (or dict) names its own type."""
    if isinstance(value, dict):
        name = value.get("typename")
        return name if isinstance(name, str) else None
    name = getattr(value, "typename", None)
    return name if isinstance(name, str) else None


# --- roots ---------------------------------------------------------------------------------


@dataclass
class ExecutionContext:
    bulk: bool = False


def _node(shop: ShopState, value: str) -> Any:
    match = re.fullmatch(r"gid://shopify/(\w+)/(\d+)", value)
    if match is None:
        return None
    kind, number = match.group(1), int(match.group(2))
    if kind == "GiftCard" and number in shop.gift_cards:
        return GiftCardView(shop, shop.gift_cards[number])
    if kind in ("GiftCardCreditTransaction", "GiftCardDebitTransaction"):
        txn = shop.gift_card_transactions.get(number)
        view = GiftCardTransactionView(shop, txn) if txn else None
        return view if view and view.typename == kind else None
    if kind == "Customer" and number in shop.customers:
        return CustomerView(shop, shop.customers[number])
    if kind == "Order" and number in shop.orders:
        return OrderView(shop, shop.orders[number])
    if kind == "OrderTransaction" and number in shop.order_transactions:
        return OrderTransactionView(shop, shop.order_transactions[number])
    if kind == "WebhookSubscription" and number in shop.webhook_subscriptions:
        return WebhookSubscriptionView(shop.webhook_subscriptions[number])
    if kind == "BulkOperation" and number in shop.bulk_operations:
        op = shop.bulk_operations[number]
        return BulkOperationView(op)
    return None


class QueryRoot:
    typename = "QueryRoot"

    def __init__(self, shop: ShopState, observe_bulk: Callable[[BulkOperationState], None]) -> None:
        self._shop = shop
        self._observe_bulk = observe_bulk

    def shop(self, _info: Info) -> dict[str, Any]:
        return {
            "typename": "Shop",
            "id": gid("Shop", 1),
            "name": "giftsync sandbox",
            "myshopifyDomain": self._shop.domain,
            "currencyCode": self._shop.currency,
        }

    def giftCard(self, _info: Info, id: str) -> GiftCardView | None:
        number = parse_gid(id, "GiftCard")
        card = self._shop.gift_cards.get(number or 0)
        return GiftCardView(self._shop, card) if card else None

    def giftCards(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        reverse: bool | None = False,
        sortKey: str | None = "ID",
        query: str | None = None,
        savedSearchId: str | None = None,
    ) -> dict[str, Any]:
        sort_value = CARD_SORT_KEYS[sortKey or "ID"]
        return connection(
            info,
            self._shop.search_cards(query),
            lambda c: (sort_value(c), c.id),
            lambda c: GiftCardView(self._shop, c),
            first=first,
            after=after,
            last=last,
            before=before,
            reverse=reverse,
        )

    def giftCardsCount(
        self,
        _info: Info,
        query: str | None = None,
        savedSearchId: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """`limit` (2026-01 on) caps the count, which then reads AT_LEAST (CountPrecision)."""
        count = len(self._shop.search_cards(query))
        if limit is not None and count > limit:
            return {"count": limit, "precision": "AT_LEAST"}
        return {"count": count, "precision": "EXACT"}

    def customer(self, _info: Info, id: str) -> CustomerView | None:
        found = self._shop.customers.get(parse_gid(id, "Customer") or 0)
        return CustomerView(self._shop, found) if found else None

    def customers(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        reverse: bool | None = False,
        sortKey: str | None = None,
        query: str | None = None,
    ) -> dict[str, Any]:
        return connection(
            info,
            [c for c in self._shop.customers.values() if customer_matches(c, query)],
            lambda c: (c.id, c.id),
            lambda c: CustomerView(self._shop, c),
            first=first,
            after=after,
            last=last,
            before=before,
            reverse=reverse,
        )

    def order(self, _info: Info, id: str) -> OrderView | None:
        found = self._shop.orders.get(parse_gid(id, "Order") or 0)
        return OrderView(self._shop, found) if found else None

    def node(self, _info: Info, id: str) -> Any:
        view = _node(self._shop, id)
        if isinstance(view, BulkOperationView):
            op = self._shop.bulk_operations[parse_gid(id, "BulkOperation") or 0]
            self._observe_bulk(op)
            return BulkOperationView(op)
        return view

    def nodes(self, info: Info, ids: list[str]) -> list[Any]:
        return [self.node(info, value) for value in ids]

    def currentBulkOperation(
        self, _info: Info, type: str | None = "QUERY"
    ) -> BulkOperationView | None:
        """Deprecated since 2026-01 (several may run at once): the newest one."""
        if type == "MUTATION" or not self._shop.bulk_operations:
            return None
        op = self._shop.bulk_operations[max(self._shop.bulk_operations)]
        self._observe_bulk(op)
        return BulkOperationView(op)

    def bulkOperation(self, _info: Info, id: str) -> BulkOperationView | None:
        """One of the app's operations by id; each look moves a running one a step."""
        op = self._shop.bulk_operations.get(parse_gid(id, "BulkOperation") or 0)
        if op is None:
            return None
        self._observe_bulk(op)
        return BulkOperationView(op)

    def bulkOperations(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        reverse: bool | None = False,
        sortKey: str | None = "CREATED_AT",
        query: str | None = None,
    ) -> dict[str, Any]:
        """The app's operations matching `query`, newest first by default (schema text)."""

        def sort_value(op: BulkOperationState) -> tuple[SortValue, int]:
            if sortKey == "COMPLETED_AT":
                return (micros(op.completed_at) if op.completed_at else 0, op.id)
            return (micros(op.created_at), op.id)

        return connection(
            info,
            [op for op in self._shop.bulk_operations.values() if bulk_matches(op, query)],
            sort_value,
            BulkOperationView,
            first=first,
            after=after,
            last=last,
            before=before,
            reverse=not reverse,
        )

    def webhookSubscriptions(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        reverse: bool | None = False,
        sortKey: str | None = "CREATED_AT",
        query: str | None = None,
        callbackUrl: str | None = None,
        format: str | None = None,
        topics: list[str] | None = None,
        uri: str | None = None,
    ) -> dict[str, Any]:
        """Shop-scoped subscriptions made through the API (app-scoped ones are not listed)."""
        wanted_uri = uri or callbackUrl
        subs = [
            sub
            for sub in self._shop.webhook_subscriptions.values()
            if (not topics or sub.topic in topics)
            and (wanted_uri is None or sub.callback_url == wanted_uri)
            and (format is None or sub.format == format)
        ]
        return connection(
            info,
            subs,
            lambda sub: (micros(sub.created_at) if sortKey == "CREATED_AT" else sub.id, sub.id),
            WebhookSubscriptionView,
            first=first,
            after=after,
            last=last,
            before=before,
            reverse=reverse,
        )


def bulk_matches(op: BulkOperationState, query: str | None) -> bool:
    """`bulkOperations(query:)`: alternatives joined by OR, each an AND of `field:value`
    terms over `status`, `operation_type`, `id` and `created_at` (the schema's filter table)."""
    if not query or not query.strip():
        return True
    return any(
        all(_bulk_term(op, match) for match in SEARCH_TOKEN.finditer(alternative))
        for alternative in re.split(r"\s+OR\s+", query.strip())
    )


def _bulk_term(op: BulkOperationState, match: re.Match[str]) -> bool:
    negate, name, operator, raw = match.groups()
    value = raw.strip("\"'()")
    if name is None:
        result = value.upper() == "AND" or not value
    elif name == "status":
        result = op.status.lower() == value.lower()
    elif name == "operation_type":
        result = value.lower() == "query"
    elif name == "id":
        result = _compare(op.id, operator or "=", parse_gid(value, "BulkOperation"))
    elif name == "created_at":
        result = _compare(op.created_at, operator or "=", _moment_term(value))
    else:
        result = True  # Shopify ignores unknown filters with a warning
    return not result if negate else result


def customer_matches(customer: CustomerState, query: str | None) -> bool:
    for match in SEARCH_TOKEN.finditer(query or ""):
        _negate, name, _operator, raw = match.groups()
        value = raw.strip("\"'").lower()
        if name == "email":
            if (customer.email or "").lower() != value:
                return False
        elif name == "phone":
            if (customer.phone or "") != value:
                return False
        elif name is None:
            haystack = " ".join(
                (customer.email or "", customer.first_name or "", customer.last_name or "")
            ).lower()
            if value not in haystack:
                return False
    return True


class MutationRoot:
    typename = "Mutation"

    def __init__(
        self,
        shop: ShopState,
        start_bulk: Callable[[str], BulkOperationState],
        version: str = "2026-07",
    ) -> None:
        self._shop = shop
        self._start_bulk = start_bulk
        self._version = version

    def giftCardCreate(self, _info: Info, input: dict[str, Any]) -> dict[str, Any]:
        shop = self._shop
        try:
            initial_value = _initial_amount(shop, input)
            customer_id = None
            if input.get("customerId") is not None:
                customer_id = parse_gid(input["customerId"], "Customer")
                if customer_id is None or customer_id not in shop.customers:
                    raise ShopError(
                        "CUSTOMER_NOT_FOUND",
                        "Customer could not be found",
                        ["input", "customerId"],
                    )
            expires_on = None
            if input.get("expiresOn") is not None:
                expires_on = parse_date(input["expiresOn"])
                if expires_on is None:
                    raise ShopError("INVALID", "Expires on is invalid", ["input", "expiresOn"])
            card = shop.create_gift_card(
                initial_value,
                code=input.get("code"),
                customer_id=customer_id,
                note=input.get("note"),
                expires_on=expires_on,
                template_suffix=input.get("templateSuffix"),
            )
        except ShopError as exc:
            if exc.field_path and exc.field_path[0] != "input":
                exc.field_path = ["input", *exc.field_path]
            return {"giftCard": None, "giftCardCode": None, "userErrors": [exc.as_user_error()]}
        return {"giftCard": GiftCardView(shop, card), "giftCardCode": card.code, "userErrors": []}

    def _move(
        self, kind: Literal["credit", "debit"], card_id: str, move: dict[str, Any]
    ) -> dict[str, Any]:
        payload_key = (
            "giftCardCreditTransaction" if kind == "credit" else "giftCardDebitTransaction"
        )
        amount_input = move["creditAmount" if kind == "credit" else "debitAmount"]
        try:
            amount = to_decimal(amount_input["amount"])
            if amount is None:
                raise ShopError("INVALID", "Amount is invalid", [f"{kind}Input", "amount"])
            processed_at = None
            if move.get("processedAt") is not None:
                processed_at = parse_datetime(move["processedAt"])
                if processed_at is None:
                    raise ShopError("INVALID", "Processed at is invalid", [f"{kind}Input"])
            txn = self._shop.move(
                card_id,
                kind,
                amount,
                amount_input["currencyCode"],
                note=move.get("note"),
                processed_at=processed_at,
            )
        except ShopError as exc:
            return {payload_key: None, "userErrors": [exc.as_user_error()]}
        return {payload_key: GiftCardTransactionView(self._shop, txn), "userErrors": []}

    def giftCardCredit(self, _info: Info, id: str, creditInput: dict[str, Any]) -> dict[str, Any]:
        return self._move("credit", id, creditInput)

    def giftCardDebit(self, _info: Info, id: str, debitInput: dict[str, Any]) -> dict[str, Any]:
        return self._move("debit", id, debitInput)

    def giftCardDeactivate(self, _info: Info, id: str) -> dict[str, Any]:
        try:
            card = self._shop.deactivate(id)
        except ShopError as exc:
            return {"giftCard": None, "userErrors": [exc.as_user_error()]}
        return {"giftCard": GiftCardView(self._shop, card), "userErrors": []}

    def giftCardUpdate(self, _info: Info, id: str, input: dict[str, Any]) -> dict[str, Any]:
        try:
            card = self._shop.update_card(id, input)
        except ShopError as exc:
            # giftCardUpdate answers the plain UserError type, which has no code.
            return {"giftCard": None, "userErrors": [exc.as_user_error()]}
        return {"giftCard": GiftCardView(self._shop, card), "userErrors": []}

    def giftCardSendNotificationToCustomer(self, _info: Info, id: str) -> dict[str, Any]:
        try:
            card = self._shop.notify(id)
        except ShopError as exc:
            return {"giftCard": None, "userErrors": [exc.as_user_error()]}
        return {"giftCard": GiftCardView(self._shop, card), "userErrors": []}

    def customerCreate(self, _info: Info, input: dict[str, Any]) -> dict[str, Any]:
        try:
            customer = self._shop.create_customer(
                email=input.get("email"),
                phone=input.get("phone"),
                first_name=input.get("firstName"),
                last_name=input.get("lastName"),
            )
        except ShopError as exc:
            return {"customer": None, "userErrors": [exc.as_user_error()]}
        return {"customer": CustomerView(self._shop, customer), "userErrors": []}

    def webhookSubscriptionCreate(
        self, _info: Info, topic: str, webhookSubscription: dict[str, Any]
    ) -> dict[str, Any]:
        # `callbackUrl` is deprecated for `uri`; both are still read.
        callback_url = webhookSubscription.get("uri") or webhookSubscription.get("callbackUrl")
        if not callback_url:
            return {
                "webhookSubscription": None,
                "userErrors": [
                    user_error(
                        ["webhookSubscription", "callbackUrl"], "Address can't be blank", None
                    )
                ],
            }
        duplicate = any(
            s.topic == topic and s.callback_url == callback_url
            for s in self._shop.webhook_subscriptions.values()
        )
        if duplicate:
            return {
                "webhookSubscription": None,
                "userErrors": [
                    user_error(
                        ["webhookSubscription", "callbackUrl"],
                        "Address for this topic has already been taken",
                        None,
                    )
                ],
            }
        sub = WebhookSubscriptionState(
            self._shop.new_id(),
            topic,
            callback_url,
            webhookSubscription.get("format") or "JSON",
            self._shop.now(),
            self._version,
        )
        self._shop.webhook_subscriptions[sub.id] = sub
        return {"webhookSubscription": WebhookSubscriptionView(sub), "userErrors": []}

    def webhookSubscriptionDelete(self, _info: Info, id: str) -> dict[str, Any]:
        number = parse_gid(id, "WebhookSubscription")
        if number is None or number not in self._shop.webhook_subscriptions:
            return {
                "deletedWebhookSubscriptionId": None,
                "userErrors": [user_error(["id"], "Webhook subscription does not exist", None)],
            }
        del self._shop.webhook_subscriptions[number]
        return {
            "deletedWebhookSubscriptionId": gid("WebhookSubscription", number),
            "userErrors": [],
        }

    def bulkOperationRunQuery(
        self, _info: Info, query: str, groupObjects: bool = False
    ) -> dict[str, Any]:
        try:
            op = self._start_bulk(query)
        except ShopError as exc:
            return {"bulkOperation": None, "userErrors": [exc.as_user_error()]}
        return {"bulkOperation": BulkOperationView(op), "userErrors": []}


def _initial_amount(shop: ShopState, card_input: dict[str, Any]) -> Decimal:
    """`initialAmount` (MoneyInput, 2026-07 on) or the deprecated `initialValue`; one is needed.

    Shopify's pages do not say what a currency other than the shop's gets, nor what both or
    neither given get: here INVALID, and MISSING_ARGUMENT (GiftCardErrorCode).
    """
    amount_input = card_input.get("initialAmount")
    if amount_input is not None:
        field_path = ["input", "initialAmount"]
        if card_input.get("initialValue") is not None:
            raise ShopError("INVALID", "Give initialAmount or initialValue, not both", field_path)
        if amount_input["currencyCode"] != shop.currency:
            raise ShopError(
                "INVALID",
                f"Currency must be the shop's currency ({shop.currency})",
                [*field_path, "currencyCode"],
            )
        raw = amount_input["amount"]
    elif card_input.get("initialValue") is not None:
        field_path = ["input", "initialValue"]
        raw = card_input["initialValue"]
    else:
        raise ShopError(
            "MISSING_ARGUMENT", "Initial amount is required", ["input", "initialAmount"]
        )
    initial_value = to_decimal(raw)
    if initial_value is None:
        raise ShopError("INVALID", "Initial value is invalid", field_path)
    return initial_value
