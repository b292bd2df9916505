"""Wire tests for the Shopify GraphQL Admin client, against a respx fake of the endpoint."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import graphql
import httpx
import pytest
import respx
import structlog

from app.clients.errors import UnknownOutcome, UpstreamRejected
from app.clients.shopify import (
    CreatedGiftCard,
    ShopifyClient,
    ShopifyCodeTaken,
    ShopifyInsufficientFunds,
    ShopifyInvalidInput,
    ShopifyNotFound,
    ShopifyUnavailable,
    ShopifyUnknownOutcome,
    ShopifyUserError,
    idempotency_key_from_note,
)
from app.clients.shopify.queries import ALL_OPERATIONS, BULK_GIFT_CARDS_QUERY
from app.clients.throttle import CostBucket
from tests.clients.test_shopify_schema import request_problems

BASE = "https://demo-shop.myshopify.com"
VERSION = "2026-07"
URL = f"{BASE}/admin/api/{VERSION}/graphql.json"
TOKEN = "shpat_0123456789abcdef0123456789abcdef"
CODE = "k7q2m9x4p8w3z6tb"
T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def money(amount: str, currency: str = "AUD") -> dict[str, str]:
    return {"amount": amount, "currencyCode": currency}


def card_node(number: int, **overrides: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": f"gid://shopify/GiftCard/{number}",
        "lastCharacters": f"{number:04d}"[-4:],
        "balance": money("50.0"),
        "initialValue": money("50.0"),
        "enabled": True,
        "expiresOn": None,
        "deactivatedAt": None,
        "createdAt": iso(T0 - timedelta(days=30)),
        "updatedAt": iso(T0),
        "note": None,
        "customer": None,
        "order": None,
    }
    node.update(overrides)
    return node


@dataclass
class Sent:
    operation: str
    query: str
    variables: dict[str, Any]
    headers: httpx.Headers


class Lost(Exception):
    """Raised by a handler: apply the change, then lose the answer (read timeout)."""


@dataclass
class FakeShopify:
    """The GraphQL endpoint: per-operation handlers, a cost bucket, scripted faults."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    maximum: float = 1000.0
    restore_rate: float = 50.0
    costs: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    enforce_bucket: bool = False
    # Per operation, what the next calls answer before the handler runs: an int HTTP status,
    # "lost" (never applied, answer lost), "throttled".
    faults: dict[str, list[Any]] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    throttled: int = 0
    router: respx.MockRouter = field(default_factory=respx.MockRouter)

    def __post_init__(self) -> None:
        self.available = self.maximum
        self.updated = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self.available = min(
            self.maximum, self.available + (now - self.updated) * self.restore_rate
        )
        self.updated = now

    def _cost(self, operation: str) -> float:
        return self.costs.get(operation, 10.0)

    def _extensions(self, requested: float, actual: float | None) -> dict[str, Any]:
        return {
            "cost": {
                "requestedQueryCost": requested,
                "actualQueryCost": actual,
                "throttleStatus": {
                    "maximumAvailable": self.maximum,
                    "currentlyAvailable": self.available,
                    "restoreRate": self.restore_rate,
                },
            }
        }

    def throttled_answer(self, operation: str) -> httpx.Response:
        self.throttled += 1
        body = {
            "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": self._extensions(self._cost(operation), None),
        }
        return httpx.Response(200, json=body)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        payload = json.loads(request.content)
        operation = payload["operationName"]
        self.sent.append(Sent(operation, payload["query"], payload["variables"], request.headers))
        queued = self.faults.get(operation) or []
        fault = queued.pop(0) if queued else None
        if isinstance(fault, int):
            return httpx.Response(fault, text="upstream trouble")
        if fault == "lost":
            raise httpx.ReadTimeout("lost", request=request)
        self._refill()
        requested = self._cost(operation)
        # Shopify counts whole points; the tolerance keeps float rounding from faking a refusal.
        if fault == "throttled" or (self.enforce_bucket and requested > self.available + 1e-6):
            return self.throttled_answer(operation)
        self.available -= requested
        try:
            data = self.handlers[operation](payload["variables"])
        except Lost:
            raise httpx.ReadTimeout("applied, answer lost", request=request) from None
        actual = max(1.0, requested - 2)
        self.available += requested - actual
        return httpx.Response(
            200, json={"data": data, "extensions": self._extensions(requested, actual)}
        )

    def of(self, operation: str) -> list[Sent]:
        return [s for s in self.sent if s.operation == operation]


@dataclass
class CardStore:
    """Just enough gift card state for write recovery tests."""

    cards: dict[str, dict[str, Any]] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)
    transactions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lose_next_answer: set[str] = field(default_factory=set)

    def add(self, number: int, code: str, balance: str = "50.0") -> str:
        node = card_node(number, balance=money(balance), initialValue=money(balance))
        node["lastCharacters"] = code[-4:]
        self.cards[node["id"]] = node
        self.codes[code] = node["id"]
        self.transactions[node["id"]] = []
        return str(node["id"])

    def _maybe_lose(self, operation: str) -> None:
        if operation in self.lose_next_answer:
            self.lose_next_answer.discard(operation)
            raise Lost

    def create(self, variables: dict[str, Any]) -> dict[str, Any]:
        card_input = variables["input"]
        code = card_input["code"]
        if code in self.codes:
            error = {
                "field": ["input", "code"],
                "message": "Code has already been taken",
                "code": "TAKEN",
            }
            return {
                "giftCardCreate": {"giftCard": None, "giftCardCode": None, "userErrors": [error]}
            }
        card_id = self.add(len(self.cards) + 100, code, card_input["initialAmount"]["amount"])
        self._maybe_lose("GiftCardCreate")
        return {
            "giftCardCreate": {
                "giftCard": self.cards[card_id],
                "giftCardCode": code,
                "userErrors": [],
            }
        }

    def search(self, variables: dict[str, Any]) -> dict[str, Any]:
        term = (variables.get("query") or "").strip('"')
        nodes = [self.cards[cid] for code, cid in self.codes.items() if code == term]
        return {
            "giftCards": {"nodes": nodes, "pageInfo": {"hasNextPage": False, "endCursor": None}}
        }

    def move(self, kind: str) -> Handler:
        def handle(variables: dict[str, Any]) -> dict[str, Any]:
            card = self.cards[variables["id"]]
            given = variables[f"{kind}Input"]
            amount = Decimal(given[f"{kind}Amount"]["amount"])
            balance = Decimal(card["balance"]["amount"]) + (amount if kind == "credit" else -amount)
            card["balance"] = money(str(balance))
            typename = f"GiftCard{kind.capitalize()}Transaction"
            txn = {
                "__typename": typename,
                "id": f"gid://shopify/{typename}/{len(self.transactions[card['id']]) + 1}",
                "note": given.get("note"),
                "processedAt": iso(T0),
                "amount": money(str(amount if kind == "credit" else -amount)),
            }
            self.transactions[card["id"]].insert(0, txn)
            self._maybe_lose(f"GiftCard{kind.capitalize()}")
            answer_txn = {**txn, "giftCard": {"id": card["id"], "balance": card["balance"]}}
            answer_txn.pop("__typename")
            answer_txn.pop("processedAt")
            return {
                f"giftCard{kind.capitalize()}": {
                    f"giftCard{kind.capitalize()}Transaction": answer_txn,
                    "userErrors": [],
                }
            }

        return handle

    def list_transactions(self, variables: dict[str, Any]) -> dict[str, Any]:
        card = self.cards[variables["id"]]
        connection = {
            "nodes": self.transactions[card["id"]],
            "pageInfo": {"hasNextPage": False, "endCursor": None},
        }
        return {
            "giftCard": {"id": card["id"], "balance": card["balance"], "transactions": connection}
        }

    def install(self, fake: FakeShopify) -> None:
        fake.handlers.update(
            {
                "GiftCardCreate": self.create,
                "GiftCardsSearch": self.search,
                "GiftCardCredit": self.move("credit"),
                "GiftCardDebit": self.move("debit"),
                "GiftCardTransactions": self.list_transactions,
            }
        )


