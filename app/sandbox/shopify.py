"""Shopify GraphQL Admin simulator: gift cards, customers, orders, bulk export, cost throttle,
webhook subscriptions, the client credentials grant.

Every request is parsed and validated against Shopify's real Admin schema of the version in its
URL (2026-01 to 2026-10; a retired version is answered by the oldest one, see
`shopify_access`), then executed over the in-memory shop in `shopify_resolvers`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    GraphQLType,
    InlineFragmentNode,
    IntValueNode,
    NamedTypeNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    execute_sync,
    get_named_type,
    is_leaf_type,
    parse,
    validate,
)
from graphql.utilities import get_operation_ast

from app.sandbox.faults import Faults, faults_router
from app.sandbox.shopify_access import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SUPPORTED_VERSIONS,
    TOKEN_LIFETIME,
    VERSION_HEADER,
    AppAccess,
    admin_schema,
    invalid_token_response,
    served_version,
)
from app.sandbox.shopify_resolvers import (
    BulkOperationState,
    ExecutionContext,
    GiftCardState,
    LineItemState,
    MutationRoot,
    OrderState,
    OrderTxnState,
    QueryRoot,
    ShopError,
    ShopState,
    gid,
    iso,
    parse_gid,
    typename_of,
)

MUTATION_COST = 10
THROTTLE_DOCS = "https://shopify.dev/api/usage/rate-limits"
# Since 2026-01 an app runs up to five bulk queries at once per shop (shopify.dev,
# api/usage/bulk-operations/queries); every version served here is 2026-01 or later.
BULK_QUERY_LIMIT = 5


# --- query cost ----------------------------------------------------------------------------


def _fields(
    selection_set: SelectionSetNode | None,
    owner: GraphQLType,
    fragments: dict[str, FragmentDefinitionNode],
    schema: GraphQLSchema,
) -> list[tuple[FieldNode, GraphQLType]]:
    """Fields of a selection set with the type each is looked up on (fragments flattened)."""
    found: list[tuple[FieldNode, GraphQLType]] = []
    for selection in selection_set.selections if selection_set else ():
        if isinstance(selection, FieldNode):
            found.append((selection, owner))
            continue
        if isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is None:
                continue
            condition: NamedTypeNode | None = fragment.type_condition
            inner = fragment.selection_set
        elif isinstance(selection, InlineFragmentNode):
            condition, inner = selection.type_condition, selection.selection_set
        else:
            continue
        inner_owner = schema.get_type(condition.name.value) if condition else owner
        found.extend(_fields(inner, inner_owner or owner, fragments, schema))
    return found


def _field_type(owner: GraphQLType, name: str) -> GraphQLType | None:
    fields = getattr(owner, "fields", None)
    definition = fields.get(name) if fields else None
    return definition.type if definition else None


def _page_size(node: FieldNode, variables: dict[str, Any]) -> int | None:
    for argument in node.arguments or ():
        if argument.name.value not in ("first", "last"):
            continue
        value = argument.value
        if isinstance(value, IntValueNode):
            return int(value.value)
        if isinstance(value, VariableNode):
            size = variables.get(value.name.value)
            return size if isinstance(size, int) else None
    return None


def _nullable(field_type: GraphQLType) -> GraphQLType:
    return field_type.of_type if isinstance(field_type, GraphQLNonNull) else field_type


def _is_connection(field_type: GraphQLType) -> bool:
    return get_named_type(field_type).name.endswith("Connection")


class CostCalculator:
    """Shopify's model: objects 1, scalars and enums 0, connections 2 + size x node cost."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode) -> None:
        self.schema = schema
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }

    def requested(
        self, selection_set: SelectionSetNode | None, owner: GraphQLType, variables: dict[str, Any]
    ) -> int:
        total = 0
        for node, node_owner in _fields(selection_set, owner, self.fragments, self.schema):
            field_type = _field_type(node_owner, node.name.value)
            if field_type is None or is_leaf_type(get_named_type(field_type)):
                continue
            named = get_named_type(field_type)
            if _is_connection(field_type):
                per_node = self._connection_node_cost(node, named, variables)
                total += 2 + (_page_size(node, variables) or 0) * per_node
                continue
            inner = 1 + self.requested(node.selection_set, named, variables)
            if isinstance(_nullable(field_type), GraphQLList):
                inner *= _page_size(node, variables) or 1
            total += inner
        return total

    def _connection_node_cost(
        self,
        node: FieldNode,
        connection_type: GraphQLType,
        variables: dict[str, Any],
    ) -> int:
        best = 0
        for child, child_owner in _fields(
            node.selection_set, connection_type, self.fragments, self.schema
        ):
            name = child.name.value
            if name == "nodes":
                node_type = get_named_type(_field_type(child_owner, name) or connection_type)
                best = max(best, 1 + self.requested(child.selection_set, node_type, variables))
            elif name == "edges":
                edge_type = get_named_type(_field_type(child_owner, name) or connection_type)
                best = max(best, self.requested(child.selection_set, edge_type, variables))
        return max(best, 1)

    def actual(self, selection_set: SelectionSetNode | None, owner: GraphQLType, data: Any) -> int:
        """Same model over what was really returned (short pages and nulls cost less)."""
        if not isinstance(data, dict):
            return 0
        total = 0
        seen: set[str] = set()
        for node, node_owner in _fields(selection_set, owner, self.fragments, self.schema):
            key = node.alias.value if node.alias else node.name.value
            field_type = _field_type(node_owner, node.name.value)
            if key in seen or field_type is None or is_leaf_type(get_named_type(field_type)):
                continue
            seen.add(key)
            value = data.get(key)
            named = get_named_type(field_type)
            if value is None:
                continue
            if _is_connection(field_type) and isinstance(value, dict):
                total += 2 + self._actual_connection(node, named, value)
            elif isinstance(value, list):
                total += sum(1 + self.actual(node.selection_set, named, item) for item in value)
            else:
                total += 1 + self.actual(node.selection_set, named, value)
        return total

    def _actual_connection(
        self, node: FieldNode, connection_type: GraphQLType, value: dict[str, Any]
    ) -> int:
        best = 0
        for child, child_owner in _fields(
            node.selection_set, connection_type, self.fragments, self.schema
        ):
            key = child.alias.value if child.alias else child.name.value
            items = value.get(key)
            if not isinstance(items, list):
                continue
            child_type = get_named_type(
                _field_type(child_owner, child.name.value) or connection_type
            )
            if child.name.value == "nodes":
                best = max(
                    best, sum(1 + self.actual(child.selection_set, child_type, i) for i in items)
                )
            elif child.name.value == "edges":
                best = max(
                    best, sum(self.actual(child.selection_set, child_type, i) for i in items)
                )
        return best


