"""What `/readyz` shows of Shopify (DESIGN 3, "Operator and health"): asked of Shopify itself,
at most once a minute.

- `shopify_access` (error): the token works. Refused (401/403 on the API, or the client
  credentials grant refused: wrong secret, app uninstalled) is an error, since nothing works
  until an operator acts. Shopify out of reach is a warning: it passes, and the worker retries.
- `shopify_api_version` (warning): the answer's `X-Shopify-API-Version` is the version asked.
  Shopify answers a retired version with the oldest one it serves, silently but for the header.
- `shopify_webhooks` (warning, legacy admin-created apps only): the shop-scoped subscriptions
  match `{PUBLIC_URL}/webhooks/shopify`. A Dev Dashboard app's subscriptions are app-scoped, in
  `shopify.app.toml`, and Shopify's API does not list them: nothing to check there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from app.clients.errors import UnknownOutcome, UpstreamRejected, UpstreamUnavailable
from app.clients.shopify.client import ShopifyClient
from app.clients.shopify.errors import ShopifyAuthError
from app.clients.shopify.webhooks import subscriptions_check
from app.settings import Settings

Check = dict[str, Any]
CACHE_SECONDS = 60.0


class ShopifyHealth:
    """Shopify's `/readyz` checks for one client, cached for `ttl` seconds."""

    def __init__(
        self,
        client: ShopifyClient,
        *,
        check_webhooks: bool = False,
        public_url: str | None = None,
        ttl: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._check_webhooks = check_webhooks
        self._public_url = public_url
        self._ttl = ttl
        self._clock = clock
        self._cached: tuple[float, dict[str, Check]] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def for_settings(cls, client: ShopifyClient, settings: Settings) -> ShopifyHealth:
        """Webhooks are checked for a legacy app (SHOPIFY_ADMIN_TOKEN), outside the sandbox."""
        legacy = settings.shopify_admin_token is not None and not settings.sandbox_enabled
        return cls(client, check_webhooks=legacy, public_url=settings.public_url)

    async def checks(self) -> dict[str, Check]:
        """The checks, asked of Shopify at most once per `ttl` (one caller asks, others wait)."""
        async with self._lock:
            if self._cached is not None and self._clock() - self._cached[0] < self._ttl:
                return self._cached[1]
            found = await self._ask()
            self._cached = (self._clock(), found)
            return found

    async def _ask(self) -> dict[str, Check]:
        client = self._client
        checks: dict[str, Check] = {"shopify_access": await self._access()}
        checks["shopify_api_version"] = {
            "ok": not client.version_mismatch,
            "severity": "warning",
            "asked": client.api_version,
            "answered": client.answered_version,
        }
        if client.version_mismatch:
            checks["shopify_api_version"]["detail"] = (
                f"Shopify no longer serves {client.api_version} and answers with "
                f"{client.answered_version}: set SHOPIFY_API_VERSION to a supported version"
            )
        if self._check_webhooks and checks["shopify_access"]["ok"]:
            try:
                checks["shopify_webhooks"] = await subscriptions_check(client, self._public_url)
            except (UpstreamUnavailable, UpstreamRejected, UnknownOutcome) as exc:
                checks["shopify_webhooks"] = {
                    "ok": False,
                    "severity": "warning",
                    "error": type(exc).__name__,
                }
        return checks

    async def _access(self) -> Check:
        mode = self._client.token_mode
        try:
            await self._client.check_access()
        except ShopifyAuthError as exc:
            return {"ok": False, "severity": "error", "mode": mode, "code": exc.code}
        except (UpstreamUnavailable, UpstreamRejected, UnknownOutcome) as exc:
            return {"ok": False, "severity": "warning", "mode": mode, "error": type(exc).__name__}
        return {"ok": True, "severity": "error", "mode": mode}
