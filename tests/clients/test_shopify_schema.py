"""Every GraphQL document the Shopify client can send is valid against the real 2025-01 schema."""

from __future__ import annotations

import ast
import gzip
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import graphql
import pytest

import app.clients.shopify as shopify_package
from app.clients.shopify.queries import ALL_OPERATIONS, BULK_GIFT_CARDS_QUERY, MUTATIONS

REPO = Path(__file__).resolve().parents[2]
SHARED_SCHEMA = REPO.parent / "shared" / "shopify" / "admin_schema_2025-01.json.gz"
BUNDLED_SCHEMA = REPO / "app" / "sandbox" / "data" / "admin_schema_2025-01.json.gz"


@cache
def load_schema() -> graphql.GraphQLSchema:
    path = SHARED_SCHEMA if SHARED_SCHEMA.exists() else BUNDLED_SCHEMA
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        introspection = json.load(handle)
    schema = graphql.build_client_schema(introspection["data"])
    # Shopify's own schema breaks a deprecation rule graphql-core 3.3 checks; the schema is
    # Shopify's word, so mark it validated and check only our documents against it.
    schema._validation_errors = []  # type: ignore[attr-defined]
    return schema


def variable_errors(document: str, variables: dict[str, Any]) -> list[str]:
    """Problems coercing `variables` into the operation's declared variables (names, types)."""
    from graphql.execution.values import get_variable_values

    parsed = graphql.parse(document)
    operations = [d for d in parsed.definitions if isinstance(d, graphql.OperationDefinitionNode)]
    result = get_variable_values(load_schema(), operations[0].variable_definitions or (), variables)
    return [error.message for error in result] if isinstance(result, list) else []


@pytest.mark.parametrize("name", sorted(ALL_OPERATIONS))
def test_document_is_valid_against_the_admin_schema(name: str) -> None:
    errors = graphql.validate(load_schema(), graphql.parse(ALL_OPERATIONS[name]))
    assert [error.message for error in errors] == []


def test_bulk_export_query_is_valid_against_the_admin_schema() -> None:
    """Sent as a string for Shopify to run, so it is checked here rather than as an operation."""
    errors = graphql.validate(load_schema(), graphql.parse(BULK_GIFT_CARDS_QUERY))
    assert [error.message for error in errors] == []


@pytest.mark.parametrize("name", sorted(ALL_OPERATIONS))
def test_document_holds_one_operation_named_like_its_key(name: str) -> None:
    parsed = graphql.parse(ALL_OPERATIONS[name])
    operations = [d for d in parsed.definitions if isinstance(d, graphql.OperationDefinitionNode)]
    assert len(operations) == 1
    assert operations[0].name is not None and operations[0].name.value == name
    is_mutation = operations[0].operation is graphql.OperationType.MUTATION
    assert is_mutation == (name in MUTATIONS)


def test_validation_catches_a_wrong_field() -> None:
    # Proves the check above can fail: the schema is loaded and really consulted.
    broken = ALL_OPERATIONS["GiftCardGet"].replace("lastCharacters", "lastFour")
    assert graphql.validate(load_schema(), graphql.parse(broken))


def test_variable_check_catches_a_wrong_input_name() -> None:
    document = ALL_OPERATIONS["GiftCardCredit"]
    good = {
        "id": "gid://shopify/GiftCard/1",
        "creditInput": {"creditAmount": {"amount": "1.00", "currencyCode": "AUD"}},
    }
    bad = {"id": "gid://shopify/GiftCard/1", "creditInput": {"amount": "1.00"}}
    assert variable_errors(document, good) == []
    assert variable_errors(document, bad)


def test_client_modules_hold_no_inline_graphql() -> None:
    """By construction the client sends `ALL_OPERATIONS[name]` only; no stray document exists."""
    package = Path(shopify_package.__file__).parent
    modules = [path for path in package.glob("*.py") if path.name != "queries.py"]
    assert {path.name for path in modules} >= {"client.py", "graphql.py", "bulk.py"}
    looks_like_graphql = re.compile(r"^\s*(query|mutation|subscription|fragment)\b[^\n]*\{", re.M)
    literals = [
        node.value
        for path in modules
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    assert [text for text in literals if looks_like_graphql.search(text)] == []