# --- throttle ------------------------------------------------------------------------------


class CostBucket:
    """Leaky bucket of query points refilled continuously at `restore_rate` per second."""

    def __init__(
        self, size: float, restore_rate: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = size
        self.restore_rate = restore_rate
        self._clock = clock
        self._available = size
        self._at = clock()

    def available(self) -> float:
        now = self._clock()
        self._available = min(self.size, self._available + (now - self._at) * self.restore_rate)
        self._at = now
        return self._available

    def take(self, points: float) -> bool:
        if points > self.available():
            return False
        self._available -= points
        return True

    def give_back(self, points: float) -> None:
        self._available = min(self.size, self.available() + points)

    def status(self) -> dict[str, float | int]:
        return {
            "maximumAvailable": float(self.size),
            "currentlyAvailable": int(self.available()),
            "restoreRate": float(self.restore_rate),
        }


# --- simulator -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRequest:
    document: DocumentNode
    operation: OperationDefinitionNode
    variables: dict[str, Any]
    requested_cost: int
    version: str

    @property
    def is_mutation(self) -> bool:
        return self.operation.operation == OperationType.MUTATION


MAX_CHECKED_DOCUMENTS = 512
"""Distinct query texts remembered as checked; a fuzzing client cannot grow it without end."""


class ShopifySimulator:
    """In-memory Shopify shop behind the real Admin GraphQL schema.

    Drive it in-process with `httpx.ASGITransport(app=sim.app)`. `throttled_count` counts the
    THROTTLED answers; helper methods act behind giftsync's back (a shopper paying elsewhere).
    """

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        bucket_size: int = 1000,
        restore_rate: float = 100.0,
        access_token: str | None = "shpat_sandbox_token",  # noqa: S107 (a sandbox default)
        shop_domain: str = "giftsync-sandbox.myshopify.com",
        currency: str = "AUD",
        clock: Callable[[], float] = time.monotonic,
        supported_versions: tuple[str, ...] = SUPPORTED_VERSIONS,
        client_id: str = SANDBOX_CLIENT_ID,
        client_secret: str = SANDBOX_CLIENT_SECRET,
        token_lifetime: float = TOKEN_LIFETIME,
        token_clock: Callable[[], float] = time.time,
    ) -> None:
        """`access_token` is a legacy app's static token (None: only granted tokens work);
        `token_lifetime` and `token_clock` let tests expire granted tokens quickly."""
        self.faults = faults or Faults()
        self.shop = ShopState(currency, shop_domain)
        self.bucket = CostBucket(bucket_size, restore_rate, clock)
        self.shop_domain = shop_domain
        self.throttled_count = 0
        self.request_count = 0
        self.unauthorized_count = 0
        self.supported_versions = tuple(sorted(supported_versions))
        self.access = AppAccess(
            static_token=access_token,
            client_id=client_id,
            client_secret=client_secret,
            lifetime=token_lifetime,
            clock=token_clock,
        )
        self.answered_versions: list[str] = []
        """The version that answered each GraphQL request, in order."""
        self._checked: dict[tuple[str, str], DocumentNode | list[dict[str, Any]]] = {}
        self.app = self._build_app()

    @property
    def _access_token(self) -> str | None:
        return self.access.static_token

    def schema(self, version: str) -> GraphQLSchema:
        return admin_schema(version)

    # --- HTTP ---

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Shopify Admin GraphQL simulator", docs_url=None, redoc_url=None)
        app.include_router(faults_router(self.faults))
        app.include_router(self.access.router())

        @app.post("/admin/api/{version}/graphql.json")
        async def graphql_endpoint(version: str, request: Request) -> Response:
            served = served_version(version, self.supported_versions)
            if served is None:
                return JSONResponse({"errors": "Not Found"}, status_code=404)
            self.answered_versions.append(served)
            response = await self._handle(request, served)
            response.headers[VERSION_HEADER] = served
            return response

        @app.get("/_sim/bulk/{operation_id}.jsonl")
        async def bulk_download(operation_id: int) -> Response:
            op = self.shop.bulk_operations.get(operation_id)
            if op is None or op.status != "COMPLETED":
                return JSONResponse({"error": "not found"}, status_code=404)
            return StreamingResponse(_stream_lines(op.rows), media_type="application/jsonl")

        return app

    async def _handle(self, request: Request, version: str) -> Response:
        self.request_count += 1
        if not self.access.allows(request.headers.get("x-shopify-access-token")):
            self.unauthorized_count += 1
            return invalid_token_response(version)
        await self.faults.delay()
        if self.faults.draw_error():
            status = 502 if self.request_count % 2 else 503
            return JSONResponse(
                {"errors": "Service Unavailable"}, status_code=status, headers={"Retry-After": "1"}
            )
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return JSONResponse(
                {"errors": {"query": "Required parameter missing or invalid"}}, status_code=400
            )
        planned = self._plan(body, version)
        if isinstance(planned, list):
            return JSONResponse({"errors": planned})
        if planned.requested_cost > self.bucket.size:
            return JSONResponse(
                {
                    "errors": [
                        {
                            "message": (
                                f"Query cost is {planned.requested_cost}, which exceeds the "
                                f"single query max cost limit ({int(self.bucket.size)})."
                            ),
                            "extensions": {
                                "code": "MAX_COST_EXCEEDED",
                                "cost": planned.requested_cost,
                                "maxCost": int(self.bucket.size),
                            },
                        }
                    ]
                }
            )
        if self.faults.force_throttle or not self.bucket.take(planned.requested_cost):
            self.throttled_count += 1
            return JSONResponse(
                {
                    "errors": [
                        {
                            "message": "Throttled",
                            "extensions": {"code": "THROTTLED", "documentation": THROTTLE_DOCS},
                        }
                    ],
                    "extensions": {"cost": self._cost(planned.requested_cost, 0)},
                }
            )
        answer = self._execute(planned, str(request.base_url).rstrip("/"))
        if planned.is_mutation and self.faults.draw_lost_answer():
            await self.faults.hang()
        return JSONResponse(answer)

    def _checked_document(self, query: str, version: str) -> DocumentNode | list[dict[str, Any]]:
        """The query parsed and validated, or its errors; once per distinct query text.

        A client sends the same few documents over and over; validating each anew cost the
        simulator more CPU than giftsync spent on the whole request, on the machine they share.
        """
        known = self._checked.get((version, query))
        if known is not None:
            return known
        try:
            document = parse(query)
        except GraphQLError as exc:
            return [dict(exc.formatted)]
        errors = validate(self.schema(version), document)
        checked = [_shopify_error(e) for e in errors] if errors else document
        if len(self._checked) < MAX_CHECKED_DOCUMENTS:
            self._checked[(version, query)] = checked
        return checked

    def _plan(self, body: dict[str, Any], version: str) -> PlannedRequest | list[dict[str, Any]]:
        document = self._checked_document(body["query"], version)
        if isinstance(document, list):
            return [dict(error) for error in document]
        operation = get_operation_ast(document, body.get("operationName"))
        if operation is None:
            return [{"message": "An operation name is required"}]
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            return [{"message": "Variables must be an object"}]
        cost = self._requested_cost(document, operation, variables, version)
        return PlannedRequest(document, operation, variables, cost, version)

    def _requested_cost(
        self,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: dict[str, Any],
        version: str,
    ) -> int:
        schema = self.schema(version)
        calculator = CostCalculator(schema, document)
        if operation.operation == OperationType.MUTATION:
            return MUTATION_COST * len(operation.selection_set.selections)
        defaults = {
            d.variable.name.value: int(d.default_value.value)
            for d in operation.variable_definitions or ()
            if isinstance(d.default_value, IntValueNode)
        }
        query_type = schema.query_type
        assert query_type is not None
        return max(
            1, calculator.requested(operation.selection_set, query_type, {**defaults, **variables})
        )

    def _execute(self, planned: PlannedRequest, base_url: str) -> dict[str, Any]:
        root: Any
        schema = self.schema(planned.version)
        if planned.is_mutation:
            root = MutationRoot(
                self.shop,
                lambda query: self._start_bulk(query, base_url, planned.version),
                planned.version,
            )
        else:
            root = QueryRoot(self.shop, self._advance_bulk)
        result = execute_sync(
            schema,
            planned.document,
            root_value=root,
            context_value=ExecutionContext(),
            variable_values=planned.variables,
            operation_name=planned.operation.name.value if planned.operation.name else None,
            type_resolver=typename_of,
        )
        if result.data is None and all(e.path is None for e in result.errors or ()):
            # Refused before running (variables that do not fit their types): nothing executed,
            # nothing charged, and no `data` key, as for any other invalid request.
            self.bucket.give_back(planned.requested_cost)
            errors = [_shopify_error(e) for e in result.errors or ()]
            return {"errors": errors, "extensions": {"cost": self._cost(planned.requested_cost, 0)}}
        if planned.is_mutation:
            actual = planned.requested_cost
        else:
            calculator = CostCalculator(schema, planned.document)
            query_type = schema.query_type
            assert query_type is not None
            actual = max(
                1, calculator.actual(planned.operation.selection_set, query_type, result.data)
            )
        self.bucket.give_back(max(0, planned.requested_cost - actual))
        answer: dict[str, Any] = {}
        if result.errors:
            answer["errors"] = [e.formatted for e in result.errors]
        answer["data"] = result.data
        answer["extensions"] = {"cost": self._cost(planned.requested_cost, actual)}
        return answer

    def _cost(self, requested: int, actual: int) -> dict[str, Any]:
        return {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": self.bucket.status(),
        }

    # --- bulk export ---

    def _start_bulk(self, query: str, base_url: str, version: str) -> BulkOperationState:
        running = [op for op in self.shop.bulk_operations.values() if op.running]
        if len(running) >= BULK_QUERY_LIMIT:
            raise ShopError(
                "LIMIT_REACHED", "Bulk operations limit reached. Please try again later.", None
            )
        try:
            document = parse(query)
        except GraphQLError as exc:
            raise ShopError("INVALID", f"Invalid bulk query: {exc.message}", ["query"]) from exc
        errors = validate(self.schema(version), document)
        if errors:
            raise ShopError("INVALID", f"Invalid bulk query: {errors[0].message}", ["query"])
        operation = get_operation_ast(document)
        if operation is None or operation.operation != OperationType.QUERY:
            raise ShopError("INVALID", "Bulk queries must be a single query operation", ["query"])
        op = BulkOperationState(
            id=self.shop.new_id(),
            query=query,
            status="CREATED",
            created_at=self.shop.now(),
            base_url=base_url,
            api_version=version,
        )
        self.shop.bulk_operations[op.id] = op
        return op

    def start_bulk_operation(self, query: str, base_url: str = "http://shopify.test") -> str:
        """Another bulk query of the app (an operator's, another replica's) starts now."""
        version = self.supported_versions[-1]
        return gid("BulkOperation", self._start_bulk(query, base_url, version).id)

    def _advance_bulk(self, op: BulkOperationState) -> None:
        """Each look at a running operation moves it one step: CREATED -> RUNNING -> COMPLETED."""
        if op.status == "CREATED":
            op.status = "RUNNING"
        elif op.status == "RUNNING":
            self._complete_bulk(op)

    def _complete_bulk(self, op: BulkOperationState) -> None:
        result = execute_sync(
            self.schema(op.api_version or self.supported_versions[-1]),
            parse(op.query),
            root_value=QueryRoot(self.shop, lambda _op: None),
            context_value=ExecutionContext(bulk=True),
            type_resolver=typename_of,
        )
        rows: list[dict[str, Any]] = []
        roots = 0
        for value in (result.data or {}).values():
            for node in _connection_nodes(value):
                roots += 1
                _flatten(node, None, rows)
        op.rows = [json.dumps(row, separators=(",", ":")) for row in rows]
        op.root_object_count = roots
        op.status = "COMPLETED"
        op.completed_at = self.shop.now()

    def finish_bulk_operations(self) -> None:
        """Completes any running bulk operation at once (as if Shopify were quick)."""
        for op in self.shop.bulk_operations.values():
            if op.running:
                self._complete_bulk(op)

    # --- helpers for tests and flows ---

    def create_customer(
        self,
        email: str | None = None,
        phone: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> str:
        return gid("Customer", self.shop.create_customer(email, phone, first_name, last_name).id)

    def create_gift_card(
        self,
        initial_value: Decimal,
        code: str | None = None,
        currency: str = "AUD",
        source: str = "api_client",
        customer_email: str | None = None,
        order_id: str | int | None = None,
    ) -> tuple[str, str]:
        customer_id = None
        if customer_email:
            customer = self.shop.customer_by_email(customer_email) or self.shop.create_customer(
                email=customer_email
            )
            customer_id = customer.id
        card = self.shop.create_gift_card(
            Decimal(initial_value),
            code=code,
            currency=currency,
            source=source,
            customer_id=customer_id,
            order_id=parse_gid(order_id, "Order"),
        )
        return gid("GiftCard", card.id), card.code

    def spend(
        self, card_id: str | int, amount: Decimal, note: str | None = "spent elsewhere"
    ) -> str:
        card = self.shop.card(card_id)
        txn = self.shop.move(card.id, "debit", Decimal(amount), card.currency, note=note)
        return gid("GiftCardDebitTransaction", txn.id)

    def card(self, card_id: str | int) -> dict[str, Any]:
        card = self.shop.card(card_id)
        return {
            "id": gid("GiftCard", card.id),
            "legacy_id": card.id,
            "code": card.code,
            "last_characters": card.last_characters,
            "balance": card.balance,
            "initial_value": card.initial_value,
            "currency": card.currency,
            "enabled": card.enabled,
            "deactivated_at": card.deactivated_at,
            "expires_on": card.expires_on,
            "note": card.note,
            "source": card.source,
            "customer_id": gid("Customer", card.customer_id) if card.customer_id else None,
            "order_id": gid("Order", card.order_id) if card.order_id else None,
            "created_at": card.created_at,
            "updated_at": card.updated_at,
            "notifications_sent": card.notifications_sent,
            "transactions": [
                {"kind": t.kind, "amount": t.amount, "note": t.note, "processed_at": t.processed_at}
                for t in card.transactions
            ],
        }

    def create_order(
        self,
        gift_card_payments: list[tuple[str, Decimal]] | list[tuple[str, Decimal, str]],
        gift_card_purchases: list[Decimal] | None = None,
        name: str | None = None,
        shipping_name: str | None = None,
        email: str | None = None,
    ) -> dict[str, Any]:
        """An order paid (fully or partly) with gift cards, as Shopify's checkout would make it.

        Returns the order's ids, the purchased cards, and the webhook payloads Shopify sends
        (`orders/paid` without transactions; one `order_transactions/create` per payment).
        A payment may name its transaction status (OrderTransactionStatus: SUCCESS, FAILURE,
        PENDING); only a successful gift card sale takes money off the card. Shopify's pages do
        not say when a pending gift card sale debits the card: here, when it succeeds
        (`settle_pending`), so a capture taken for a pending or failed sale shows as a loss.
        """
        shop = self.shop
        purchases = [Decimal(p) for p in gift_card_purchases or []]
        cards = [
            (
                shop.card(payment[0]),
                Decimal(payment[1]),
                payment[2] if len(payment) > 2 else "SUCCESS",
            )
            for payment in gift_card_payments
        ]
        for card, amount, status in cards:
            if status == "SUCCESS" and (not card.enabled or amount <= 0 or amount > card.balance):
                raise ValueError(f"gift card {card.id} cannot pay {amount}")
        customer = None
        if email:
            customer = shop.customer_by_email(email) or shop.create_customer(email=email)
        shop._order_number += 1
        order = OrderState(
            id=shop.new_id(),
            name=name or f"#{shop._order_number}",
            email=email,
            customer_id=customer.id if customer else None,
            shipping_name=shipping_name,
            currency=shop.currency,
            created_at=shop.now(),
        )
        paid_by_cards = sum((amount for _, amount, _ in cards), Decimal(0))
        merchandise = max(paid_by_cards - sum(purchases, Decimal(0)), Decimal(0))
        if merchandise > 0:
            order.line_items.append(
                LineItemState(shop.new_id(), "Sandbox T-shirt", 1, merchandise, False)
            )
        for price in purchases:
            order.line_items.append(
                LineItemState(shop.new_id(), f"Gift card {price:.2f}", 1, price, True)
            )
        shop.orders[order.id] = order
        for card, amount, status in cards:
            if status == "SUCCESS":
                shop.move(card.id, "debit", amount, card.currency, note=f"Order {order.name}")
            self._add_order_txn(order, "SALE", amount, card, None, status=status)
        rest = sum((i.price for i in order.line_items), Decimal(0)) - paid_by_cards
        if rest > 0:
            # Gift cards cannot pay for gift cards; the shopper paid the rest another way.
            self._add_order_txn(order, "SALE", rest, None, None)
        purchased = [
            self.create_gift_card(
                price,
                currency=shop.currency,
                source="purchased",
                customer_email=email,
                order_id=order.id,
            )
            for price in purchases
        ]
        return {
            "id": gid("Order", order.id),
            "legacy_id": order.id,
            "name": order.name,
            "transaction_ids": [gid("OrderTransaction", t.id) for t in order.transactions],
            "purchased_gift_cards": [
                {"id": card_gid, "code": code} for card_gid, code in purchased
            ],
            "webhooks": {
                "orders/paid": self._order_payload(order),
                "order_transactions/create": [
                    self._transaction_payload(t) for t in order.transactions
                ],
            },
        }

    def refund_to_gift_card(
        self, order_id: str | int, card_id: str | int, amount: Decimal
    ) -> dict[str, Any]:
        """A refund of part of an order back onto a gift card (credits the card)."""
        shop = self.shop
        order = shop.orders[parse_gid(order_id, "Order") or 0]
        card = shop.card(card_id)
        amount = Decimal(amount)
        shop.move(card.id, "credit", amount, card.currency, note=f"Refund {order.name}")
        parent = next(
            (
                t
                for t in order.transactions
                if t.kind == "SALE" and t.receipt.get("gift_card_id") == card.id
            ),
            None,
        )
        txn = self._add_order_txn(order, "REFUND", amount, card, parent.id if parent else None)
        refund_id = shop.new_id()
        payload = self._transaction_payload(txn)
        return {
            "transaction_id": gid("OrderTransaction", txn.id),
            "webhooks": {
                "refunds/create": {
                    "id": refund_id,
                    "order_id": order.id,
                    "created_at": iso(txn.created_at),
                    "processed_at": iso(txn.created_at),
                    "note": None,
                    "refund_line_items": [],
                    "transactions": [payload],
                    "admin_graphql_api_id": gid("Refund", refund_id),
                },
                "order_transactions/create": [payload],
            },
        }

    def settle_pending(self, txn_id: str | int, *, success: bool) -> dict[str, Any]:
        """A pending gift card sale ends: it debits the card only if it succeeds (and the card
        can still pay; a deactivated card cannot). Returns the `order_transactions/create` body."""
        txn = self.shop.order_transactions[parse_gid(txn_id, "OrderTransaction") or 0]
        if txn.status != "PENDING":
            raise ValueError(f"transaction {txn.id} is {txn.status}, not PENDING")
        card = self.shop.card(txn.receipt["gift_card_id"])
        if success and card.enabled and txn.amount <= card.balance:
            order = self.shop.orders[txn.order_id]
            self.shop.move(card.id, "debit", txn.amount, card.currency, note=f"Order {order.name}")
            txn.status = "SUCCESS"
        else:
            txn.status = "FAILURE"
        return self._transaction_payload(txn)

    def _add_order_txn(
        self,
        order: OrderState,
        kind: str,
        amount: Decimal,
        card: GiftCardState | None,
        parent_id: int | None,
        *,
        status: str = "SUCCESS",
    ) -> OrderTxnState:
        txn = OrderTxnState(
            id=self.shop.new_id(),
            order_id=order.id,
            kind=kind,
            status=status,
            gateway="gift_card" if card else "manual",
            amount=amount,
            currency=card.currency if card else order.currency,
            receipt=(
                {"gift_card_id": card.id, "gift_card_last_characters": card.last_characters}
                if card
                else {}
            ),
            parent_id=parent_id,
            created_at=self.shop.now(),
        )
        order.transactions.append(txn)
        self.shop.order_transactions[txn.id] = txn
        return txn

    def _order_payload(self, order: OrderState) -> dict[str, Any]:
        total = sum((i.price * i.quantity for i in order.line_items), Decimal(0))
        customer = self.shop.customers.get(order.customer_id or 0)
        shipping = None
        if order.shipping_name:
            first, _, last = order.shipping_name.partition(" ")
            shipping = {
                "name": order.shipping_name,
                "first_name": first,
                "last_name": last or None,
                "address1": "1 Sandbox Street",
                "city": "Melbourne",
                "province_code": "VIC",
                "country_code": "AU",
                "zip": "3000",
            }
        return {
            "id": order.id,
            "admin_graphql_api_id": gid("Order", order.id),
            "name": order.name,
            "email": order.email,
            "created_at": iso(order.created_at),
            "currency": order.currency,
            "financial_status": "paid",
            "total_price": f"{total:.2f}",
            "payment_gateway_names": sorted({t.gateway for t in order.transactions}),
            "customer": {
                "id": customer.id,
                "email": customer.email,
                "admin_graphql_api_id": gid("Customer", customer.id),
            }
            if customer
            else None,
            "shipping_address": shipping,
            "line_items": [
                {
                    "id": item.id,
                    "admin_graphql_api_id": gid("LineItem", item.id),
                    "title": item.title,
                    "name": item.title,
                    "quantity": item.quantity,
                    "price": f"{item.price:.2f}",
                    "gift_card": item.is_gift_card,
                    "requires_shipping": not item.is_gift_card,
                }
                for item in order.line_items
            ],
        }

    def _transaction_payload(self, txn: OrderTxnState) -> dict[str, Any]:
        return {
            "id": txn.id,
            "admin_graphql_api_id": gid("OrderTransaction", txn.id),
            "order_id": txn.order_id,
            "kind": txn.kind.lower(),
            "status": txn.status.lower(),
            "gateway": txn.gateway,
            "amount": f"{txn.amount:.2f}",
            "currency": txn.currency,
            "parent_id": txn.parent_id,
            "created_at": iso(txn.created_at),
            "processed_at": iso(txn.created_at),
            "test": False,
            "error_code": None,
            "authorization": None,
            "receipt": dict(txn.receipt),
        }

    def seed_demo(self) -> list[str]:
        lines: list[str] = []
        card_id, code = self.create_gift_card(
            Decimal("50.00"), code="demofull00000001", customer_email="demo.shopper@example.com"
        )
        lines.append(f"Shopify gift card {code} balance 50.00 AUD ({card_id})")
        card_id, code = self.create_gift_card(Decimal("100.00"), code="demopartial000002")
        self.spend(card_id, Decimal("30.00"))
        lines.append(f"Shopify gift card {code} balance 70.00 AUD, partly spent ({card_id})")
        card_id, code = self.create_gift_card(Decimal("20.00"), code="demooff000000003")
        self.shop.deactivate(card_id)
        lines.append(f"Shopify gift card {code} deactivated ({card_id})")
        if self._access_token is not None:
            lines.append(
                f"Shopify access token for the sandbox: X-Shopify-Access-Token={self._access_token}"
            )
        lines.append(
            "Shopify client credentials for the sandbox: "
            f"SHOPIFY_CLIENT_ID={self.access.client_id} (secret: {self.access.client_secret}), "
            f"API versions {', '.join(self.supported_versions)}"
        )
        return lines


def _shopify_error(error: GraphQLError) -> dict[str, Any]:
    formatted = dict(error.formatted)
    formatted.setdefault("extensions", {"code": "GRAPHQL_VALIDATION_FAILED"})
    return formatted


def _connection_nodes(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        return []
    if isinstance(value.get("edges"), list):
        return [
            e["node"]
            for e in value["edges"]
            if isinstance(e, dict) and isinstance(e.get("node"), dict)
        ]
    if isinstance(value.get("nodes"), list):
        return [n for n in value["nodes"] if isinstance(n, dict)]
    return []


def _flatten(node: dict[str, Any], parent_id: str | None, rows: list[dict[str, Any]]) -> None:
    """One JSONL row per object; nested connections follow as rows carrying `__parentId`."""
    row: dict[str, Any] = {}
    children: list[dict[str, Any]] = []
    for key, value in node.items():
        if isinstance(value, dict) and ("edges" in value or "nodes" in value):
            children.extend(_connection_nodes(value))
        else:
            row[key] = value
    if parent_id is not None:
        row["__parentId"] = parent_id
    rows.append(row)
    own_id = node.get("id")
    for child in children:
        _flatten(child, own_id if isinstance(own_id, str) else parent_id, rows)


async def _stream_lines(rows: list[str]) -> AsyncIterator[bytes]:
    chunk: list[str] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= 100:
            yield ("\n".join(chunk) + "\n").encode()
            chunk = []
            await asyncio.sleep(0)
    if chunk:
        yield ("\n".join(chunk) + "\n").encode()
