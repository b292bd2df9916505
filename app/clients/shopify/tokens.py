"""Where the Admin API access token comes from: a static token, or the client credentials grant.

A legacy app made in the Shopify admin has a static `shpat_` token (SHOPIFY_ADMIN_TOKEN). An app
made in the Dev Dashboard gets tokens that last 24 hours from
`POST {shop}/admin/oauth/access_token` with `grant_type=client_credentials`, `client_id` and
`client_secret`, form-encoded, answered `{"access_token", "scope", "expires_in"}` (shopify.dev,
apps/build/authentication-authorization/access-tokens/client-credentials-grant). A new one is
asked for shortly before the old one runs out, and once when Shopify answers 401.

One renewal serves every caller of the process (an asyncio lock) and every process sharing the
database (the store's advisory lock): whoever holds the lock second finds the fresh token saved
and takes it instead of asking Shopify again. Never logged: tokens and the client secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

from app.clients.delivery import AnswerLost, NotSent, check_status, new_http_client, transmit
from app.clients.shopify.errors import ShopifyAuthError, ShopifyUnavailable
from app.db.tokens import TokenSet, TokenStore, refresh_lock
from app.logging import get_logger, mask_text

log = get_logger(__name__)

# Ask for a new token this long before the current one runs out, so no request races expiry.
RENEW_MARGIN = timedelta(minutes=5)
# The `oauth_tokens` row the Shopify token lives in, beside Lightspeed's.
SHOPIFY_TOKEN_PROVIDER = "shopify"  # noqa: S105 - a row name, not a secret
TOKEN_PATH = "/admin/oauth/access_token"  # noqa: S105 - a path, not a secret


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AccessTokens(Protocol):
    """What the request layer asks for a token, and tells when Shopify refused one."""

    mode: str
    """`static` (a legacy admin-created app) or `client_credentials` (a Dev Dashboard app)."""

    async def current(self) -> str: ...

    async def renew(self, rejected: str) -> str | None:
        """A token other than `rejected`, or None when there is no other to be had."""
        ...

    async def aclose(self) -> None: ...


class StaticToken:
    """SHOPIFY_ADMIN_TOKEN: never renewed; a 401 means it was revoked."""

    mode = "static"

    def __init__(self, token: str) -> None:
        self._token = SecretStr(token)

    def __repr__(self) -> str:
        return "StaticToken(<hidden>)"

    async def current(self) -> str:
        return self._token.get_secret_value()

    async def renew(self, rejected: str) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


class ClientCredentialsTokens:
    """Tokens by the client credentials grant, shared through `store` (None: this process only)."""

    mode = "client_credentials"

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        store: TokenStore | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        clock: Callable[[], datetime] = _utcnow,
        margin: timedelta = RENEW_MARGIN,
    ) -> None:
        self._token_url = f"{base_url.rstrip('/')}{TOKEN_PATH}"
        self._client_id = client_id
        self._client_secret = SecretStr(client_secret)
        self._http = new_http_client(timeout=timeout, transport=transport)
        self._store = store
        self._timeout = timeout
        self._clock = clock
        self._margin = margin
        self._tokens: TokenSet | None = None
        self._lock = asyncio.Lock()
        self.grants = 0
        """Tokens this object obtained from Shopify (tests and metrics read it)."""

    def __repr__(self) -> str:
        return f"ClientCredentialsTokens(client_id={self._client_id!r}, <secret hidden>)"

    async def current(self) -> str:
        tokens = self._tokens
        if self._usable(tokens, None):
            assert tokens is not None and tokens.access_token is not None
            return tokens.access_token
        return await self._renew(rejected=None)

    async def renew(self, rejected: str) -> str | None:
        return await self._renew(rejected=rejected)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _renew(self, *, rejected: str | None) -> str:
        async with self._lock:
            # Another caller may have renewed while this one waited for the lock.
            mine = self._tokens
            if self._usable(mine, rejected):
                assert mine is not None and mine.access_token is not None
                return mine.access_token
            async with refresh_lock_of(self._store):
                stored = await self._store.load() if self._store is not None else None
                if self._usable(stored, rejected):
                    # Another process renewed (or a restart finds the token still good).
                    assert stored is not None and stored.access_token is not None
                    self._tokens = stored
                    return stored.access_token
                fresh = await self._grant()
                if self._store is not None:
                    await self._store.save(fresh)
                self._tokens = fresh
                assert fresh.access_token is not None
                return fresh.access_token

    def _usable(self, tokens: TokenSet | None, rejected: str | None) -> bool:
        if tokens is None or not tokens.access_token or tokens.access_token == rejected:
            return False
        return tokens.expires_at is None or tokens.expires_at - self._clock() > self._margin

    async def _grant(self) -> TokenSet:
        """One token request. Asking again is always safe (it only issues another token), so a
        failure to get an answer is `NotSent` for the GraphQL request waiting on it: that one
        has not gone out, and the delivery policy may send it again."""
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
        }
        try:
            response = await transmit(
                self._http.post(self._token_url, data=form, headers={"Accept": "application/json"}),
                deadline=self._timeout,
            )
            check_status(response)
        except (NotSent, AnswerLost) as failed:
            raise NotSent(f"token request: {failed}", retry_after=failed.retry_after) from failed
        body = _json_object(response)
        if response.status_code != 200:
            error = str((body or {}).get("error") or f"http_{response.status_code}")
            log.warning("shopify_token_refused", status=response.status_code, error=error)
            raise ShopifyAuthError(
                f"Shopify refused the client credentials ({mask_text(error)}, HTTP "
                f"{response.status_code}): check SHOPIFY_CLIENT_ID, SHOPIFY_API_SECRET and that "
                "the app is installed on the shop",
                code=error,
            )
        return self._token_set(body)

    def _token_set(self, body: dict[str, Any] | None) -> TokenSet:
        try:
            assert body is not None
            access = str(body["access_token"])
            expires_in = int(body.get("expires_in") or 0)
        except (AssertionError, KeyError, TypeError, ValueError) as exc:
            raise ShopifyUnavailable("Shopify's token answer holds no token") from exc
        if not access:
            raise ShopifyUnavailable("Shopify's token answer holds an empty token")
        self.grants += 1
        expires_at = self._clock() + timedelta(seconds=expires_in) if expires_in > 0 else None
        log.info("shopify_token_granted", expires_at=str(expires_at), scope=body.get("scope"))
        return TokenSet(access_token=access, refresh_token=None, expires_at=expires_at)


def refresh_lock_of(store: TokenStore | None) -> AbstractAsyncContextManager[None]:
    """The store's cross-process lock; a process without a store has only its own lock."""
    return refresh_lock(store) if store is not None else nullcontext()


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
