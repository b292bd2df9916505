"""The Shopify simulator driven with raw GraphQL POSTs, as the real Admin API would be."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.sandbox.shopify import ShopifySimulator

TOKEN = "test-token"
VERSION = "2026-07"
URL = f"/admin/api/{VERSION}/graphql.json"

CREATE = """
mutation Create($input: GiftCardCreateInput!) {
  giftCardCreate(input: $input) {
    giftCard { id lastCharacters maskedCode enabled balance { amount currencyCode } }
    giftCardCode
    userErrors { field message code }
  }
}"""
CREDIT = """
mutation Credit($id: ID!, $input: GiftCardCreditInput!) {
  giftCardCredit(id: $id, creditInput: $input) {
    giftCardCreditTransaction { id amount { amount currencyCode } note processedAt
      giftCard { id balance { amount } } }
    userErrors { field message code }
  }
}"""
DEBIT = """
mutation Debit($id: ID!, $input: GiftCardDebitInput!) {
  giftCardDebit(id: $id, debitInput: $input) {
    giftCardDebitTransaction { id amount { amount currencyCode } note
      giftCard { id balance { amount } } }
    userErrors { field message code }
  }
}"""
SEARCH = """
query Search($query: String, $first: Int, $after: String, $last: Int, $before: String,
             $sortKey: GiftCardSortKeys, $reverse: Boolean) {
  giftCards(query: $query, first: $first, after: $after, last: $last, before: $before,
            sortKey: $sortKey, reverse: $reverse) {
    edges { cursor node { id lastCharacters updatedAt } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""


def aud(amount: str | int) -> dict[str, Any]:
    """A MoneyInput in the simulated shop's currency."""
    return {"amount": str(amount), "currencyCode": "AUD"}


class Shop:
    """A simulator with a client bound to it."""

    def __init__(self, sim: ShopifySimulator, client: httpx.AsyncClient) -> None:
        self.sim = sim
        self.client = client

    async def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.client.post(
            URL,
            json={"query": query, "variables": variables or {}},
            headers={"X-Shopify-Access-Token": TOKEN},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = await self.post(query, variables)
        assert "errors" not in body, body
        result: dict[str, Any] = body["data"]
        return result

    async def search(self, **variables: Any) -> list[str]:
        variables.setdefault("first", 50)
        data = await self.data(SEARCH, variables)
        return [edge["node"]["id"] for edge in data["giftCards"]["edges"]]


def make_shop(sim: ShopifySimulator) -> AsyncIterator[Shop]:
    async def gen() -> AsyncIterator[Shop]:
        transport = httpx.ASGITransport(app=sim.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            yield Shop(sim, client)

    return gen()


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    async for bound in make_shop(ShopifySimulator(access_token=TOKEN)):
        yield bound


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- protocol ------------------------------------------------------------------------------


async def test_wrong_token_is_401(shop: Shop) -> None:
    response = await shop.client.post(
        URL, json={"query": "{ giftCardsCount { count } }"}, headers={"X-Shopify-Access-Token": "x"}
    )
    assert response.status_code == 401
    assert "errors" in response.json()


@pytest.mark.parametrize(
    "query",
    [
        "{ giftCards(first: 1) { nodes { id code } } }",  # the full code is never readable
        "{ giftCards(first: 1, status: ENABLED) { nodes { id } } }",
        'mutation { giftCardDisable(id: "gid://shopify/GiftCard/1") { userErrors { message } } }',
        "{ giftCards(first: 1) { nodes { id }",
    ],
)
async def test_invalid_documents_are_refused_without_data(shop: Shop, query: str) -> None:
    body = await shop.post(query)
    assert "data" not in body
    assert body["errors"][0]["message"]


async def test_invalid_mutation_applies_nothing(shop: Shop) -> None:
    body = await shop.post(
        'mutation { giftCardCreate(input: {initialAmount: {amount: "5", currencyCode: AUD},'
        ' colour: "red"}) { giftCardCode } }'
    )
    assert "data" not in body
    assert shop.sim.shop.gift_cards == {}


# --- gift cards ----------------------------------------------------------------------------


async def test_create_returns_code_once_and_then_only_masked(shop: Shop) -> None:
    data = await shop.data(
        CREATE, {"input": {"initialAmount": aud("25.5"), "code": "ABCD1234wxyz"}}
    )
    created = data["giftCardCreate"]
    assert created["userErrors"] == []
    assert created["giftCardCode"] == "abcd1234wxyz"
    assert created["giftCard"]["balance"] == {"amount": "25.50", "currencyCode": "AUD"}
    card_id = created["giftCard"]["id"]
    read = await shop.data(
        "query($id: ID!) { giftCard(id: $id) { lastCharacters maskedCode initialValue { amount } } }",
        {"id": card_id},
    )
    assert read["giftCard"]["lastCharacters"] == "wxyz"
    assert read["giftCard"]["maskedCode"].endswith("wxyz")
    assert "abcd1234" not in json.dumps(read)
    # Still findable by the full code, case-insensitively, and by the last characters.
    assert await shop.search(query="ABCD1234WXYZ") == [card_id]
    assert await shop.search(query="wxyz") == [card_id]


async def test_create_without_code_makes_sixteen_characters(shop: Shop) -> None:
    data = await shop.data(CREATE, {"input": {"initialAmount": aud(10)}})
    code = data["giftCardCreate"]["giftCardCode"]
    assert len(code) == 16
    assert code.isalnum()
    assert code == code.lower()


@pytest.mark.parametrize(
    ("create_input", "code"),
    [
        ({"initialAmount": aud("5"), "code": "abc1234"}, "TOO_SHORT"),
        ({"initialAmount": aud("5"), "code": "a" * 21}, "TOO_LONG"),
        ({"initialAmount": aud("5"), "code": "abcd-1234"}, "INVALID"),
        ({"initialAmount": aud("5"), "code": "taken0001"}, "TAKEN"),
        ({"initialAmount": aud("5"), "code": "TAKEN0001"}, "TAKEN"),
        ({"initialAmount": aud("100000")}, "GREATER_THAN"),
        (
            {"initialAmount": aud("5"), "customerId": "gid://shopify/Customer/42"},
            "CUSTOMER_NOT_FOUND",
        ),
    ],
)
async def test_create_user_errors(shop: Shop, create_input: dict[str, Any], code: str) -> None:
    shop.sim.create_gift_card(Decimal("1"), code="taken0001")
    data = await shop.data(CREATE, {"input": create_input})
    payload = data["giftCardCreate"]
    assert payload["giftCard"] is None
    assert payload["giftCardCode"] is None
    assert [e["code"] for e in payload["userErrors"]] == [code]
    assert len(shop.sim.shop.gift_cards) == 1


async def test_credit_and_debit_move_the_balance_and_list_transactions(shop: Shop) -> None:
    card_id, _ = shop.sim.create_gift_card(Decimal("20.00"))
    credit = await shop.data(
        CREDIT,
        {
            "id": card_id,
            "input": {
                "creditAmount": {"amount": "5.25", "currencyCode": "AUD"},
                "note": "top up",
                "processedAt": "2025-03-01T10:00:00Z",
            },
        },
    )
    txn = credit["giftCardCredit"]["giftCardCreditTransaction"]
    assert txn["amount"] == {"amount": "5.25", "currencyCode": "AUD"}
    assert txn["processedAt"] == "2025-03-01T10:00:00Z"
    assert txn["giftCard"]["balance"]["amount"] == "25.25"
    debit = await shop.data(
        DEBIT, {"id": card_id, "input": {"debitAmount": {"amount": "10", "currencyCode": "AUD"}}}
    )
    assert debit["giftCardDebit"]["userErrors"] == []
    assert debit["giftCardDebit"]["giftCardDebitTransaction"]["giftCard"]["balance"] == {
        "amount": "15.25"
    }
    assert shop.sim.card(card_id)["balance"] == Decimal("15.25")
    listed = await shop.data(
        """query($id: ID!) { giftCard(id: $id) { transactions(first: 10) { nodes {
             __typename amount { amount } note processedAt } } } }""",
        {"id": card_id},
    )
    nodes = listed["giftCard"]["transactions"]["nodes"]
    assert [(n["__typename"], n["amount"]["amount"], n["note"]) for n in nodes] == [
        ("GiftCardCreditTransaction", "5.25", "top up"),
        ("GiftCardDebitTransaction", "-10.00", None),
    ]


@pytest.mark.parametrize(
    ("card_ref", "amount", "currency", "code"),
    [
        ("own", "30.01", "AUD", "INSUFFICIENT_FUNDS"),
        ("own", "5", "USD", "MISMATCHING_CURRENCY"),
        ("own", "0", "AUD", "NEGATIVE_OR_ZERO_AMOUNT"),
        ("own", "-1", "AUD", "NEGATIVE_OR_ZERO_AMOUNT"),
        ("gid://shopify/GiftCard/999", "5", "AUD", "GIFT_CARD_NOT_FOUND"),
        ("disabled", "5", "AUD", "INVALID"),
    ],
)
async def test_debit_user_errors_change_nothing(
    shop: Shop, card_ref: str, amount: str, currency: str, code: str
) -> None:
    own_id, _ = shop.sim.create_gift_card(Decimal("30.00"))
    disabled_id, _ = shop.sim.create_gift_card(Decimal("30.00"))
    shop.sim.shop.deactivate(disabled_id)
    card_id = {"own": own_id, "disabled": disabled_id}.get(card_ref, card_ref)
    data = await shop.data(
        DEBIT,
        {"id": card_id, "input": {"debitAmount": {"amount": amount, "currencyCode": currency}}},
    )
    payload = data["giftCardDebit"]
    assert payload["giftCardDebitTransaction"] is None
    assert [e["code"] for e in payload["userErrors"]] == [code]
    assert shop.sim.card(own_id)["balance"] == Decimal("30.00")
    assert shop.sim.card(own_id)["transactions"] == []


async def test_deactivate_is_irreversible_and_refuses_credit(shop: Shop) -> None:
    card_id, _ = shop.sim.create_gift_card(Decimal("8"))
    query = """mutation($id: ID!) { giftCardDeactivate(id: $id) {
                 giftCard { enabled deactivatedAt } userErrors { code } } }"""
    first = await shop.data(query, {"id": card_id})
    assert first["giftCardDeactivate"]["giftCard"]["enabled"] is False
    stamp = first["giftCardDeactivate"]["giftCard"]["deactivatedAt"]
    again = await shop.data(query, {"id": card_id})
    assert again["giftCardDeactivate"]["giftCard"]["deactivatedAt"] == stamp
    missing = await shop.data(query, {"id": "gid://shopify/GiftCard/1"})
    assert missing["giftCardDeactivate"]["userErrors"] == [{"code": "GIFT_CARD_NOT_FOUND"}]
    credit = await shop.data(
        CREDIT, {"id": card_id, "input": {"creditAmount": {"amount": 1, "currencyCode": "AUD"}}}
    )
    assert credit["giftCardCredit"]["userErrors"][0]["code"] == "INVALID"
    assert shop.sim.card(card_id)["balance"] == Decimal("8")


async def test_update_and_notify(shop: Shop) -> None:
    card_id, _ = shop.sim.create_gift_card(Decimal("8"))
    notify = """mutation($id: ID!) { giftCardSendNotificationToCustomer(id: $id) {
                  giftCard { id } userErrors { code } } }"""
    refused = await shop.data(notify, {"id": card_id})
    assert refused["giftCardSendNotificationToCustomer"]["userErrors"] == [
        {"code": "CUSTOMER_NOT_FOUND"}
    ]
    made = await shop.data(
        """mutation { customerCreate(input: {email: "ann@example.com", firstName: "Ann"}) {
             customer { id displayName } userErrors { field message } } }"""
    )
    customer_id = made["customerCreate"]["customer"]["id"]
    update = """mutation($id: ID!, $input: GiftCardUpdateInput!) { giftCardUpdate(id: $id, input: $input) {
                  giftCard { note expiresOn customer { id defaultEmailAddress { emailAddress } } }
                  userErrors { field message } } }"""
    updated = await shop.data(
        update,
        {
            "id": card_id,
            "input": {"note": "vip", "expiresOn": "2030-01-31", "customerId": customer_id},
        },
    )
    assert updated["giftCardUpdate"]["giftCard"] == {
        "note": "vip",
        "expiresOn": "2030-01-31",
        "customer": {"id": customer_id, "defaultEmailAddress": {"emailAddress": "ann@example.com"}},
    }
    bad = await shop.data(
        update, {"id": card_id, "input": {"customerId": "gid://shopify/Customer/5"}}
    )
    assert bad["giftCardUpdate"]["giftCard"] is None
    assert bad["giftCardUpdate"]["userErrors"][0]["field"] == ["input", "customerId"]
    sent = await shop.data(notify, {"id": card_id})
    assert sent["giftCardSendNotificationToCustomer"]["userErrors"] == []
    assert shop.sim.card(card_id)["notifications_sent"] == 1


async def test_customers_by_email_and_duplicate_email(shop: Shop) -> None:
    create = """mutation($email: String) { customerCreate(input: {email: $email}) {
                  customer { id } userErrors { field message } } }"""
    first = await shop.data(create, {"email": "bo@example.com"})
    await shop.data(create, {"email": "cy@example.com"})
    duplicate = await shop.data(create, {"email": "BO@example.com"})
    assert duplicate["customerCreate"]["userErrors"][0]["field"] == ["email"]
    found = await shop.data(
        '{ customers(first: 5, query: "email:bo@example.com") {'
        " nodes { id defaultEmailAddress { emailAddress } } } }"
    )
    assert found["customers"]["nodes"] == [
        {
            "id": first["customerCreate"]["customer"]["id"],
            "defaultEmailAddress": {"emailAddress": "bo@example.com"},
        }
    ]
    # Deprecated is not removed: 2026-07 still serves `Customer.email`.
    old = await shop.data(
        '{ customers(first: 5, query: "email:cy@example.com") { nodes { email } } }'
    )
    assert old["customers"]["nodes"] == [{"email": "cy@example.com"}]


# --- listing -------------------------------------------------------------------------------


async def test_pagination_forward_and_backward(shop: Shop) -> None:
    ids = [shop.sim.create_gift_card(Decimal(n + 1))[0] for n in range(7)]
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        data = await shop.data(SEARCH, {"first": 3, "after": after, "sortKey": "ID"})
        connection = data["giftCards"]
        seen += [e["node"]["id"] for e in connection["edges"]]
        assert connection["pageInfo"]["hasPreviousPage"] is (pages > 0)
        pages += 1
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert seen == ids
    assert pages == 3
    back = await shop.data(SEARCH, {"last": 2, "before": after, "sortKey": "ID"})
    assert [e["node"]["id"] for e in back["giftCards"]["edges"]] == ids[
        3:5
    ]  # before the end of page two (ids[5])
    assert back["giftCards"]["pageInfo"]["hasPreviousPage"] is True
    reverse = await shop.search(first=2, sortKey="ID", reverse=True)
    assert reverse == [ids[6], ids[5]]


async def test_connection_needs_first_or_last(shop: Shop) -> None:
    body = await shop.post("{ giftCards { nodes { id } } }")
    assert body["data"] is None
    assert "first or last" in body["errors"][0]["message"]


async def test_search_filters(shop: Shop) -> None:
    sim = shop.sim
    full, _ = sim.create_gift_card(Decimal("50"), source="manual")
    partial, _ = sim.create_gift_card(Decimal("100"))
    sim.spend(partial, Decimal("40"))
    empty, _ = sim.create_gift_card(Decimal("10"))
    sim.spend(empty, Decimal("10"))
    disabled, _ = sim.create_gift_card(Decimal("20"))
    sim.shop.deactivate(disabled)
    expired, _ = sim.create_gift_card(Decimal("30"))
    sim.shop.update_card(expired, {"expiresOn": "2020-01-01"})
    expiring, _ = sim.create_gift_card(Decimal("30"))
    soon = (sim.shop.now().date()).isoformat()
    sim.shop.update_card(expiring, {"expiresOn": soon})

    assert set(await shop.search(query="status:disabled")) == {disabled}
    assert set(await shop.search(query="status:expired")) == {expired}
    assert set(await shop.search(query="status:expiring")) == {expiring}
    assert set(await shop.search(query="status:enabled")) == {full, partial, empty, expiring}
    assert set(await shop.search(query="balance_status:partial")) == {partial}
    assert set(await shop.search(query="balance_status:empty")) == {empty}
    assert empty not in await shop.search(query="balance_status:full_or_partial")
    assert await shop.search(query="source:manual") == [full]
    assert set(await shop.search(query="initial_value:>=50")) == {full, partial}
    assert await shop.search(query=f"id:{partial.rsplit('/', 1)[1]}") == [partial]
    assert set(await shop.search(query="status:enabled balance_status:full")) == {full, expiring}
    assert disabled not in await shop.search(query="-status:disabled")
    assert len(await shop.search(query="created_at:>2000-01-01")) == 6
    assert await shop.search(query="created_at:<2000-01-01") == []
    counted = await shop.data('{ giftCardsCount(query: "status:enabled") { count precision } }')
    assert counted["giftCardsCount"] == {"count": 4, "precision": "EXACT"}


async def test_updated_at_moves_on_every_change(shop: Shop) -> None:
    old, _ = shop.sim.create_gift_card(Decimal("10"))
    newer, _ = shop.sim.create_gift_card(Decimal("10"))
    assert await shop.search(sortKey="UPDATED_AT", reverse=True) == [newer, old]
    shop.sim.spend(old, Decimal("1"))
    assert await shop.search(sortKey="UPDATED_AT", reverse=True) == [old, newer]
    await shop.data(
        'mutation($id: ID!) { giftCardUpdate(id: $id, input: {note: "x"}) { userErrors { message } } }',
        {"id": newer},
    )
    assert await shop.search(sortKey="UPDATED_AT", reverse=True) == [newer, old]
    assert shop.sim.card(newer)["updated_at"] > shop.sim.card(old)["updated_at"]


# --- bulk export ---------------------------------------------------------------------------

BULK_QUERY = """
{ giftCards { edges { node { id balance { amount }
    transactions { edges { node { id amount { amount } } } } } } } }"""
RUN_BULK = """mutation($q: String!) { bulkOperationRunQuery(query: $q) {
  bulkOperation { id status } userErrors { field message code } } }"""


GET_BULK = """query($id: ID!) { bulkOperation(id: $id) {
  id status url objectCount rootObjectCount } }"""
LIVE_BULK = """query($q: String) { bulkOperations(first: 10, query: $q) {
  nodes { id status query } } }"""


async def test_bulk_export_streams_jsonl_with_parent_ids(shop: Shop) -> None:
    first, _ = shop.sim.create_gift_card(Decimal("10"))
    second, _ = shop.sim.create_gift_card(Decimal("20"))
    shop.sim.spend(second, Decimal("5"))
    started = await shop.data(RUN_BULK, {"q": BULK_QUERY})
    operation = started["bulkOperationRunQuery"]["bulkOperation"]
    assert operation["status"] == "CREATED"

    statuses = []
    url = None
    for _ in range(5):
        polled = await shop.data(GET_BULK, {"id": operation["id"]})
        current = polled["bulkOperation"]
        assert current["id"] == operation["id"]
        statuses.append(current["status"])
        if current["status"] == "COMPLETED":
            url = current["url"]
            assert current["rootObjectCount"] == "2"
            break
    assert statuses == ["RUNNING", "COMPLETED"]
    assert url is not None
    by_node = await shop.data(
        "query($id: ID!) { node(id: $id) { ... on BulkOperation { status url } } }",
        {"id": operation["id"]},
    )
    assert by_node["node"] == {"status": "COMPLETED", "url": url}

    async with shop.client.stream("GET", url) as response:
        assert response.status_code == 200
        rows = [json.loads(line) async for line in response.aiter_lines() if line]
    assert [row["id"] for row in rows if "__parentId" not in row] == [first, second]
    children = [row for row in rows if "__parentId" in row]
    assert len(children) == 1
    assert children[0]["__parentId"] == second
    assert children[0]["amount"] == {"amount": "-5.00"}


async def test_five_bulk_queries_run_at_once_and_a_sixth_waits(shop: Shop) -> None:
    """Since 2026-01 up to five bulk queries per app and shop (shopify.dev bulk operations)."""
    other = "{ customers { edges { node { id } } } }"
    others = [shop.sim.start_bulk_operation(other) for _ in range(4)]
    ours = (await shop.data(RUN_BULK, {"q": BULK_QUERY}))["bulkOperationRunQuery"]
    assert ours["userErrors"] == []
    sixth = await shop.data(RUN_BULK, {"q": BULK_QUERY})
    assert sixth["bulkOperationRunQuery"]["userErrors"] == [
        {
            "field": None,
            "message": "Bulk operations limit reached. Please try again later.",
            "code": "LIMIT_REACHED",
        }
    ]
    # Newest first; the status filter finds the live ones, ours among them by its query.
    live = await shop.data(LIVE_BULK, {"q": "status:created OR status:running"})
    ids = [node["id"] for node in live["bulkOperations"]["nodes"]]
    assert ids == [ours["bulkOperation"]["id"], *reversed(others)]
    assert [n["query"] for n in live["bulkOperations"]["nodes"]] == [BULK_QUERY] + [
        "{ customers { edges { node { id } } } }"
    ] * 4
    # Following ours by id moves only ours on.
    for _ in range(2):
        await shop.data(GET_BULK, {"id": ours["bulkOperation"]["id"]})
    running = await shop.data(LIVE_BULK, {"q": "status:running OR status:created"})
    assert [n["id"] for n in running["bulkOperations"]["nodes"]] == list(reversed(others))
    done = await shop.data(LIVE_BULK, {"q": "status:completed"})
    assert [n["id"] for n in done["bulkOperations"]["nodes"]] == [ours["bulkOperation"]["id"]]
    later = await shop.data(RUN_BULK, {"q": BULK_QUERY})
    assert later["bulkOperationRunQuery"]["userErrors"] == []


async def test_bulk_query_must_be_valid(shop: Shop) -> None:
    data = await shop.data(RUN_BULK, {"q": "{ giftCards { edges { node { nope } } } }"})
    assert data["bulkOperationRunQuery"]["userErrors"][0]["code"] == "INVALID"


# --- cost and throttling -------------------------------------------------------------------


async def test_cost_extensions_requested_and_actual(shop: Shop) -> None:
    shop.sim.create_gift_card(Decimal("10"))
    body = await shop.post("{ giftCards(first: 10) { nodes { id balance { amount } } } }")
    cost = body["extensions"]["cost"]
    # 2 for the connection + 10 x (1 card + 1 MoneyV2); one card came back.
    assert cost["requestedQueryCost"] == 22
    assert cost["actualQueryCost"] == 4
    status = cost["throttleStatus"]
    assert status["maximumAvailable"] == 1000
    assert status["restoreRate"] == 100
    assert status["currentlyAvailable"] >= 1000 - 4 - 1
    mutation = await shop.post(CREATE, {"input": {"initialAmount": aud(1)}})
    assert mutation["extensions"]["cost"]["requestedQueryCost"] == 10
    assert mutation["extensions"]["cost"]["actualQueryCost"] == 10


async def test_query_over_the_single_query_limit_is_refused() -> None:
    async for shop in make_shop(ShopifySimulator(access_token=TOKEN, bucket_size=100)):
        body = await shop.post("{ giftCards(first: 250) { nodes { id } } }")
        assert "data" not in body
        assert body["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"


async def test_burst_is_throttled_without_applying_then_refills() -> None:
    clock = FakeClock()
    sim = ShopifySimulator(access_token=TOKEN, bucket_size=50, restore_rate=10, clock=clock)
    async for shop in make_shop(sim):
        answers = [
            await shop.post(
                CREATE, {"input": {"initialAmount": aud(1), "code": f"burstcard{n:03d}"}}
            )
            for n in range(7)
        ]
        throttled = [a for a in answers if "data" not in a]
        assert len(throttled) == 2
        for answer in throttled:
            assert answer["errors"][0]["message"] == "Throttled"
            assert answer["errors"][0]["extensions"]["code"] == "THROTTLED"
            assert answer["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] < 10
        assert sim.throttled_count == 2
        assert sorted(c.code for c in sim.shop.gift_cards.values()) == [
            f"burstcard{n:03d}" for n in range(5)
        ]

        clock.now += 0.5  # 5 points back: still not enough for a mutation
        still = await shop.post(CREATE, {"input": {"initialAmount": aud(1)}})
        assert still["errors"][0]["extensions"]["code"] == "THROTTLED"
        clock.now += 1.0
        refilled = await shop.post(CREATE, {"input": {"initialAmount": aud(1)}})
        assert refilled["data"]["giftCardCreate"]["userErrors"] == []
        assert sim.throttled_count == 3


# --- faults --------------------------------------------------------------------------------


async def test_error_fault_answers_5xx_before_applying(shop: Shop) -> None:
    shop.sim.faults.error_rate = 1.0
    for _ in range(2):
        response = await shop.client.post(
            URL,
            json={"query": CREATE, "variables": {"input": {"initialAmount": aud(1)}}},
            headers={"X-Shopify-Access-Token": TOKEN},
        )
        assert response.status_code in (502, 503)
    assert shop.sim.shop.gift_cards == {}


async def test_lost_answer_is_applied_then_hangs(shop: Shop) -> None:
    card_id, _ = shop.sim.create_gift_card(Decimal("20"))
    switched = await shop.client.post("/_sim/faults", json={"lose_answer_rate": 1.0})
    assert switched.status_code == 200
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await shop.post(
                DEBIT,
                {"id": card_id, "input": {"debitAmount": {"amount": "5", "currencyCode": "AUD"}}},
            )
    assert shop.sim.card(card_id)["balance"] == Decimal("15")
    # Reads are never lost.
    data = await shop.data(
        "query($id: ID!) { giftCard(id: $id) { balance { amount } } }", {"id": card_id}
    )
    assert data["giftCard"]["balance"]["amount"] == "15.00"


async def test_latency_and_forced_throttle(shop: Shop) -> None:
    shop.sim.faults.latency_ms = 300
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await shop.post("{ giftCardsCount { count } }")
    shop.sim.faults.latency_ms = 0
    shop.sim.faults.force_throttle = True
    body = await shop.post(CREATE, {"input": {"initialAmount": aud(1)}})
    assert body["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert "data" not in body
    assert shop.sim.throttled_count == 1
    assert shop.sim.shop.gift_cards == {}


# --- orders and helpers --------------------------------------------------------------------


async def test_order_helper_payloads_and_graphql_view(shop: Shop) -> None:
    sim = shop.sim
    card_id, code = sim.create_gift_card(Decimal("30"), code="payingcard0001")
    order = sim.create_order(
        [(card_id, Decimal("12.50"))],
        gift_card_purchases=[Decimal("25")],
        shipping_name="Ann Lee",
        email="ann@example.com",
    )
    assert sim.card(card_id)["balance"] == Decimal("17.50")
    paid = order["webhooks"]["orders/paid"]
    assert "transactions" not in paid
    assert [item["gift_card"] for item in paid["line_items"]] == [True]
    created = order["webhooks"]["order_transactions/create"]
    gift = [t for t in created if t["gateway"] == "gift_card"]
    assert gift == [
        {
            **gift[0],
            "order_id": order["legacy_id"],
            "kind": "sale",
            "status": "success",
            "amount": "12.50",
            "receipt": {
                "gift_card_id": int(card_id.rsplit("/", 1)[1]),
                "gift_card_last_characters": "0001",
            },
        }
    ]
    purchased = order["purchased_gift_cards"]
    assert len(purchased) == 1
    assert sim.card(purchased[0]["id"])["source"] == "purchased"
    assert await shop.search(query="source:purchased") == [purchased[0]["id"]]

    data = await shop.data(
        """query($id: ID!) { order(id: $id) { name
             transactions { id kind status gateway amountSet { shopMoney { amount currencyCode } }
                            receiptJson parentTransaction { id } }
             lineItems(first: 5) { nodes { isGiftCard name } }
             shippingAddress { name } customer { defaultEmailAddress { emailAddress } } } }""",
        {"id": order["id"]},
    )
    view = data["order"]
    assert view["name"] == order["name"]
    assert view["shippingAddress"] == {"name": "Ann Lee"}
    assert view["customer"] == {"defaultEmailAddress": {"emailAddress": "ann@example.com"}}
    assert view["lineItems"]["nodes"] == [{"isGiftCard": True, "name": "Gift card 25.00"}]
    sale = next(t for t in view["transactions"] if t["gateway"] == "gift_card")
    assert sale["kind"] == "SALE"
    assert sale["status"] == "SUCCESS"
    assert sale["amountSet"]["shopMoney"] == {"amount": "12.50", "currencyCode": "AUD"}
    assert json.loads(sale["receiptJson"])["gift_card_last_characters"] == "0001"
    assert code == "payingcard0001"

    refund = sim.refund_to_gift_card(order["id"], card_id, Decimal("2.50"))
    assert sim.card(card_id)["balance"] == Decimal("20.00")
    refund_txn = refund["webhooks"]["order_transactions/create"][0]
    assert refund_txn["kind"] == "refund"
    assert refund_txn["parent_id"] == gift[0]["id"]


async def test_order_helper_refuses_overspend(shop: Shop) -> None:
    card_id, _ = shop.sim.create_gift_card(Decimal("5"))
    with pytest.raises(ValueError, match="cannot pay"):
        shop.sim.create_order([(card_id, Decimal("6"))])
    assert shop.sim.card(card_id)["balance"] == Decimal("5")


async def test_node_lookup_and_webhook_subscription(shop: Shop) -> None:
    card_id, _ = shop.sim.create_gift_card(Decimal("5"), customer_email="dee@example.com")
    found = await shop.data(
        "query($id: ID!) { node(id: $id) { __typename id ... on GiftCard { customer { email } } } }",
        {"id": card_id},
    )
    assert found["node"] == {
        "__typename": "GiftCard",
        "id": card_id,
        "customer": {"email": "dee@example.com"},
    }
    # The deprecated `callbackUrl` is still read, and still answered.
    created = await shop.data(
        """mutation { webhookSubscriptionCreate(topic: ORDERS_PAID,
             webhookSubscription: {callbackUrl: "https://giftsync.test/webhooks/shopify", format: JSON}) {
             webhookSubscription { id topic uri endpoint { __typename ... on WebhookHttpEndpoint { callbackUrl } } }
             userErrors { field message } } }"""
    )
    sub = created["webhookSubscriptionCreate"]["webhookSubscription"]
    assert sub["topic"] == "ORDERS_PAID"
    assert sub["uri"] == "https://giftsync.test/webhooks/shopify"
    assert sub["endpoint"] == {
        "__typename": "WebhookHttpEndpoint",
        "callbackUrl": "https://giftsync.test/webhooks/shopify",
    }


WEBHOOK_CREATE = """mutation($topic: WebhookSubscriptionTopic!, $sub: WebhookSubscriptionInput!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $sub) {
    webhookSubscription { id topic uri format } userErrors { field message } } }"""
WEBHOOK_LIST = """query($topics: [WebhookSubscriptionTopic!]) {
  webhookSubscriptions(first: 10, topics: $topics) { nodes { id topic uri format apiVersion { handle } } } }"""
WEBHOOK_DELETE = """mutation($id: ID!) { webhookSubscriptionDelete(id: $id) {
  deletedWebhookSubscriptionId userErrors { field message } } }"""


async def test_webhook_subscriptions_list_create_delete(shop: Shop) -> None:
    target = {"uri": "https://giftsync.test/webhooks/shopify", "format": "JSON"}
    paid = await shop.data(WEBHOOK_CREATE, {"topic": "ORDERS_PAID", "sub": target})
    paid_id = paid["webhookSubscriptionCreate"]["webhookSubscription"]["id"]
    await shop.data(WEBHOOK_CREATE, {"topic": "REFUNDS_CREATE", "sub": target})
    twice = await shop.data(WEBHOOK_CREATE, {"topic": "ORDERS_PAID", "sub": target})
    assert twice["webhookSubscriptionCreate"]["userErrors"] == [
        {
            "field": ["webhookSubscription", "callbackUrl"],
            "message": "Address for this topic has already been taken",
        }
    ]
    listed = await shop.data(WEBHOOK_LIST)
    assert [(n["topic"], n["uri"]) for n in listed["webhookSubscriptions"]["nodes"]] == [
        ("ORDERS_PAID", target["uri"]),
        ("REFUNDS_CREATE", target["uri"]),
    ]
    assert listed["webhookSubscriptions"]["nodes"][0]["apiVersion"] == {"handle": VERSION}
    only = await shop.data(WEBHOOK_LIST, {"topics": ["REFUNDS_CREATE"]})
    assert [n["topic"] for n in only["webhookSubscriptions"]["nodes"]] == ["REFUNDS_CREATE"]
    deleted = await shop.data(WEBHOOK_DELETE, {"id": paid_id})
    assert deleted["webhookSubscriptionDelete"] == {
        "deletedWebhookSubscriptionId": paid_id,
        "userErrors": [],
    }
    again = await shop.data(WEBHOOK_DELETE, {"id": paid_id})
    assert again["webhookSubscriptionDelete"]["deletedWebhookSubscriptionId"] is None
    assert again["webhookSubscriptionDelete"]["userErrors"][0]["field"] == ["id"]
    left = await shop.data(WEBHOOK_LIST)
    assert [n["topic"] for n in left["webhookSubscriptions"]["nodes"]] == ["REFUNDS_CREATE"]


async def test_seed_demo_lines() -> None:
    sim = ShopifySimulator()
    lines = sim.seed_demo()
    assert len(lines) >= 3
    assert len(sim.shop.gift_cards) == 3
