"""Every GraphQL document the Shopify client sends is valid against Admin API 2026-07 and 2026-10,
and uses nothing deprecated in either: no field, argument, input field or enum value, in the
document or in the variables the client really sends (graphql-core's NoDeprecatedCustomRule
covers the document; `deprecated_variables` the JSON variables, which no validation rule sees).
"""

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
from graphql.validation import NoDeprecatedCustomRule, specified_rules

import app.clients.shopify as shopify_package
from app.clients.shopify.queries import ALL_OPERATIONS, BULK_GIFT_CARDS_QUERY, MUTATIONS

REPO = Path(__file__).resolve().parents[2]
SHARED_SCHEMAS = REPO.parent / "shared" / "shopify"
BUNDLED_SCHEMAS = REPO / "app" / "sandbox" / "data"
# The versions giftsync accepts (SHOPIFY_API_VERSION): 2026-07 and what came after it.
VERSIONS = ("2026-07", "2026-10")
STRICT_RULES = (*specified_rules, NoDeprecatedCustomRule)


@cache
def load_schema(version: str = "2026-07") -> graphql.GraphQLSchema:
    name = f"admin_{version}.json.gz"
    path = SHARED_SCHEMAS / name if (SHARED_SCHEMAS / name).exists() else BUNDLED_SCHEMAS / name
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        introspection = json.load(handle)
    schema = graphql.build_client_schema(introspection["data"])
    # Shopify's own schema breaks a deprecation rule graphql-core 3.3 checks; the schema is
    # Shopify's word, so mark it validated and check only our documents against it.
    schema._validation_errors = []  # type: ignore[attr-defined]
    return schema


def document_errors(document: str, version: str) -> list[str]:
    """Validation errors, deprecations included, of one document against one version."""
    errors = graphql.validate(load_schema(version), graphql.parse(document), STRICT_RULES)
    return [error.message for error in errors]


def _operation(document: str) -> graphql.OperationDefinitionNode:
    parsed = graphql.parse(document)
    return next(d for d in parsed.definitions if isinstance(d, graphql.OperationDefinitionNode))


def variable_errors(
    document: str, variables: dict[str, Any], version: str = "2026-07"
) -> list[str]:
    """Problems coercing `variables` into the operation's declared variables (names, types)."""
    from graphql.execution.values import get_variable_values

    definitions = _operation(document).variable_definitions or ()
    result = get_variable_values(load_schema(version), definitions, variables)
    return [error.message for error in result] if isinstance(result, list) else []


def deprecated_variables(document: str, variables: dict[str, Any], version: str) -> list[str]:
    """Deprecated input fields and enum values used inside `variables`."""
    schema = load_schema(version)
    found: list[str] = []
    for definition in _operation(document).variable_definitions or ():
        name = definition.variable.name.value
        declared = graphql.type_from_ast(schema, definition.type)
        if name in variables and declared is not None:
            _walk(declared, variables[name], f"${name}", found)
    return found


def _walk(declared: Any, value: Any, path: str, found: list[str]) -> None:
    named = graphql.get_nullable_type(declared)
    if value is None:
        return
    if isinstance(named, graphql.GraphQLList):
        for index, item in enumerate(value if isinstance(value, list) else [value]):
            _walk(named.of_type, item, f"{path}[{index}]", found)
    elif isinstance(named, graphql.GraphQLInputObjectType) and isinstance(value, dict):
        for key, item in value.items():
            field = named.fields.get(key)
            if field is None:
                continue
            if field.deprecation_reason:
                found.append(f"{path}.{key} is deprecated: {field.deprecation_reason}")
            _walk(field.type, item, f"{path}.{key}", found)
    elif isinstance(named, graphql.GraphQLEnumType) and isinstance(value, str):
        enum_value = named.values.get(value)
        if enum_value is not None and enum_value.deprecation_reason:
            found.append(f"{path} = {value} is deprecated: {enum_value.deprecation_reason}")


def request_problems(document: str, variables: dict[str, Any]) -> list[str]:
    """Everything wrong with one request the client sent, in every version giftsync accepts."""
    problems: list[str] = []
    for version in VERSIONS:
        problems += [f"{version}: {m}" for m in document_errors(document, version)]
        problems += [f"{version}: {m}" for m in variable_errors(document, variables, version)]
        problems += [f"{version}: {m}" for m in deprecated_variables(document, variables, version)]
    return problems


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(ALL_OPERATIONS))
def test_document_is_valid_and_undeprecated(name: str, version: str) -> None:
    assert document_errors(ALL_OPERATIONS[name], version) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_bulk_export_query_is_valid_and_undeprecated(version: str) -> None:
    """Sent as a string for Shopify to run, so it is checked here rather than as an operation."""
    assert document_errors(BULK_GIFT_CARDS_QUERY, version) == []


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
    assert document_errors(broken, "2026-07") != []


@pytest.mark.parametrize("version", VERSIONS)
def test_deprecation_check_catches_the_fields_2026_07_deprecated(version: str) -> None:
    """The three deprecations UPSTREAMS.md names are each caught, in the document or in the
    variables, so a document falling back to them fails the tests above."""
    old_customers = "query Old { customers(first: 1) { nodes { id email } } }"
    old_bulk = "query OldBulk { currentBulkOperation { id status } }"
    assert document_errors(old_customers, version) == [
        "The field Customer.email is deprecated. Use `defaultEmailAddress.emailAddress` instead."
    ]
    assert document_errors(old_bulk, version) == [
        "The field QueryRoot.currentBulkOperation is deprecated."
        " Use `bulkOperations` with status filter instead."
    ]
    old_create = {"input": {"initialValue": "5.00", "code": "abcd1234"}}
    assert deprecated_variables(ALL_OPERATIONS["GiftCardCreate"], old_create, version) == [
        "$input.initialValue is deprecated: Use `initialAmount` instead."
    ]
    old_webhook = {"topic": "ORDERS_PAID", "webhookSubscription": {"callbackUrl": "https://x"}}
    assert deprecated_variables(
        ALL_OPERATIONS["WebhookSubscriptionCreate"], old_webhook, version
    ) == ["$webhookSubscription.callbackUrl is deprecated: Use `uri` instead."]


def test_variable_check_catches_a_wrong_input_name() -> None:
    document = ALL_OPERATIONS["GiftCardCredit"]
    good = {
        "id": "gid://shopify/GiftCard/1",
        "creditInput": {"creditAmount": {"amount": "1.00", "currencyCode": "AUD"}},
    }
    bad = {"id": "gid://shopify/GiftCard/1", "creditInput": {"amount": "1.00"}}
    assert variable_errors(document, good) == []
    assert variable_errors(document, bad) != []


def test_client_modules_hold_no_inline_graphql() -> None:
    """By construction the client sends `ALL_OPERATIONS[name]` only; no stray document exists."""
    package = Path(shopify_package.__file__).parent
    modules = [path for path in package.glob("*.py") if path.name != "queries.py"]
    assert {path.name for path in modules} >= {"client.py", "graphql.py", "bulk.py", "webhooks.py"}
    looks_like_graphql = re.compile(r"^\s*(query|mutation|subscription|fragment)\b[^\n]*\{", re.M)
    literals = [
        node.value
        for path in modules
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    assert [text for text in literals if looks_like_graphql.search(text)] == []
