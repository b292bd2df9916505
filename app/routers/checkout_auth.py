"""Who may call the checkout endpoints, as Shopify stands in December 2026 (DESIGN 3).

- A checkout UI extension sends `Authorization: Bearer <session token>`: a JWT, HS256, signed
  with the app's client secret (`SHOPIFY_API_SECRET`). Its signature, `exp` and `nbf` (10 s
  leeway) and `dest` host (the shop) are checked; `aud` is not, as Shopify's own library skips
  it for checkout requests (Shopify/shopify-app-js, `authenticate.public.checkout`).
- A theme app block calls through the app proxy: Shopify adds `shop`, `logged_in_customer_id`,
  `path_prefix`, `timestamp` and `signature` to the query. The signature is HMAC-SHA256 (hex,
  client secret) over the other parameters as `key=value` (several values joined by `,`),
  sorted and concatenated with no separator (shopify.dev, authenticate app proxies).
- With `CHECKOUT_AUTH=open` (sandbox default) nothing is asked.
Every comparison is constant time; a refusal is a 401 problem and nothing is written.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

import jwt
from fastapi import Request

from app.problems import Problem
from app.routers.client import client_address, proxy_client
from app.settings import CheckoutAuth, Settings

SESSION_TOKEN_LEEWAY_S = 10
PROXY_TIMESTAMP_WINDOW_S = 90


def _refuse_session(detail: str) -> Problem:
    return Problem(401, "invalid_session_token", detail, headers={"WWW-Authenticate": "Bearer"})


def verify_session_token(settings: Settings, authorization: str | None) -> dict[str, object]:
    """The token's claims, or a 401 `invalid_session_token` problem."""
    if settings.shopify_api_secret is None or not settings.shopify_shop_domain:
        raise _refuse_session("Checkout session tokens cannot be verified: Shopify not set up.")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _refuse_session("A checkout session token is required (Authorization: Bearer).")
    try:
        claims: dict[str, object] = jwt.decode(
            token.strip(),
            settings.shopify_api_secret.get_secret_value(),
            algorithms=["HS256"],
            leeway=SESSION_TOKEN_LEEWAY_S,
            options={"require": ["exp", "nbf", "dest"], "verify_aud": False},
        )
    except jwt.PyJWTError:
        raise _refuse_session("The checkout session token is not valid.") from None
    dest = str(claims.get("dest") or "")
    host = urlsplit(dest if "://" in dest else f"https://{dest}").hostname or ""
    if not hmac.compare_digest(host.lower(), settings.shopify_shop_domain.lower()):
        raise _refuse_session("The checkout session token is for another shop.")
    return claims


def proxy_signature(query: list[tuple[str, str]], secret: str) -> str:
    """Shopify's app proxy signature of a query (without its own `signature` parameter)."""
    joined: dict[str, list[str]] = {}
    for key, value in query:
        if key != "signature":
            joined.setdefault(key, []).append(value)
    message = "".join(sorted(f"{key}={','.join(values)}" for key, values in joined.items()))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def verify_proxy_call(
    settings: Settings, raw_query: str, *, now: Callable[[], float] = time.time
) -> tuple[str, str | None]:
    """The signed shop and logged-in customer, or a 401 `invalid_proxy_signature` problem."""

    def refuse(detail: str) -> Problem:
        return Problem(401, "invalid_proxy_signature", detail)

    if settings.shopify_api_secret is None or not settings.shopify_shop_domain:
        raise refuse("App proxy calls cannot be verified: Shopify not set up.")
    query = parse_qsl(raw_query, keep_blank_values=True)
    given = [value for key, value in query if key == "signature"]
    if len(given) != 1:
        raise refuse("The app proxy signature is missing.")
    expected = proxy_signature(query, settings.shopify_api_secret.get_secret_value())
    if not hmac.compare_digest(expected.encode(), given[0].encode()):
        raise refuse("The app proxy signature is not valid.")
    fields = dict(query)
    try:
        stamped = int(fields.get("timestamp", ""))
    except ValueError:
        raise refuse("The app proxy timestamp is missing.") from None
    if abs(now() - stamped) > PROXY_TIMESTAMP_WINDOW_S:
        raise refuse("The app proxy call is too old (or from the future).")
    shop = fields.get("shop", "").lower()
    if not hmac.compare_digest(shop, settings.shopify_shop_domain.lower()):
        raise refuse("The app proxy call is for another shop.")
    return shop, fields.get("logged_in_customer_id") or None


def checkout_client(request: Request, settings: Settings) -> str:
    """`/check-balance` callers: a session token unless open; the client for PIN limits."""
    if settings.checkout_auth is not CheckoutAuth.OPEN:
        verify_session_token(settings, request.headers.get("authorization"))
    return client_address(request, settings.trusted_proxies)


def proxy_caller(request: Request, settings: Settings) -> str:
    """`/proxy/*` callers are Shopify's servers: the client is the signed shop and customer."""
    if settings.checkout_auth is CheckoutAuth.OPEN and "signature" not in request.query_params:
        return client_address(request, settings.trusted_proxies)
    shop, customer = verify_proxy_call(settings, request.url.query)
    return proxy_client(shop, customer)
