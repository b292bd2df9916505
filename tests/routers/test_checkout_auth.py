"""Who may call the checkout endpoints (session tokens, app proxy signatures) and their CORS.

Each refusal is a 401 problem and writes nothing: no shadow card, no PIN attempt, no hold.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest

from app.routers.checkout_auth import proxy_signature
from app.settings import Settings
from tests.conftest import make_settings
from tests.shop import CARD, PIN, Shop

SHOP = "giftsync-test.myshopify.com"
SECRET = "shpss_test_client_secret_0123456789abcdef"


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        checkout_auth="shopify",
        shopify_shop_domain=SHOP,
        shopify_api_secret=SECRET,
        shopify_client_id="client-id-1",
    )


def session_token(**changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": f"https://{SHOP}/admin",
        "dest": f"https://{SHOP}",
        "aud": "client-id-1",
        "sub": "gid://shopify/Customer/1",
        "exp": now + 60,
        "nbf": now - 5,
        "iat": now - 5,
        "jti": "abc",
    }
    key = changes.pop("key", SECRET)
    claims.update(changes)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="HS256")


def unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def tampered() -> str:
    header, payload, signature = session_token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["dest"] = "https://another.myshopify.com"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def body(token: str = "c-1") -> dict[str, Any]:
    return {"viiCardNumber": CARD, "viiCardPin": PIN, "cartTotal": "10.00", "checkoutToken": token}


async def nothing_written(shop: Shop) -> None:
    for table in ("shadow_cards", "pin_failures", "gift_cards"):
        assert await shop.rows(f"SELECT 1 FROM {table}") == []
    assert shop.vii.open_holds(CARD) == {}


async def test_a_valid_session_token_applies(shop: Shop) -> None:
    answer = await shop.http.post(
        "/check-balance", json=body(), headers={"Authorization": f"Bearer {session_token()}"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer ",
        "Basic abc",
        f"Bearer {session_token(exp=int(time.time()) - 60)}",
        f"Bearer {session_token(nbf=int(time.time()) + 60)}",
        f"Bearer {session_token(dest='https://another.myshopify.com')}",
        f"Bearer {session_token(key='another-secret-0123456789abcdefgh')}",
        f"Bearer {session_token(dest=None)}",
        f"Bearer {unsigned({'dest': f'https://{SHOP}', 'exp': 2**40, 'nbf': 0})}",
        f"Bearer {tampered()}",
        "Bearer not.a.jwt",
    ],
    ids=[
        "missing",
        "empty",
        "not-bearer",
        "expired",
        "not-yet-valid",
        "wrong-shop",
        "wrong-key",
        "no-dest",
        "alg-none",
        "tampered",
        "garbage",
    ],
)
async def test_a_bad_session_token_is_401_and_writes_nothing(
    shop: Shop, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    answer = await shop.http.post("/check-balance", json=body(), headers=headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == "invalid_session_token"
    assert answer.headers["access-control-allow-origin"] == "*"
    await nothing_written(shop)
    released = await shop.http.post(
        "/check-balance/release",
        json={"checkoutToken": "c-1", "shopifyGiftCardCode": "abcdefgh1234"},
        headers=headers,
    )
    assert released.status_code == 401 and released.json()["code"] == "invalid_session_token"


async def test_the_caller_is_proved_before_the_body_is_judged(shop: Shop) -> None:
    for path in ("/check-balance", "/check-balance/release", "/proxy/check-balance"):
        answer = await shop.http.post(path, json={"cartTotal": "-1"})
        assert answer.status_code == 401, (path, answer.text)
    await nothing_written(shop)


async def test_a_theme_cart_token_with_its_key_applies_and_releases(shop: Shop) -> None:
    token = "Z2NwLXVzLWVhc3QxOjAxSkQ5?key=5f0c8e2a9b7d41e6"
    headers = {"Authorization": f"Bearer {session_token()}"}
    applied = await shop.http.post("/check-balance", json=body(token), headers=headers)
    assert applied.status_code == 200, applied.text
    code = applied.json()["shopifyGiftCardCode"]
    unknown = await shop.http.post(
        "/check-balance/release",
        json={"checkoutToken": token, "shopifyGiftCardCode": "abc"},
        headers=headers,
    )
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    released = await shop.http.post(
        "/check-balance/release",
        json={"checkoutToken": token, "shopifyGiftCardCode": code},
        headers=headers,
    )
    assert released.status_code == 200 and released.json() == {"released": True}


def test_the_token_leeway_is_ten_seconds() -> None:
    from app.routers.checkout_auth import verify_session_token

    settings = make_settings(shopify_shop_domain=SHOP, shopify_api_secret=SECRET)
    now = int(time.time())
    verify_session_token(settings, f"Bearer {session_token(exp=now - 5)}")
    with pytest.raises(Exception, match="not valid"):
        verify_session_token(settings, f"Bearer {session_token(exp=now - 30)}")


def proxy_query(**changes: Any) -> str:
    params: dict[str, str] = {
        "shop": SHOP,
        "logged_in_customer_id": "42",
        "path_prefix": "/apps/giftsync",
        "timestamp": str(int(time.time())),
    }
    key = changes.pop("key", SECRET)
    params.update({k: v for k, v in changes.items() if v is not None})
    for k in [k for k, v in changes.items() if v is None]:
        params.pop(k, None)
    pairs = list(params.items())
    signature = proxy_signature(pairs, key)
    return urlencode([*pairs, ("signature", signature)])


def test_the_proxy_signature_follows_shopifys_recipe() -> None:
    """shopify.dev's own example: parameters sorted, joined without separators, HMAC hex."""
    query = [
        ("extra", "1"),
        ("extra", "2"),
        ("shop", "shop-name.myshopify.com"),
        ("logged_in_customer_id", "1"),
        ("path_prefix", "/apps/awesome_reviews"),
        ("timestamp", "1317327555"),
    ]
    message = (
        "extra=1,2logged_in_customer_id=1path_prefix=/apps/awesome_reviews"
        "shop=shop-name.myshopify.comtimestamp=1317327555"
    )
    expected = hmac.new(b"hush", message.encode(), hashlib.sha256).hexdigest()
    assert proxy_signature(query, "hush") == expected


