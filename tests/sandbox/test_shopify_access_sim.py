"""The Shopify simulator's API versions and access: what answers a version, the client
credentials grant, expired and revoked tokens, and `initialAmount` (2026-07)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.sandbox.shopify import ShopifySimulator
from app.sandbox.shopify_access import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET

STATIC = "shpat_static_test_token"
CREATE = """mutation($input: GiftCardCreateInput!) { giftCardCreate(input: $input) {
  giftCard { id initialValue { amount currencyCode } } userErrors { field message code } } }"""
COUNT = "{ giftCardsCount { count } }"
GRANT = {
    "grant_type": "client_credentials",
    "client_id": SANDBOX_CLIENT_ID,
    "client_secret": SANDBOX_CLIENT_SECRET,
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim_http(clock: Clock) -> AsyncIterator[tuple[ShopifySimulator, httpx.AsyncClient]]:
    sim = ShopifySimulator(access_token=STATIC, token_lifetime=600, token_clock=clock)
    transport = httpx.ASGITransport(app=sim.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as http:
        yield sim, http


async def post(
    http: httpx.AsyncClient,
    version: str,
    query: str,
    variables: dict[str, Any] | None = None,
    token: str = STATIC,
) -> httpx.Response:
    return await http.post(
        f"/admin/api/{version}/graphql.json",
        json={"query": query, "variables": variables or {}},
        headers={"X-Shopify-Access-Token": token},
    )


# --- versions ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2026-01", "2026-04", "2026-07", "2026-10"])
async def test_a_served_version_answers_as_itself(
    sim_http: tuple[ShopifySimulator, httpx.AsyncClient], version: str
) -> None:
    sim, http = sim_http
    response = await post(http, version, COUNT)
    assert response.status_code == 200
    assert response.headers["X-Shopify-API-Version"] == version
    assert sim.answered_versions == [version]


async def test_a_retired_version_is_answered_by_the_oldest_served(
    sim_http: tuple[ShopifySimulator, httpx.AsyncClient],
) -> None:
    sim, http = sim_http
    money = {"amount": "5.00", "currencyCode": "AUD"}
    # 2026-01 has no `initialAmount`: a client pinned to 2025-01 gets 2026-01's rules, silently
    # but for the header.
    refused = await post(http, "2025-01", CREATE, {"input": {"initialAmount": money}})
    assert refused.headers["X-Shopify-API-Version"] == "2026-01"
    assert "data" not in refused.json()
    assert "initialAmount" in refused.json()["errors"][0]["message"]
    accepted = await post(http, "2025-01", CREATE, {"input": {"initialValue": "5.00"}})
    assert accepted.headers["X-Shopify-API-Version"] == "2026-01"
    assert accepted.json()["data"]["giftCardCreate"]["userErrors"] == []
    assert sim.answered_versions == ["2026-01", "2026-01"]


@pytest.mark.parametrize("version", ["2026-02", "unstable-ish", "2027-01"])
async def test_no_such_version_is_not_found(
    sim_http: tuple[ShopifySimulator, httpx.AsyncClient], version: str
) -> None:
    _sim, http = sim_http
    response = await post(http, version, COUNT)
    assert response.status_code == 404


async def test_when_2026_07_retires_it_is_answered_by_2026_10() -> None:
    sim = ShopifySimulator(access_token=STATIC, supported_versions=("2026-10",))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url="http://shop.test"
    ) as http:
        response = await post(http, "2026-07", COUNT)
        refused = await post(http, "2026-07", COUNT, token="nope")
    assert response.headers["X-Shopify-API-Version"] == "2026-10"
    assert (refused.status_code, refused.headers["X-Shopify-API-Version"]) == (401, "2026-10")


# --- initialAmount (2026-07) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("card_input", "expected"),
    [
        ({"initialAmount": {"amount": "7.5", "currencyCode": "AUD"}}, "7.50"),
        # Deprecated, not removed: 2026-07 still takes `initialValue`.
        ({"initialValue": "7.5"}, "7.50"),
        (
            {"initialAmount": {"amount": "7.5", "currencyCode": "AUD"}, "initialValue": "7.5"},
            ("INVALID", ["input", "initialAmount"]),
        ),
        ({"code": "nothinggiven1"}, ("MISSING_ARGUMENT", ["input", "initialAmount"])),
        (
            {"initialAmount": {"amount": "7.5", "currencyCode": "NZD"}},
            ("INVALID", ["input", "initialAmount", "currencyCode"]),
        ),
    ],
)
async def test_initial_amount(
    sim_http: tuple[ShopifySimulator, httpx.AsyncClient],
    card_input: dict[str, Any],
    expected: str | tuple[str, list[str]],
) -> None:
    sim, http = sim_http
    body = (await post(http, "2026-07", CREATE, {"input": card_input})).json()
    payload = body["data"]["giftCardCreate"]
    if isinstance(expected, str):
        assert payload["userErrors"] == []
        assert payload["giftCard"]["initialValue"] == {"amount": expected, "currencyCode": "AUD"}
    else:
        code, field_path = expected
        assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [(code, field_path)]
        assert sim.shop.gift_cards == {}


# --- the client credentials grant ------------------------------------------------------------


async def test_grant_form_encoded_and_json_and_the_token_works(
    sim_http: tuple[ShopifySimulator, httpx.AsyncClient],
) -> None:
    sim, http = sim_http
    by_form = await http.post("/admin/oauth/access_token", data=GRANT)
    by_json = await http.post("/admin/oauth/access_token", json=GRANT)
    for answer in (by_form, by_json):
        assert answer.status_code == 200
        body = answer.json()
        assert set(body) == {"access_token", "scope", "expires_in"}
        assert body["expires_in"] == 600
        assert "write_gift_cards" in body["scope"].split(",")
        assert body["access_token"].startswith("shpat_")
    assert by_form.json()["access_token"] != by_json.json()["access_token"]
    assert sim.access.tokens_issued == 2
    used = await post(http, "2026-07", COUNT, token=by_form.json()["access_token"])
    assert used.status_code == 200


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"client_secret": "wrong-secret-wrong-secret"}, "invalid_client"),
        ({"client_id": "someone-else"}, "invalid_client"),
        ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
    ],
)
async def test_grant_refused(
    sim_http: tuple[ShopifySimulator, httpx.AsyncClient], change: dict[str, str], error: str
) -> None:
    sim, http = sim_http
    answer = await http.post("/admin/oauth/access_token", data={**GRANT, **change})
    assert answer.status_code == 400
    assert answer.json()["error"] == error
    assert (sim.access.tokens_issued, sim.access.refused_grants) == (0, 1)


async def test_a_granted_token_expires_after_its_lifetime(
    sim_http: tuple[ShopifySimulator, httpx.AsyncClient], clock: Clock
) -> None:
    _sim, http = sim_http
    token = (await http.post("/admin/oauth/access_token", data=GRANT)).json()["access_token"]
    clock.now += 599
    assert (await post(http, "2026-07", COUNT, token=token)).status_code == 200
    clock.now += 1
    expired = await post(http, "2026-07", COUNT, token=token)
    assert expired.status_code == 401
    assert expired.json() == {
        "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
    }


async def test_expire_tokens_kills_granted_tokens_only(
    sim_http: tuple[ShopifySimulator, httpx.AsyncClient],
) -> None:
    sim, http = sim_http
    token = (await http.post("/admin/oauth/access_token", data=GRANT)).json()["access_token"]
    sim.access.expire_tokens()
    assert (await post(http, "2026-07", COUNT, token=token)).status_code == 401
    assert (await post(http, "2026-07", COUNT)).status_code == 200


async def test_a_revoked_app_has_no_token_and_gets_none(
    sim_http: tuple[ShopifySimulator, httpx.AsyncClient],
) -> None:
    sim, http = sim_http
    token = (await http.post("/admin/oauth/access_token", data=GRANT)).json()["access_token"]
    sim.access.revoke_app()
    assert (await post(http, "2026-07", COUNT, token=token)).status_code == 401
    assert (await post(http, "2026-07", COUNT)).status_code == 401
    refused = await http.post("/admin/oauth/access_token", data=GRANT)
    assert (refused.status_code, refused.json()["error"]) == (400, "app_not_installed")
    sim.access.reinstall_app()
    fresh = (await http.post("/admin/oauth/access_token", data=GRANT)).json()["access_token"]
    assert (await post(http, "2026-07", COUNT, token=fresh)).status_code == 200
