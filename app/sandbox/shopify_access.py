"""Who may call the Shopify simulator, and which Admin API version answers.

Versions (UPSTREAMS.md "API versions"; shopify.dev api/usage/versioning): Shopify serves each
quarterly version for 12 months; a request for a retired one is answered by the oldest version
still served, and every answer's `X-Shopify-API-Version` header names the version that answered.
Each served version validates against its own published schema (bundled under `data/`, copied
from `../shared/shopify/`).

Tokens (shopify.dev, apps/build/authentication-authorization/access-tokens/
client-credentials-grant): `POST /admin/oauth/access_token` with `grant_type=client_credentials`,
`client_id`, `client_secret` (form-encoded; Shopify's own JS library sends JSON, so both are
read) answers `{"access_token", "scope", "expires_in"}`; tokens last 24 hours. A legacy app's
static token is accepted as well. Refusals of the grant are not documented: the simulator
answers 400 with an OAuth `error` (`invalid_client`, or `app_not_installed` as Shopify answers a
token exchange for an uninstalled app, shopify-api-ruby issue 1322).
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from graphql import GraphQLSchema, build_client_schema

from app.crypto import constant_time_equal

SUPPORTED_VERSIONS: tuple[str, ...] = ("2026-01", "2026-04", "2026-07", "2026-10")
VERSION_HEADER = "X-Shopify-API-Version"
SCHEMA_DIR = Path(__file__).parent / "data"
_QUARTERLY = re.compile(r"\d{4}-(01|04|07|10)")

SANDBOX_CLIENT_ID = "giftsync-sandbox-client"
SANDBOX_CLIENT_SECRET = "sandbox-client-secret-not-for-production"  # noqa: S105
TOKEN_LIFETIME = 86399.0
DEFAULT_SCOPES: tuple[str, ...] = (
    "read_customers",
    "write_customers",
    "read_gift_card_transactions",
    "write_gift_card_transactions",
    "read_gift_cards",
    "write_gift_cards",
    "read_orders",
)
INVALID_TOKEN_MESSAGE = (
    "[API] Invalid API key or access token (unrecognized login or wrong password)"  # noqa: S105 - an error text
)


@cache
def admin_schema(version: str) -> GraphQLSchema:
    """One version's schema, built once per process (about 0.4 s each)."""
    with gzip.open(SCHEMA_DIR / f"admin_{version}.json.gz", "rt", encoding="utf-8") as handle:
        schema = build_client_schema(json.load(handle)["data"])
    # Shopify's own schema breaks a deprecation rule graphql-core 3.3 checks; it is what it is.
    schema._validation_errors = []
    return schema


def served_version(asked: str, supported: tuple[str, ...]) -> str | None:
    """The version that answers a request for `asked`; None: no such version (404)."""
    if asked in supported:
        return asked
    if _QUARTERLY.fullmatch(asked) and supported and asked < supported[0]:
        return supported[0]
    return None


class AppAccess:
    """The app installed on the simulated shop: its static token and its granted tokens."""

    def __init__(
        self,
        *,
        static_token: str | None,
        client_id: str = SANDBOX_CLIENT_ID,
        client_secret: str = SANDBOX_CLIENT_SECRET,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        lifetime: float = TOKEN_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.static_token = static_token
        self.client_id = client_id
        self.client_secret = client_secret
        self.scopes = scopes
        self.lifetime = lifetime
        self._clock = clock
        self._issued: dict[str, float] = {}
        self.installed = True
        self.tokens_issued = 0
        self.refused_grants = 0

    def allows(self, token: str | None) -> bool:
        if not token or not self.installed:
            return False
        if self.static_token is not None and constant_time_equal(token, self.static_token):
            return True
        expires_at = self._issued.get(token)
        return expires_at is not None and self._clock() < expires_at

    def grant(self, params: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """The token endpoint's status and JSON body for one request."""
        if params.get("grant_type") != "client_credentials":
            self.refused_grants += 1
            return 400, {"error": "unsupported_grant_type"}
        secret = str(params.get("client_secret") or "")
        if params.get("client_id") != self.client_id or not constant_time_equal(
            secret, self.client_secret
        ):
            self.refused_grants += 1
            return 400, {
                "error": "invalid_client",
                "error_description": "Client credentials are invalid",
            }
        if not self.installed:
            self.refused_grants += 1
            return 400, {
                "error": "app_not_installed",
                "error_description": "The application is not installed on this shop.",
            }
        token = "shpat_" + secrets.token_hex(16)
        self._issued[token] = self._clock() + self.lifetime
        self.tokens_issued += 1
        return 200, {
            "access_token": token,
            "scope": ",".join(self.scopes),
            "expires_in": int(self.lifetime),
        }

    # --- acting behind the app's back ---

    def expire_tokens(self) -> None:
        """Every granted token stops working now (as if 24 hours had passed)."""
        self._issued.clear()

    def revoke_app(self) -> None:
        """The merchant uninstalls the app: every token dies and no new one is granted."""
        self.installed = False
        self._issued.clear()

    def reinstall_app(self) -> None:
        self.installed = True

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.post("/admin/oauth/access_token")
        async def access_token(request: Request) -> Response:
            params: Mapping[str, Any]
            if request.headers.get("content-type", "").startswith("application/json"):
                try:
                    body = await request.json()
                except ValueError:
                    body = None
                params = body if isinstance(body, dict) else {}
            else:
                # application/x-www-form-urlencoded, read with the standard library.
                pairs = parse_qsl((await request.body()).decode("utf-8", "replace"))
                params = dict(pairs)
            status, answer = self.grant(params)
            return JSONResponse(answer, status_code=status)

        return router


def invalid_token_response(version: str) -> Response:
    return JSONResponse(
        {"errors": INVALID_TOKEN_MESSAGE}, status_code=401, headers={VERSION_HEADER: version}
    )
