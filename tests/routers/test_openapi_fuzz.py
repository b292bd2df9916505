"""Schemathesis against giftsync's own OpenAPI document, one test per operation.

Each operation gets a bounded, derandomised run of generated requests (valid ones, then ones
that break the schema) against the app with the Vii and Shopify simulators wired in and the
admin token on every request. Every answer must be: no 5xx, a status and content type the
document declares, a body matching its schema, and on 4xx an RFC 9457 problem body.
Schemathesis' `negative_data_rejection` is not used: unknown fields and query parameters are
ignored by design (DESIGN 3), so a schema-violating request may rightly succeed.

Hypothesis is synchronous, so it runs in a worker thread and hands each request to the test's
event loop, where the app, its database pool and the simulators live.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import Failure, FailureGroup

from app.main import app as documented_app
from app.main import create_app
from app.runtime import Runtime
from app.worker import Worker
from tests.wiring import shadow_upstreams

ADMIN_TOKEN = "test-admin-oua6Df4cIZNy6hMFDLFrsQyJmY2nJnF3"  # make_settings' admin_token
BASE_URL = "http://giftsync.test"
POSITIVE_EXAMPLES = 30
NEGATIVE_EXAMPLES = 20
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}

SCHEMA = schemathesis.openapi.from_dict(documented_app.openapi()).exclude(
    path_regex=r"^/(demo|_sim|static)(/|$)"
)
OPERATIONS = sorted(
    result.ok().label for result in SCHEMA.get_all_operations() if result.ok() is not None
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _operation(label: str) -> Any:
    method, path = label.split(" ", 1)
    return SCHEMA[path][method]


def assert_problem_body(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    assert response.headers.get("content-type", "").startswith("application/problem+json"), (
        f"{response.status_code} without a problem body: {response.text[:200]}"
    )
    body = response.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == response.status_code, body


def _httpx_kwargs(case: Any) -> dict[str, Any]:
    """Schemathesis speaks `requests`; the same request as httpx keyword arguments."""
    sent = case.as_transport_kwargs(
        base_url=BASE_URL, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    kwargs: dict[str, Any] = {
        "method": sent["method"],
        "url": sent["url"],
        "headers": sent.get("headers") or {},
        "params": sent.get("params") or None,
        "cookies": sent.get("cookies") or None,
    }
    if "json" in sent:
        kwargs["json"] = sent["json"]
    elif isinstance(sent.get("data"), bytes | str):
        kwargs["content"] = sent["data"]
    elif sent.get("data") is not None:
        kwargs["data"] = sent["data"]
    return kwargs


@pytest.fixture
async def http(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with shadow_upstreams(runtime):
        # A fresh worker heartbeat, so /readyz can answer 200 (its 503 is tested elsewhere).
        await Worker(runtime.sessions, {}).beat()
        app = create_app(runtime, run_worker=False)
        # A 500 must come back as a response for the checks to judge, not as an exception.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client


def _run(label: str, mode: GenerationMode, examples: int, send: Any, failures: list[str]) -> None:
    operation = _operation(label)

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def probe(case: Any) -> None:
        kwargs = _httpx_kwargs(case)
        response: httpx.Response = send(kwargs)
        try:
            case.validate_response(response, checks=CHECKS)
            assert_problem_body(response)
        except (AssertionError, Failure, FailureGroup) as error:
            failures.append(
                f"{mode.value} {label}: {response.status_code} {response.text[:300]!r}\n"
                f"  request: {_reproducer(kwargs)}\n  {str(error).strip()[:600]}"
            )

    try:
        probe()
    except Unsatisfiable:
        # No parameters and no body: there is nothing to break.
        if mode is not GenerationMode.NEGATIVE:
            raise


def _reproducer(kwargs: dict[str, Any]) -> str:
    shown = {k: v for k, v in kwargs.items() if v not in (None, {}) and k != "headers"}
    headers = {
        k: v
        for k, v in (kwargs.get("headers") or {}).items()
        if k.lower() not in {"user-agent", "accept-encoding", "accept", "connection"}
        and not k.lower().startswith("x-schemathesis")
    }
    return f"{shown} headers={headers}"


@pytest.mark.parametrize("label", OPERATIONS)
async def test_operation_honours_its_documented_contract(
    http: httpx.AsyncClient, label: str
) -> None:
    loop = asyncio.get_running_loop()

    def send(kwargs: dict[str, Any]) -> httpx.Response:
        return asyncio.run_coroutine_threadsafe(http.request(**kwargs), loop).result(timeout=30)

    failures: list[str] = []
    await asyncio.to_thread(_run, label, GenerationMode.POSITIVE, POSITIVE_EXAMPLES, send, failures)
    await asyncio.to_thread(_run, label, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES, send, failures)
    assert not failures, f"{len(failures)} contract failures:\n" + "\n".join(failures[:10])


def test_the_fuzzed_document_covers_every_public_route() -> None:
    """A route missing from the document would escape the fuzzing above."""
    assert {
        "GET /healthz",
        "GET /readyz",
        "POST /webhooks/shopify",
        "POST /check-balance",
        "POST /check-balance/release",
    } <= set(OPERATIONS)
    assert any(label.split(" ", 1)[1].startswith("/internal/") for label in OPERATIONS)
    assert not any("/demo" in label or "/_sim" in label for label in OPERATIONS)
