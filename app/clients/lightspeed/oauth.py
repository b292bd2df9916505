"""Lightspeed's OAuth2 tokens (`authentication/refresh-token.md`): every refresh rotates both.

The new pair is saved before the new access token is handed to anyone: Lightspeed has already
killed the old refresh token, so an unsaved new one would be lost with the process.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.clients.delivery import AnswerLost, Delivery, check_status, transmit
from app.clients.lightspeed.errors import LightspeedAuthError
from app.db.tokens import TokenSet, TokenStore, refresh_lock
from app.logging import get_logger, mask_text

log = get_logger(__name__)

# Refresh this long before the access token runs out, so no request races its expiry.
REFRESH_MARGIN = timedelta(seconds=60)


class TokenKeeper:
    """The access token for one client; rotated once for every caller waiting here, and once
    for every process through the store's lock."""

    def __init__(
        self,
        store: TokenStore,
        *,
        initial_refresh_token: str | None,
        client_id: str,
        client_secret: str,
        token_url: str,
        http: httpx.AsyncClient,
        timeout: float,
        delivery: Delivery,
    ) -> None:
        self._store = store
        self._initial_refresh_token = initial_refresh_token
        self._client_id = client_id
        self._client_secret = client_secret
        self._token_url = token_url
        self._http = http
        self._timeout = timeout
        self._delivery = delivery
        self._tokens: TokenSet | None = None
        self._loaded = False
        self._lock = asyncio.Lock()

    async def access_token(self) -> str:
        if not self._loaded:
            async with self._lock:
                if not self._loaded:
                    self._tokens = await self._store.load()
                    self._loaded = True
        tokens = self._tokens
        if tokens is not None and tokens.access_token and _fresh(tokens):
            return tokens.access_token
        return await self.refresh(rejected_access_token=tokens.access_token if tokens else None)

    async def refresh(self, *, rejected_access_token: str | None) -> str:
        async with self._lock:
            mine = self._tokens
            if _usable(mine, rejected_access_token):
                assert mine is not None and mine.access_token is not None
                return mine.access_token
            async with refresh_lock(self._store):
                stored = await self._store.load()
                current_refresh = (
                    mine.refresh_token if mine is not None else self._initial_refresh_token
                )
                if stored is not None and (
                    stored.refresh_token != current_refresh
                    or _usable(stored, rejected_access_token)
                ):
                    self._tokens = stored
                    if _usable(stored, rejected_access_token):
                        assert stored.access_token is not None
                        return stored.access_token
                    current_refresh = stored.refresh_token
                if current_refresh is None:
                    raise LightspeedAuthError(
                        "no Lightspeed refresh token: set LIGHTSPEED_REFRESH_TOKEN",
                        code="no_refresh_token",
                    )
                rotated = await self._call_token_endpoint(current_refresh)
                await self._store.save(rotated)
                self._tokens = rotated
                log.info("lightspeed_token_rotated", expires_at=str(rotated.expires_at))
                assert rotated.access_token is not None
                return rotated.access_token

    async def _call_token_endpoint(self, refresh_token: str) -> TokenSet:
        """Rotate once. A refresh whose answer is lost is sent again with the same, old token:
        refresh-token.md revokes the old refresh token only "once the new access token is used
        to authenticate a request", and the lost pair was never used. (Whether that lost pair
        stays valid afterwards is not documented; it is never used, so either way is fine.)"""
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }

        async def attempt() -> httpx.Response:
            response = await transmit(
                self._http.post(self._token_url, data=form), deadline=self._timeout
            )
            check_status(response)
            if response.status_code == 200 and _json_object(response) is None:
                raise AnswerLost("answered 200 with an unreadable body")
            return response

        response = await self._delivery.call(attempt, what="Lightspeed token refresh")
        body = _json_object(response) or {}
        if response.status_code != 200:
            error = str(body.get("error") or f"http_{response.status_code}")
            raise LightspeedAuthError(
                f"Lightspeed refused the refresh token ({mask_text(error)})", code=error
            )
        try:
            access = str(body["access_token"])
            refresh = str(body["refresh_token"])
            expires_in = int(body.get("expires_in") or 0)
        except (KeyError, ValueError) as exc:
            raise LightspeedAuthError(
                "Lightspeed token answer lacks a token", code="bad_token_answer"
            ) from exc
        expires_at = datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in else None
        return TokenSet(access_token=access, refresh_token=refresh, expires_at=expires_at)


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _fresh(tokens: TokenSet) -> bool:
    if tokens.expires_at is None:
        return True
    return tokens.expires_at - datetime.now(UTC) > REFRESH_MARGIN


def _usable(tokens: TokenSet | None, rejected_access_token: str | None) -> bool:
    return (
        tokens is not None
        and tokens.access_token is not None
        and tokens.access_token != rejected_access_token
        and _fresh(tokens)
    )