async def test_a_signed_proxy_call_applies(shop: Shop) -> None:
    answer = await shop.http.post(f"/proxy/check-balance?{proxy_query()}", json=body())
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert "access-control-allow-origin" not in answer.headers  # same origin, via Shopify


BAD_QUERIES: dict[str, Callable[[], str]] = {
    "unsigned": lambda: "",
    "old": lambda: proxy_query(timestamp=str(int(time.time()) - 120)),
    "future": lambda: proxy_query(timestamp=str(int(time.time()) + 120)),
    "wrong-shop": lambda: proxy_query(shop="another.myshopify.com"),
    "wrong-key": lambda: proxy_query(key="another-secret-0123456789abcdefgh"),
    "no-time": lambda: proxy_query(timestamp=None),
    "tampered": lambda: proxy_query().replace(
        "logged_in_customer_id=42", "logged_in_customer_id=43"
    ),
    "twice": lambda: proxy_query() + "&signature=00",
}


@pytest.mark.parametrize("case", sorted(BAD_QUERIES))
async def test_a_bad_proxy_signature_is_401_and_writes_nothing(shop: Shop, case: str) -> None:
    query = BAD_QUERIES[case]()  # built now, not at collection: the clock matters
    answer = await shop.http.post(f"/proxy/check-balance?{query}", json=body())
    assert answer.status_code == 401 and answer.json()["code"] == "invalid_proxy_signature"
    await nothing_written(shop)


async def test_proxy_pin_limits_follow_the_signed_customer_not_the_address(shop: Shop) -> None:
    for n in range(5):
        number = f"62800011111100{n:02d}"
        shop.vii.add_card(number, "1111", Decimal("10.00"))
        for _ in range(4):
            wrong = {**body(f"t{n}"), "viiCardNumber": number, "viiCardPin": "9999"}
            answer = await shop.http.post(
                f"/proxy/check-balance?{proxy_query(logged_in_customer_id='7')}", json=wrong
            )
            assert answer.status_code == 403
    refused = await shop.http.post(
        f"/proxy/check-balance?{proxy_query(logged_in_customer_id='7')}", json=body()
    )
    assert refused.status_code == 429 and refused.json()["code"] == "too_many_attempts"
    # Same address (Shopify's servers), another customer: not limited.
    other = await shop.http.post(
        f"/proxy/check-balance?{proxy_query(logged_in_customer_id='8')}", json=body()
    )
    assert other.status_code == 200


async def test_cors_preflight_is_answered_as_shopifys_library_does(shop: Shop) -> None:
    for path in ("/check-balance", "/check-balance/release"):
        answer = await shop.http.options(
            path,
            headers={
                "Origin": "https://extensions.shopifycdn.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert answer.status_code == 204
        assert answer.headers["access-control-allow-origin"] == "*"
        assert answer.headers["access-control-allow-methods"] == "POST"
        assert answer.headers["access-control-allow-headers"] == "Authorization, Content-Type"
        assert int(answer.headers["access-control-max-age"]) > 0
        assert answer.headers["access-control-expose-headers"] == "Retry-After"
        assert "access-control-allow-credentials" not in answer.headers


async def test_nothing_else_gets_cors(shop: Shop) -> None:
    for path in ("/healthz", "/internal/jobs", "/webhooks/shopify", "/proxy/check-balance"):
        answer = await shop.http.options(path, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in answer.headers, path
        assert answer.headers["x-content-type-options"] == "nosniff"