@pytest.fixture
def fake() -> Iterator[FakeShopify]:
    shop = FakeShopify()
    with respx.mock(assert_all_called=False) as router:
        router.post(URL, name="graphql").mock(side_effect=shop)
        shop.router = router
        yield shop
    # Whatever a test did, the client sent only registered documents with well-typed variables,
    # valid in 2026-07 and 2026-10 and using nothing deprecated.
    for sent in shop.sent:
        assert ALL_OPERATIONS.get(sent.operation) == sent.query, sent.operation
        assert request_problems(sent.query, sent.variables) == [], sent.operation
        if sent.operation == "BulkOperationRunQuery":
            assert sent.variables["query"] in ALL_OPERATIONS.values()


@pytest.fixture
async def client() -> AsyncIterator[ShopifyClient]:
    shopify = ShopifyClient(BASE, TOKEN, VERSION, timeout=2.0, retry_backoff=0)
    yield shopify
    await shopify.aclose()


@pytest.fixture
def store(fake: FakeShopify) -> CardStore:
    cards = CardStore()
    cards.install(fake)
    return cards


# --- wire basics ------------------------------------------------------------------------


async def test_posts_to_the_versioned_endpoint_with_the_token_header(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    fake.handlers["GiftCardGet"] = lambda v: {"giftCard": card_node(7)}
    card = await client.get_gift_card("7")
    assert card is not None and card.id == "gid://shopify/GiftCard/7"
    [sent] = fake.sent
    assert sent.headers["X-Shopify-Access-Token"] == TOKEN
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.variables == {"id": "gid://shopify/GiftCard/7"}
    assert fake.router.calls.last.request.url == URL


async def test_gift_card_fields_are_parsed(fake: FakeShopify, client: ShopifyClient) -> None:
    node = card_node(
        8,
        balance=money("12.5"),
        initialValue=money("100.00"),
        enabled=False,
        expiresOn="2027-03-01",
        deactivatedAt=iso(T0),
        note="from the shop",
        customer={"id": "gid://shopify/Customer/5"},
        order={"id": "gid://shopify/Order/9"},
    )
    fake.handlers["GiftCardGet"] = lambda v: {"giftCard": node}
    card = await client.get_gift_card("gid://shopify/GiftCard/8")
    assert card is not None
    assert (card.balance, card.initial_value, card.currency) == (
        Decimal("12.5"),
        Decimal("100.00"),
        "AUD",
    )
    assert card.enabled is False
    assert card.expires_on == date(2027, 3, 1)
    assert card.deactivated_at == T0
    assert card.updated_at == T0
    assert (card.customer_id, card.order_id) == (
        "gid://shopify/Customer/5",
        "gid://shopify/Order/9",
    )
    fake.handlers["GiftCardGet"] = lambda v: {"giftCard": None}
    assert await client.get_gift_card("gid://shopify/GiftCard/404") is None


# --- writes -----------------------------------------------------------------------------


async def test_create_gift_card_sends_input_and_returns_code_once(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    answer = {
        "giftCard": card_node(11, lastCharacters="p8w3"),
        "giftCardCode": CODE,
        "userErrors": [],
    }
    fake.handlers["GiftCardCreate"] = lambda v: {"giftCardCreate": answer}
    created = await client.create_gift_card(
        Decimal("25.00"),
        code=CODE,
        note="vii shadow",
        customer_id="gid://shopify/Customer/5",
        expires_on=date(2027, 1, 1),
    )
    assert fake.of("GiftCardCreate")[0].variables == {
        "input": {
            "initialAmount": {"amount": "25.00", "currencyCode": "AUD"},
            "code": CODE,
            "note": "vii shadow",
            "customerId": "gid://shopify/Customer/5",
            "expiresOn": "2027-01-01",
        }
    }
    assert isinstance(created, CreatedGiftCard)
    assert created.code == CODE and created.card.last_characters == "p8w3"
    assert CODE not in repr(created)


async def test_create_without_options_sends_only_the_value(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    answer = {"giftCard": card_node(12), "giftCardCode": "abcd1234efgh5678", "userErrors": []}
    fake.handlers["GiftCardCreate"] = lambda v: {"giftCardCreate": answer}
    created = await client.create_gift_card(Decimal("5"))
    assert fake.sent[0].variables == {
        "input": {"initialAmount": {"amount": "5", "currencyCode": "AUD"}}
    }
    assert created.code == "abcd1234efgh5678"


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        ("TAKEN", ShopifyCodeTaken),
        ("TOO_SHORT", ShopifyInvalidInput),
        ("CUSTOMER_NOT_FOUND", ShopifyNotFound),
        ("GIFT_CARD_LIMIT_EXCEEDED", ShopifyUserError),
    ],
)
async def test_create_user_errors_become_typed_errors(
    fake: FakeShopify, client: ShopifyClient, code: str, error_type: type[ShopifyUserError]
) -> None:
    # Shopify may echo the code in its message; the error must not carry it.
    error = {"field": ["input", "code"], "message": f"Code {CODE} is not allowed", "code": code}
    fake.handlers["GiftCardCreate"] = lambda v: {
        "giftCardCreate": {"giftCard": None, "giftCardCode": None, "userErrors": [error]}
    }
    with pytest.raises(error_type) as caught:
        await client.create_gift_card(Decimal("10.00"), code=CODE)
    assert type(caught.value) is error_type
    assert isinstance(caught.value, UpstreamRejected)
    assert caught.value.code == code and caught.value.field == "input.code"
    assert CODE not in str(caught.value)
    assert "6tb" in str(caught.value)  # the last characters are fine to show
    assert len(fake.of("GiftCardCreate")) == 1


async def test_credit_tags_the_note_and_returns_the_move(
    fake: FakeShopify, client: ShopifyClient, store: CardStore
) -> None:
    card_id = store.add(1, CODE, "20.00")
    move = await client.credit_gift_card(
        card_id, Decimal("7.50"), "AUD", idempotency_key="order:1:refund", note="refund #1001"
    )
    [sent] = fake.of("GiftCardCredit")
    assert sent.variables == {
        "id": card_id,
        "creditInput": {
            "creditAmount": {"amount": "7.50", "currencyCode": "AUD"},
            "note": "refund #1001 [giftsync:order:1:refund]",
        },
    }
    assert move.amount == Decimal("7.50")
    assert move.balance_after == Decimal("27.50")
    assert move.transaction_id == "gid://shopify/GiftCardCreditTransaction/1"
    assert idempotency_key_from_note(sent.variables["creditInput"]["note"]) == "order:1:refund"


async def test_debit_sends_debit_input_and_returns_a_positive_amount(
    fake: FakeShopify, client: ShopifyClient, store: CardStore
) -> None:
    card_id = store.add(1, CODE, "20.00")
    move = await client.debit_gift_card(card_id, Decimal("5.00"), "AUD", idempotency_key="k1")
    assert fake.of("GiftCardDebit")[0].variables["debitInput"] == {
        "debitAmount": {"amount": "5.00", "currencyCode": "AUD"},
        "note": "[giftsync:k1]",
    }
    assert (move.amount, move.balance_after) == (Decimal("5.00"), Decimal("15.00"))


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        ("INSUFFICIENT_FUNDS", ShopifyInsufficientFunds),
        ("GIFT_CARD_NOT_FOUND", ShopifyNotFound),
        ("MISMATCHING_CURRENCY", ShopifyInvalidInput),
    ],
)
async def test_debit_user_errors(
    fake: FakeShopify, client: ShopifyClient, code: str, error_type: type[ShopifyUserError]
) -> None:
    error = {"field": ["debitInput", "debitAmount"], "message": "no", "code": code}
    fake.handlers["GiftCardDebit"] = lambda v: {
        "giftCardDebit": {"giftCardDebitTransaction": None, "userErrors": [error]}
    }
    with pytest.raises(error_type) as caught:
        await client.debit_gift_card(
            "gid://shopify/GiftCard/1", Decimal("900"), "AUD", idempotency_key="k"
        )
    assert caught.value.code == code
    assert len(fake.sent) == 1


