"""Every gift card at once, through Shopify's bulk export (a JSONL file on a storage host).

Since 2026-01 an app may run up to five bulk queries at once per shop, and
`currentBulkOperation` is deprecated for `bulkOperations` (shopify.dev, api/usage/bulk-operations
/queries; changelog "new-queries-for-bulk-operations"). So ours is followed by its own id
(`bulkOperation(id:)`), never by "the current one", and others may run beside it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from app.clients.shopify.errors import ShopifyUnavailable, ShopifyUserError
from app.clients.shopify.graphql import ShopifyGraphQL, raise_user_errors
from app.clients.shopify.models import ShopifyGiftCard, parse_gift_card
from app.clients.shopify.queries import BULK_GIFT_CARDS_QUERY

# What a lost start looks for among the app's operations: one still running with our query.
LIVE_FILTER = "status:created OR status:running"
_LIVE = ("CREATED", "RUNNING")
_LIVE_PAGE = 25
_ENDED = ("FAILED", "CANCELED", "CANCELING", "EXPIRED")
# BulkOperationUserErrorCode values that mean "not now" rather than "never".
_BUSY = ("LIMIT_REACHED", "OPERATION_IN_PROGRESS")
_BUSY_WAIT = 60.0


class ShopifyBulkExport(ShopifyGraphQL):
    async def bulk_export_gift_cards(
        self, *, poll_interval: float = 1.0
    ) -> AsyncIterator[ShopifyGiftCard]:
        """Every gift card, streamed from Shopify's JSONL export one line at a time."""
        operation_id = await self._start_bulk_operation()
        url = await self._wait_for_bulk_operation(operation_id, poll_interval)
        if url is None:
            return
        try:
            # The file lives on a storage host: the access token must not go there.
            async with self._http.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise ShopifyUnavailable(
                        f"bulk export download answered {response.status_code}"
                    )
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    # Rows of nested connections point at their parent; the export has none of
                    # interest, and a card row never carries the key.
                    if "__parentId" in row:
                        continue
                    yield parse_gift_card(row)
        except httpx.TransportError as exc:
            # Reading it again from the start is the caller's choice (the backfill resumes).
            raise ShopifyUnavailable(f"bulk export download failed ({type(exc).__name__})") from exc

    async def _start_bulk_operation(self) -> str:
        def started(data: dict[str, Any]) -> str:
            payload = data["bulkOperationRunQuery"]
            raise_user_errors(payload["userErrors"])
            return str(payload["bulkOperation"]["id"])

        async def running() -> str | None:
            return await self._live_bulk_operation()

        # Not found by the look-up, the start is sent once more: at worst a stray export runs
        # beside ours and ends on its own.
        try:
            return await self._write(
                "BulkOperationRunQuery",
                {"query": BULK_GIFT_CARDS_QUERY},
                started,
                reference="bulkOperationRunQuery",
                look_up=running,
            )
        except ShopifyUserError as refused:
            if refused.code not in _BUSY:
                raise
            # Five of the app's bulk queries already run: a later try will find a free place.
            raise ShopifyUnavailable(
                f"Shopify runs too many bulk operations ({refused.code})", retry_after=_BUSY_WAIT
            ) from refused

    async def _live_bulk_operation(self) -> str | None:
        """A created or running bulk query with our query text, newest first."""
        data = await self._query("BulkOperationsLive", {"first": _LIVE_PAGE, "query": LIVE_FILTER})
        for node in (data.get("bulkOperations") or {}).get("nodes") or []:
            if node.get("status") in _LIVE and _same_query(str(node.get("query") or "")):
                return str(node["id"])
        return None

    async def _bulk_operation(self, operation_id: str) -> dict[str, Any] | None:
        data = await self._query("BulkOperationGet", {"id": operation_id})
        found = data.get("bulkOperation")
        return found if isinstance(found, dict) else None

    async def _wait_for_bulk_operation(self, operation_id: str, poll_interval: float) -> str | None:
        while True:
            current = await self._bulk_operation(operation_id)
            if current is None:
                raise ShopifyUnavailable(f"bulk operation {operation_id} is gone")
            status = current.get("status")
            if status == "COMPLETED":
                url = current.get("url")
                return str(url) if url else None
            if status in _ENDED:
                raise ShopifyUnavailable(
                    f"bulk operation {status}: {current.get('errorCode') or 'no error code'}"
                )
            await asyncio.sleep(poll_interval)


def _same_query(text: str) -> bool:
    return " ".join(text.split()) == " ".join(BULK_GIFT_CARDS_QUERY.split())