async def test_deactivate_update_and_notify(fake: FakeShopify, client: ShopifyClient) -> None:
    card_id = "gid://shopify/GiftCard/3"
    fake.handlers["GiftCardDeactivate"] = lambda v: {
        "giftCardDeactivate": {
            "giftCard": card_node(3, enabled=False, deactivatedAt=iso(T0)),
            "userErrors": [],
        }
    }
    fake.handlers["GiftCardUpdate"] = lambda v: {
        "giftCardUpdate": {"giftCard": card_node(3, note=v["input"].get("note")), "userErrors": []}
    }
    fake.handlers["GiftCardSendNotification"] = lambda v: {
        "giftCardSendNotificationToCustomer": {"giftCard": {"id": v["id"]}, "userErrors": []}
    }
    deactivated = await client.deactivate_gift_card(card_id)
    assert deactivated.enabled is False and deactivated.deactivated_at == T0
    updated = await client.update_gift_card(
        card_id, note="hello", customer_id="gid://shopify/Customer/2", expires_on=date(2028, 2, 29)
    )
    assert updated.note == "hello"
    assert fake.of("GiftCardUpdate")[0].variables == {
        "id": card_id,
        "input": {
            "note": "hello",
            "customerId": "gid://shopify/Customer/2",
            "expiresOn": "2028-02-29",
        },
    }
    await client.send_gift_card_notification(card_id)
    assert fake.of("GiftCardSendNotification")[0].variables == {"id": card_id}
    assert fake.of("GiftCardDeactivate")[0].variables == {"id": card_id}
    with pytest.raises(ValueError):
        await client.update_gift_card(card_id)


async def test_notification_and_update_errors(fake: FakeShopify, client: ShopifyClient) -> None:
    error = {"field": ["id"], "message": "Customer has no email or phone", "code": "INVALID"}
    fake.handlers["GiftCardSendNotification"] = lambda v: {
        "giftCardSendNotificationToCustomer": {"giftCard": None, "userErrors": [error]}
    }
    with pytest.raises(ShopifyInvalidInput):
        await client.send_gift_card_notification("gid://shopify/GiftCard/3")
    fake.handlers["GiftCardUpdate"] = lambda v: {
        "giftCardUpdate": {
            "giftCard": None,
            "userErrors": [{"field": ["id"], "message": "Gift card does not exist"}],
        }
    }
    with pytest.raises(ShopifyUserError) as caught:
        await client.update_gift_card("gid://shopify/GiftCard/3", note="x")
    assert caught.value.code == "USER_ERROR"


async def test_graphql_errors_without_data_are_rejections(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    def denied(_request: httpx.Request) -> httpx.Response:
        body = {
            "errors": [
                {"message": "Access denied for giftCards", "extensions": {"code": "ACCESS_DENIED"}}
            ]
        }
        return httpx.Response(200, json=body)

    fake.router["graphql"].mock(side_effect=denied)
    with pytest.raises(ShopifyUserError) as caught:
        await client.get_gift_card("1")
    assert caught.value.code == "ACCESS_DENIED"
    fake.router["graphql"].mock(
        return_value=httpx.Response(401, text="[API] Invalid API key or access token")
    )
    with pytest.raises(ShopifyUserError) as unauthorized:
        await client.get_gift_card("1")
    assert unauthorized.value.code == "UNAUTHORIZED"
    assert TOKEN not in str(unauthorized.value)


# --- retries and lost answers -----------------------------------------------------------


async def test_reads_are_retried_after_5xx_and_timeouts(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    fake.handlers["GiftCardGet"] = lambda v: {"giftCard": card_node(4)}
    fake.faults["GiftCardGet"] = [502, "lost", 503]
    card = await client.get_gift_card("4")
    assert card is not None
    assert len(fake.of("GiftCardGet")) == 4


async def test_reads_give_up_as_unavailable(fake: FakeShopify, client: ShopifyClient) -> None:
    fake.handlers["GiftCardGet"] = lambda v: {"giftCard": card_node(4)}
    fake.faults["GiftCardGet"] = [503] * 10
    with pytest.raises(ShopifyUnavailable):
        await client.get_gift_card("4")
    assert len(fake.of("GiftCardGet")) == 4


async def test_connect_errors_are_retried_even_for_mutations(
    fake: FakeShopify, client: ShopifyClient, store: CardStore
) -> None:
    card_id = store.add(1, CODE, "20.00")
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("refused", request=request)
        return fake(request)

    fake.router["graphql"].mock(side_effect=flaky)
    move = await client.credit_gift_card(card_id, Decimal("1.00"), "AUD", idempotency_key="c")
    assert move.balance_after == Decimal("21.00")
    assert len(fake.of("GiftCardCredit")) == 1
    assert fake.of("GiftCardTransactions") == []


async def test_lost_credit_that_was_applied_is_found_not_resent(
    fake: FakeShopify, client: ShopifyClient, store: CardStore
) -> None:
    card_id = store.add(1, CODE, "20.00")
    store.lose_next_answer.add("GiftCardCredit")
    move = await client.credit_gift_card(card_id, Decimal("5.00"), "AUD", idempotency_key="job:42")
    assert len(fake.of("GiftCardCredit")) == 1
    assert len(fake.of("GiftCardTransactions")) == 1
    assert move.transaction_id == "gid://shopify/GiftCardCreditTransaction/1"
    assert move.amount == Decimal("5.00") and move.balance_after is None
    assert store.cards[card_id]["balance"]["amount"] == "25.00"


@pytest.mark.parametrize("fault", ["lost", 502])
async def test_a_lost_move_not_found_is_never_sent_again(
    fake: FakeShopify, client: ShopifyClient, store: CardStore, fault: Any
) -> None:
    """Shopify's moves have no server-side idempotency and a timed-out one may still land: not
    found yet proves nothing, so the caller settles it later (shadow cards: card_moves)."""
    card_id = store.add(1, CODE, "20.00")
    fake.faults["GiftCardDebit"] = [fault]
    with pytest.raises(ShopifyUnknownOutcome) as caught:
        await client.debit_gift_card(card_id, Decimal("5.00"), "AUD", idempotency_key="job:43")
    assert "job:43" in caught.value.reference
    assert len(fake.of("GiftCardDebit")) == 1
    assert len(fake.of("GiftCardTransactions")) == 1
    assert store.cards[card_id]["balance"]["amount"] == "20.00"


@pytest.mark.parametrize("status", [429, 503])
async def test_a_move_refused_as_busy_was_not_sent_and_is_sent_again_without_a_look_up(
    fake: FakeShopify, client: ShopifyClient, store: CardStore, status: int
) -> None:
    card_id = store.add(1, CODE, "20.00")
    fake.faults["GiftCardDebit"] = [status]
    move = await client.debit_gift_card(card_id, Decimal("5.00"), "AUD", idempotency_key="b")
    assert len(fake.of("GiftCardDebit")) == 2
    assert fake.of("GiftCardTransactions") == []
    assert move.balance_after == Decimal("15.00")


async def test_an_unreadable_move_answer_not_found_is_an_unknown_outcome(
    fake: FakeShopify, client: ShopifyClient, store: CardStore
) -> None:
    card_id = store.add(1, CODE, "20.00")
    # Not applied, and an answer that says nothing readable.
    fake.handlers["GiftCardCredit"] = lambda variables: {
        "giftCardCredit": {"giftCardCreditTransaction": {"id": None}}
    }
    with pytest.raises(ShopifyUnknownOutcome):
        await client.credit_gift_card(card_id, Decimal("5.00"), "AUD", idempotency_key="u")
    assert len(fake.of("GiftCardCredit")) == 1
    assert len(fake.of("GiftCardTransactions")) == 1


async def test_an_unreadable_move_answer_that_was_applied_is_found_not_resent(
    fake: FakeShopify, client: ShopifyClient, store: CardStore
) -> None:
    card_id = store.add(1, CODE, "20.00")
    applied = store.move("debit")

    def applied_unreadable(variables: dict[str, Any]) -> dict[str, Any]:
        applied(variables)
        return {"giftCardDebit": {"giftCardDebitTransaction": None, "userErrors": []}}

    fake.handlers["GiftCardDebit"] = applied_unreadable
    move = await client.debit_gift_card(card_id, Decimal("5.00"), "AUD", idempotency_key="a")
    assert len(fake.of("GiftCardDebit")) == 1
    assert move.amount == Decimal("5.00") and move.balance_after is None
    assert store.cards[card_id]["balance"]["amount"] == "15.00"


async def test_a_lost_customer_create_whose_look_up_fails_is_an_unknown_outcome(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    fake.handlers["CustomersByEmail"] = lambda v: {"customers": {"nodes": []}}
    fake.faults["CustomerCreate"] = ["lost"]
    fake.faults["CustomersByEmail"] = [None, 502, 502, 502, 502]
    with pytest.raises(ShopifyUnknownOutcome):
        await client.find_or_create_customer("ada@example.com")
    assert len(fake.of("CustomerCreate")) == 1


async def test_a_lost_move_is_an_unknown_outcome_naming_its_key(
    fake: FakeShopify, client: ShopifyClient, store: CardStore
) -> None:
    card_id = store.add(1, CODE, "20.00")
    fake.faults["GiftCardDebit"] = ["lost", "lost"]
    with pytest.raises(ShopifyUnknownOutcome) as caught:
        await client.debit_gift_card(card_id, Decimal("5.00"), "AUD", idempotency_key="job:44")
    assert isinstance(caught.value, UnknownOutcome)
    assert "job:44" in caught.value.reference
    assert len(fake.of("GiftCardDebit")) == 1
    assert len(fake.of("GiftCardTransactions")) == 1
    assert store.cards[card_id]["balance"]["amount"] == "20.00"


async def test_lost_create_with_a_code_is_looked_up_by_code(
    fake: FakeShopify, client: ShopifyClient, store: CardStore
) -> None:
    store.lose_next_answer.add("GiftCardCreate")
    created = await client.create_gift_card(Decimal("30.00"), code=CODE)
    assert len(fake.of("GiftCardCreate")) == 1
    assert fake.of("GiftCardsSearch")[0].variables["query"] == f'"{CODE}"'
    assert created.code == CODE and created.card.initial_value == Decimal("30.00")
    assert len(store.cards) == 1


async def test_lost_create_not_applied_is_sent_once_more(
    fake: FakeShopify, client: ShopifyClient, store: CardStore
) -> None:
    fake.faults["GiftCardCreate"] = ["lost"]
    created = await client.create_gift_card(Decimal("30.00"), code=CODE)
    assert len(fake.of("GiftCardCreate")) == 2
    assert created.code == CODE and len(store.cards) == 1


async def test_lost_create_whose_code_belongs_to_another_card_is_taken(
    fake: FakeShopify, client: ShopifyClient, store: CardStore
) -> None:
    store.add(1, CODE, "99.00")
    fake.faults["GiftCardCreate"] = ["lost"]
    with pytest.raises(ShopifyCodeTaken):
        await client.create_gift_card(Decimal("30.00"), code=CODE)
    assert len(fake.of("GiftCardCreate")) == 1


async def test_lost_create_without_a_code_is_an_unknown_outcome(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    fake.faults["GiftCardCreate"] = ["lost"]
    with pytest.raises(ShopifyUnknownOutcome):
        await client.create_gift_card(Decimal("30.00"))
    assert len(fake.of("GiftCardCreate")) == 1


async def test_idempotent_mutations_are_retried(fake: FakeShopify, client: ShopifyClient) -> None:
    fake.handlers["GiftCardDeactivate"] = lambda v: {
        "giftCardDeactivate": {"giftCard": card_node(3, enabled=False), "userErrors": []}
    }
    fake.faults["GiftCardDeactivate"] = ["lost", 503]
    card = await client.deactivate_gift_card("gid://shopify/GiftCard/3")
    assert card.enabled is False
    assert len(fake.of("GiftCardDeactivate")) == 3


async def test_a_hung_answer_times_out_as_lost(fake: FakeShopify, store: CardStore) -> None:
    card_id = store.add(1, CODE, "20.00")
    release = asyncio.Event()
    calls = {"n": 0}

    async def hang_once(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            answer = fake(request)  # applied ...
            await release.wait()  # ... and never answered
            return answer
        return fake(request)

    fake.router["graphql"].mock(side_effect=hang_once)
    shopify = ShopifyClient(BASE, TOKEN, VERSION, timeout=0.2, retry_backoff=0)
    try:
        move = await shopify.credit_gift_card(card_id, Decimal("1.00"), "AUD", idempotency_key="h")
    finally:
        release.set()
        await shopify.aclose()
    assert move.balance_after is None
    assert len(fake.of("GiftCardCredit")) == 1
    assert store.cards[card_id]["balance"]["amount"] == "21.00"


# --- searching and paging ---------------------------------------------------------------


def paged(pages: list[list[dict[str, Any]]]) -> Handler:
    def handle(variables: dict[str, Any]) -> dict[str, Any]:
        index = 0 if variables.get("after") is None else int(variables["after"].removeprefix("c"))
        has_next = index + 1 < len(pages)
        page_info = {"hasNextPage": has_next, "endCursor": f"c{index + 1}" if has_next else None}
        return {"giftCards": {"nodes": pages[index], "pageInfo": page_info}}

    return handle


async def test_last_characters_search_follows_cursors(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    pages = [
        [card_node(1, lastCharacters="ab12"), card_node(2, lastCharacters="zz12")],
        [card_node(3, lastCharacters="AB12")],
        [card_node(4, lastCharacters="ab12")],
    ]
    fake.handlers["GiftCardsSearch"] = paged(pages)
    found = await client.find_gift_cards_by_last_characters("ab12")
    assert [c.id for c in found] == [
        "gid://shopify/GiftCard/1",
        "gid://shopify/GiftCard/3",
        "gid://shopify/GiftCard/4",
    ]
    afters = [s.variables["after"] for s in fake.of("GiftCardsSearch")]
    assert afters == [None, "c1", "c2"]
    assert all(s.variables["first"] == 50 for s in fake.of("GiftCardsSearch"))


async def test_find_by_code_checks_the_last_characters(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    fake.handlers["GiftCardsSearch"] = paged([[card_node(1, lastCharacters="0000")]])
    assert await client.find_gift_card_by_code(CODE) is None
    fake.handlers["GiftCardsSearch"] = paged([[card_node(1, lastCharacters="z6tb")]])
    found = await client.find_gift_card_by_code(CODE)
    assert found is not None and found.id == "gid://shopify/GiftCard/1"


async def test_updated_since_sorts_newest_first_and_stops_at_the_cursor(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    pages = [
        [card_node(1, updatedAt=iso(T0)), card_node(2, updatedAt=iso(T0 - timedelta(minutes=1)))],
        [
            card_node(3, updatedAt=iso(T0 - timedelta(minutes=2))),
            card_node(4, updatedAt=iso(T0 - timedelta(minutes=10))),
            card_node(5, updatedAt=iso(T0 - timedelta(minutes=11))),
        ],
        [card_node(6, updatedAt=iso(T0 - timedelta(minutes=20)))],
    ]
    fake.handlers["GiftCardsSearch"] = paged(pages)
    since = T0 - timedelta(minutes=10)
    cards = [c async for c in client.iter_gift_cards_updated_since(since, query="status:enabled")]
    assert [c.id[-1] for c in cards] == ["1", "2", "3", "4"]
    searches = fake.of("GiftCardsSearch")
    assert len(searches) == 2
    assert searches[0].variables == {
        "first": 50,
        "after": None,
        "query": "status:enabled",
        "sortKey": "UPDATED_AT",
        "reverse": True,
    }
    assert searches[1].variables["after"] == "c1"


# --- customers, orders, webhooks --------------------------------------------------------


async def test_find_or_create_customer(fake: FakeShopify, client: ShopifyClient) -> None:
    customers: list[dict[str, Any]] = [
        {
            "id": "gid://shopify/Customer/1",
            "defaultEmailAddress": {"emailAddress": "other@example.com"},
        },
        {"id": "gid://shopify/Customer/3", "defaultEmailAddress": None},
    ]
    fake.handlers["CustomersByEmail"] = lambda v: {"customers": {"nodes": list(customers)}}

    def create(variables: dict[str, Any]) -> dict[str, Any]:
        email = variables["input"]["email"]
        node = {"id": "gid://shopify/Customer/2", "defaultEmailAddress": {"emailAddress": email}}
        customers.append(node)
        return {"customerCreate": {"customer": {"id": node["id"]}, "userErrors": []}}

    fake.handlers["CustomerCreate"] = create
    assert await client.find_customer_by_email("Ann@Example.com") is None
    assert fake.sent[0].variables == {"first": 5, "query": 'email:"ann@example.com"'}
    customer_id = await client.find_or_create_customer(
        "ann@example.com", first_name="Ann", last_name="Lee"
    )
    assert customer_id == "gid://shopify/Customer/2"
    assert fake.of("CustomerCreate")[0].variables == {
        "input": {"email": "ann@example.com", "firstName": "Ann", "lastName": "Lee"}
    }
    assert await client.find_or_create_customer("ANN@example.com") == customer_id
    assert len(fake.of("CustomerCreate")) == 1


async def test_customer_created_meanwhile_is_found_after_taken(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    customers: list[dict[str, Any]] = []
    fake.handlers["CustomersByEmail"] = lambda v: {"customers": {"nodes": list(customers)}}

    def taken(_variables: dict[str, Any]) -> dict[str, Any]:
        address = {"emailAddress": "bo@example.com"}
        customers.append({"id": "gid://shopify/Customer/9", "defaultEmailAddress": address})
        error = {"field": ["email"], "message": "Email has already been taken"}
        return {"customerCreate": {"customer": None, "userErrors": [error]}}

    fake.handlers["CustomerCreate"] = taken
    assert await client.find_or_create_customer("bo@example.com") == "gid://shopify/Customer/9"


async def test_get_order_reads_transactions_and_gift_card_lines(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    def order(variables: dict[str, Any]) -> dict[str, Any]:
        shop_money = {"shopMoney": money("30.00")}
        return {
            "order": {
                "id": variables["id"],
                "name": "#1001",
                "email": None,
                "customer": {"defaultEmailAddress": {"emailAddress": "ann@example.com"}},
                "shippingAddress": {"name": "Ann Lee"},
                "transactions": [
                    {
                        "id": "gid://shopify/OrderTransaction/1",
                        "kind": "SALE",
                        "status": "SUCCESS",
                        "gateway": "gift_card",
                        "receiptJson": json.dumps(
                            {"gift_card_id": 77, "gift_card_last_characters": "z6tb"}
                        ),
                        "amountSet": shop_money,
                        "parentTransaction": None,
                    },
                    {
                        "id": "gid://shopify/OrderTransaction/2",
                        "kind": "REFUND",
                        "status": "SUCCESS",
                        "gateway": "gift_card",
                        "receiptJson": {"gift_card_id": "gid://shopify/GiftCard/77"},
                        "amountSet": {"shopMoney": money("5.00")},
                        "parentTransaction": {"id": "gid://shopify/OrderTransaction/1"},
                    },
                    {
                        "id": "gid://shopify/OrderTransaction/3",
                        "kind": "SALE",
                        "status": "SUCCESS",
                        "gateway": "shopify_payments",
                        "receiptJson": "{}",
                        "amountSet": {"shopMoney": money("70.00")},
                        "parentTransaction": None,
                    },
                ],
                "lineItems": {
                    "nodes": [
                        {
                            "id": "gid://shopify/LineItem/1",
                            "title": "Gift card",
                            "quantity": 2,
                            "isGiftCard": True,
                            "originalUnitPriceSet": {"shopMoney": money("50.00")},
                        },
                        {
                            "id": "gid://shopify/LineItem/2",
                            "title": "Socks",
                            "quantity": 1,
                            "isGiftCard": False,
                            "originalUnitPriceSet": {"shopMoney": money("10.00")},
                        },
                    ]
                },
            }
        }

    fake.handlers["OrderGet"] = order
    result = await client.get_order(450789469)
    assert result is not None
    assert fake.sent[0].variables["id"] == "gid://shopify/Order/450789469"
    assert (result.name, result.shipping_name, result.customer_email) == (
        "#1001",
        "Ann Lee",
        "ann@example.com",
    )
    sale, refund, card_payment = result.transactions
    assert (
        sale.gift_card_id == "gid://shopify/GiftCard/77"
        and sale.gift_card_last_characters == "z6tb"
    )
    assert (sale.kind, sale.status, sale.gateway, sale.amount) == (
        "SALE",
        "SUCCESS",
        "gift_card",
        Decimal("30.00"),
    )
    assert refund.gift_card_id == "gid://shopify/GiftCard/77"
    assert refund.parent_id == "gid://shopify/OrderTransaction/1"
    assert card_payment.gift_card_id is None
    [line] = result.gift_card_lines
    assert (line.line_item_id, line.quantity, line.amount) == (
        "gid://shopify/LineItem/1",
        2,
        Decimal("50.00"),
    )
    fake.handlers["OrderGet"] = lambda v: {"order": None}
    assert await client.get_order("gid://shopify/Order/1") is None
    assert fake.sent[1].variables["id"] == "gid://shopify/Order/1"


async def test_create_webhook_subscription(fake: FakeShopify, client: ShopifyClient) -> None:
    fake.handlers["WebhookSubscriptionCreate"] = lambda v: {
        "webhookSubscriptionCreate": {
            "webhookSubscription": {
                "id": "gid://shopify/WebhookSubscription/5",
                "topic": "ORDERS_PAID",
                "uri": "https://giftsync.test/webhooks/shopify",
                "format": "JSON",
            },
            "userErrors": [],
        }
    }
    subscription = await client.create_webhook_subscription(
        "orders/paid", "https://giftsync.test/webhooks/shopify"
    )
    assert subscription == "gid://shopify/WebhookSubscription/5"
    assert fake.sent[0].variables == {
        "topic": "ORDERS_PAID",
        "webhookSubscription": {"uri": "https://giftsync.test/webhooks/shopify", "format": "JSON"},
    }


# --- bulk export ------------------------------------------------------------------------


OURS = "gid://shopify/BulkOperation/1"
OTHER = "gid://shopify/BulkOperation/2"


def bulk_handlers(fake: FakeShopify, states: list[dict[str, Any]]) -> None:
    """Our operation goes through `states`; another of the app's runs beside it all along."""
    fake.handlers["BulkOperationRunQuery"] = lambda v: {
        "bulkOperationRunQuery": {
            "bulkOperation": {"id": OURS, "status": "CREATED"},
            "userErrors": [],
        }
    }
    other = {"id": OTHER, "status": "RUNNING", "errorCode": None, "objectCount": "9"}

    def get(variables: dict[str, Any]) -> dict[str, Any]:
        if variables["id"] == OTHER:
            return {"bulkOperation": {**other, "url": None, "partialDataUrl": None}}
        state = states.pop(0) if len(states) > 1 else states[0]
        node = {"id": OURS, "errorCode": None, "objectCount": "3", "url": None}
        return {"bulkOperation": {**node, "partialDataUrl": None, **state}}

    def live(variables: dict[str, Any]) -> dict[str, Any]:
        assert variables == {"first": 25, "query": "status:created OR status:running"}
        nodes = [
            {"id": OTHER, "status": "RUNNING", "query": "{ customers { edges { node { id } } } }"},
            {"id": OURS, "status": states[0]["status"], "query": BULK_GIFT_CARDS_QUERY},
        ]
        live_nodes = [{**n, "createdAt": iso(T0)} for n in nodes if n["status"] == "RUNNING"]
        return {"bulkOperations": {"nodes": live_nodes}}

    fake.handlers["BulkOperationGet"] = get
    fake.handlers["BulkOperationsLive"] = live


async def test_bulk_export_streams_jsonl_without_the_token(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    export_url = "https://storage.googleapis.test/bulk/export.jsonl?sig=abc"
    bulk_handlers(
        fake,
        [{"status": "RUNNING"}, {"status": "RUNNING"}, {"status": "COMPLETED", "url": export_url}],
    )
    rows = [
        card_node(1),
        {
            "id": "gid://shopify/GiftCardCreditTransaction/9",
            "__parentId": "gid://shopify/GiftCard/1",
        },
        card_node(2, balance=money("0.0")),
    ]
    body = "\n".join(json.dumps(row) for row in rows) + "\n\n"
    download = fake.router.get(export_url).mock(return_value=httpx.Response(200, text=body))
    cards = [c async for c in client.bulk_export_gift_cards(poll_interval=0)]
    assert [c.id for c in cards] == ["gid://shopify/GiftCard/1", "gid://shopify/GiftCard/2"]
    assert cards[1].balance == Decimal("0.0")
    assert fake.of("BulkOperationRunQuery")[0].variables == {"query": BULK_GIFT_CARDS_QUERY}
    # Ours is followed by its id: the other operation running beside it is never asked about.
    assert [s.variables for s in fake.of("BulkOperationGet")] == [{"id": OURS}] * 3
    assert "X-Shopify-Access-Token" not in download.calls.last.request.headers


async def test_bulk_export_failure_and_empty_result(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    bulk_handlers(fake, [{"status": "FAILED", "errorCode": "TIMEOUT"}])
    with pytest.raises(ShopifyUnavailable, match="TIMEOUT"):
        [c async for c in client.bulk_export_gift_cards(poll_interval=0)]
    bulk_handlers(fake, [{"status": "COMPLETED", "url": None}])
    assert [c async for c in client.bulk_export_gift_cards(poll_interval=0)] == []


async def test_bulk_operation_gone_is_unavailable(fake: FakeShopify, client: ShopifyClient) -> None:
    bulk_handlers(fake, [{"status": "RUNNING"}])
    fake.handlers["BulkOperationGet"] = lambda v: {"bulkOperation": None}
    with pytest.raises(ShopifyUnavailable, match="is gone"):
        [c async for c in client.bulk_export_gift_cards(poll_interval=0)]


async def test_bulk_start_lost_adopts_our_running_operation_not_another(
    fake: FakeShopify, client: ShopifyClient
) -> None:
    export_url = "https://storage.googleapis.test/bulk/x.jsonl"
    bulk_handlers(fake, [{"status": "RUNNING"}, {"status": "COMPLETED", "url": export_url}])
    original = fake.handlers["BulkOperationRunQuery"]

    def lost(variables: dict[str, Any]) -> dict[str, Any]:
        original(variables)
        raise Lost

    fake.handlers["BulkOperationRunQuery"] = lost
    fake.router.get(export_url).mock(
        return_value=httpx.Response(200, text=json.dumps(card_node(5)) + "\n")
    )
    cards = [c async for c in client.bulk_export_gift_cards(poll_interval=0)]
    assert [c.id for c in cards] == ["gid://shopify/GiftCard/5"]
    assert len(fake.of("BulkOperationRunQuery")) == 1
    assert len(fake.of("BulkOperationsLive")) == 1
    assert {s.variables["id"] for s in fake.of("BulkOperationGet")} == {OURS}


@pytest.mark.parametrize("code", ["LIMIT_REACHED", "OPERATION_IN_PROGRESS"])
async def test_bulk_operations_at_their_limit_are_unavailable_for_a_while(
    fake: FakeShopify, client: ShopifyClient, code: str
) -> None:
    error = {"field": None, "message": "Bulk operations limit reached.", "code": code}
    fake.handlers["BulkOperationRunQuery"] = lambda v: {
        "bulkOperationRunQuery": {"bulkOperation": None, "userErrors": [error]}
    }
    with pytest.raises(ShopifyUnavailable) as caught:
        [c async for c in client.bulk_export_gift_cards(poll_interval=0)]
    assert caught.value.retry_after == 60.0


async def test_invalid_bulk_query_is_a_rejection(fake: FakeShopify, client: ShopifyClient) -> None:
    error = {"field": ["query"], "message": "Invalid bulk query", "code": "INVALID"}
    fake.handlers["BulkOperationRunQuery"] = lambda v: {
        "bulkOperationRunQuery": {"bulkOperation": None, "userErrors": [error]}
    }
    with pytest.raises(ShopifyUserError) as caught:
        [c async for c in client.bulk_export_gift_cards(poll_interval=0)]
    assert caught.value.code == "INVALID"


# --- throttling -------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_throttled_answer_waits_exactly_the_refill_then_retries(fake: FakeShopify) -> None:
    fake_time = FakeTime()
    fake.clock = fake_time.clock
    fake.handlers["GiftCardGet"] = lambda v: {"giftCard": card_node(3)}
    fake.costs["GiftCardGet"] = 12
    fake.maximum, fake.restore_rate = 100.0, 50.0
    fake.available, fake.updated = 4.0, fake_time.now
    fake.enforce_bucket = True
    shopify = ShopifyClient(
        BASE, TOKEN, VERSION, bucket=CostBucket(clock=fake_time.clock, sleep=fake_time.sleep)
    )
    try:
        card = await shopify.get_gift_card("3")
    finally:
        await shopify.aclose()
    assert card is not None and card.id == "gid://shopify/GiftCard/3"
    assert fake.throttled == 1
    assert len(fake.of("GiftCardGet")) == 2
    assert fake_time.sleeps == [pytest.approx((12 - 4) / 50, abs=1e-9)]


async def test_forced_throttle_is_retried(fake: FakeShopify) -> None:
    fake_time = FakeTime()
    fake.handlers["GiftCardGet"] = lambda v: {"giftCard": card_node(1)}
    fake.faults["GiftCardGet"] = ["throttled", "throttled"]
    shopify = ShopifyClient(
        BASE, TOKEN, VERSION, bucket=CostBucket(clock=fake_time.clock, sleep=fake_time.sleep)
    )
    try:
        assert await shopify.get_gift_card("1") is not None
    finally:
        await shopify.aclose()
    assert len(fake.of("GiftCardGet")) == 3
    assert fake.throttled == 2


async def run_burst(fake: FakeShopify, bucket: CostBucket | None, calls: int) -> list[Any]:
    fake.handlers["GiftCardGet"] = lambda v: {"giftCard": card_node(int(v["id"].rsplit("/", 1)[1]))}
    fake.costs["GiftCardGet"] = 10
    fake.maximum, fake.restore_rate = 60.0, 600.0
    fake.available, fake.updated = 60.0, time.monotonic()
    fake.enforce_bucket = True
    shopify = ShopifyClient(BASE, TOKEN, VERSION, bucket=bucket, retry_backoff=0)
    try:
        return await asyncio.gather(
            *(shopify.get_gift_card(str(n)) for n in range(1, calls + 1)), return_exceptions=True
        )
    finally:
        await shopify.aclose()


async def test_a_concurrent_burst_is_paced_and_never_throttled(fake: FakeShopify) -> None:
    cards = await run_burst(fake, CostBucket(), calls=40)
    assert [c.id for c in cards] == [f"gid://shopify/GiftCard/{n}" for n in range(1, 41)]
    assert fake.throttled == 0
    assert len(fake.sent) == 40


class NoPacing(CostBucket):
    """Lets everything through at once: shows the fake's bucket really bites."""

    async def reserve(self, cost_of: Callable[[], float]) -> Any:
        return await super().reserve(lambda: 0.0)


async def test_without_pacing_the_same_burst_is_throttled(fake: FakeShopify) -> None:
    await run_burst(fake, NoPacing(), calls=40)
    assert fake.throttled > 0


# --- secrets ----------------------------------------------------------------------------


async def test_token_and_full_codes_stay_out_of_logs_and_errors(
    fake: FakeShopify, store: CardStore
) -> None:
    with structlog.testing.capture_logs() as events:
        client = ShopifyClient(BASE, TOKEN, VERSION, retry_backoff=0)
        store.lose_next_answer.add("GiftCardCreate")
        created = await client.create_gift_card(Decimal("30.00"), code=CODE)
        store.lose_next_answer.add("GiftCardDebit")
        await client.debit_gift_card(created.card.id, Decimal("1.00"), "AUD", idempotency_key="s")
        fake.faults["GiftCardCreate"] = ["lost", "lost"]
        with pytest.raises(ShopifyUnknownOutcome) as caught:
            await client.create_gift_card(Decimal("30.00"), code="zzzzqqqq1234")
    text = repr(events) + str(caught.value) + caught.value.reference + repr(client.__dict__)
    assert events  # the lost answers were logged ...
    assert TOKEN not in text and CODE not in text and "zzzzqqqq1234" not in text  # ... safely
    assert "1234" in caught.value.reference
    await client.aclose()


async def test_the_writes_a_lost_answer_needs_send_only_registered_documents(
    fake: FakeShopify, client: ShopifyClient, store: CardStore
) -> None:
    # Self-contained: create, debit and credit each lose an answer and are looked up.
    store.lose_next_answer.add("GiftCardCreate")
    created = await client.create_gift_card(Decimal("30.00"), code=CODE)
    store.lose_next_answer.add("GiftCardDebit")
    await client.debit_gift_card(created.card.id, Decimal("1.00"), "AUD", idempotency_key="d")
    fake.faults["GiftCardCredit"] = ["lost"]
    with pytest.raises(ShopifyUnknownOutcome):
        await client.credit_gift_card(created.card.id, Decimal("1.00"), "AUD", idempotency_key="c")
    assert [sent.operation for sent in fake.sent] == [
        "GiftCardCreate",
        "GiftCardsSearch",
        "GiftCardDebit",
        "GiftCardTransactions",
        "GiftCardCredit",
        "GiftCardTransactions",
    ]
    for sent in fake.sent:
        assert ALL_OPERATIONS[sent.operation] == sent.query
        graphql.parse(sent.query)


# --- behaviour against the simulator ----------------------------------------------------


async def simulated_client(**simulator_options: Any) -> tuple[Any, ShopifyClient]:
    from app.sandbox.faults import Faults
    from app.sandbox.shopify import ShopifySimulator

    faults = simulator_options.pop("faults", None) or Faults()
    simulator = ShopifySimulator(faults, access_token=TOKEN, **simulator_options)
    transport = httpx.ASGITransport(app=simulator.app)
    shopify = ShopifyClient(
        "http://shopify.sim", TOKEN, VERSION, timeout=1.0, transport=transport, retry_backoff=0
    )
    return simulator, shopify


async def test_simulator_card_lifecycle() -> None:
    simulator, shopify = await simulated_client()
    try:
        created = await shopify.create_gift_card(Decimal("40.00"), code=CODE, note="sim")
        assert created.card.balance == Decimal("40.00")
        assert created.card.last_characters.lower() == CODE[-4:]
        found = await shopify.find_gift_card_by_code(CODE)
        assert found is not None and found.id == created.card.id
        debit = await shopify.debit_gift_card(
            created.card.id, Decimal("15.00"), "AUD", idempotency_key="d1"
        )
        assert debit.balance_after == Decimal("25.00")
        credit = await shopify.credit_gift_card(
            created.card.id, Decimal("5.00"), "AUD", idempotency_key="c1"
        )
        assert credit.balance_after == Decimal("30.00")
        with pytest.raises(ShopifyInsufficientFunds):
            await shopify.debit_gift_card(
                created.card.id, Decimal("99.00"), "AUD", idempotency_key="d2"
            )
        with pytest.raises(ShopifyCodeTaken):
            await shopify.create_gift_card(Decimal("1.00"), code=CODE)
        moves = await shopify.list_gift_card_transactions(created.card.id)
        assert {m.idempotency_key for m in moves} == {"d1", "c1"}
        since = created.card.created_at - timedelta(seconds=1)
        changed = [c.id async for c in shopify.iter_gift_cards_updated_since(since)]
        assert created.card.id in changed
        deactivated = await shopify.deactivate_gift_card(created.card.id)
        assert deactivated.enabled is False
        assert simulator.card(created.card.id)["balance"] == Decimal("30.00")
    finally:
        await shopify.aclose()


async def test_simulator_lost_debit_is_recovered_without_a_second_debit() -> None:
    from app.sandbox.faults import Faults

    simulator, shopify = await simulated_client(faults=Faults(lost_answer_hang_s=5.0))
    try:
        card_id, _code = simulator.create_gift_card(Decimal("20.00"), code="lostanswer1234")
        simulator.faults.lose_answer_rate = 1.0
        move = await shopify.debit_gift_card(
            card_id, Decimal("5.00"), "AUD", idempotency_key="lost-1"
        )
        assert move.balance_after is None
        assert simulator.card(card_id)["balance"] == Decimal("15.00")
    finally:
        simulator.faults.lose_answer_rate = 0.0
        await shopify.aclose()


async def test_simulator_burst_is_never_throttled() -> None:
    simulator, shopify = await simulated_client(bucket_size=50, restore_rate=1000.0)
    try:
        card_id, _code = simulator.create_gift_card(Decimal("20.00"), code="burstcard1234")
        cards = await asyncio.gather(*(shopify.get_gift_card(card_id) for _ in range(40)))
        assert all(card is not None and card.id == card_id for card in cards)
        assert simulator.throttled_count == 0
    finally:
        await shopify.aclose()


async def test_simulator_bulk_export() -> None:
    simulator, shopify = await simulated_client()
    try:
        ids = {simulator.create_gift_card(Decimal("10.00"))[0] for _ in range(3)}
        exported = [card.id async for card in shopify.bulk_export_gift_cards(poll_interval=0.01)]
        assert set(exported) == ids
    finally:
        await shopify.aclose()


async def test_from_settings_builds_the_endpoint_and_hides_the_token(fake: FakeShopify) -> None:
    from pydantic import SecretStr

    from app.settings import Settings

    settings = Settings(
        sandbox=True,
        shopify_base_url=BASE + "/",
        shopify_admin_token=SecretStr(TOKEN),
        shopify_api_version="2026-10",
        _env_file=None,
    )
    respx_route = fake.router.post(f"{BASE}/admin/api/2026-10/graphql.json").mock(side_effect=fake)
    fake.handlers["GiftCardGet"] = lambda v: {"giftCard": card_node(2)}
    shopify = ShopifyClient.from_settings(settings)
    try:
        assert await shopify.get_gift_card("2") is not None
    finally:
        await shopify.aclose()
    assert respx_route.called
    assert fake.sent[0].headers["X-Shopify-Access-Token"] == TOKEN
    assert TOKEN not in repr(vars(shopify))
