"""Every gift card at once, through Shopify's bulk export (a JSONL file on a storage host)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from app.clients.shopify.errors import ShopifyUnavailable
from app.clients.shopify.graphql import ShopifyGraphQL, raise_user_errors
from app.clients.shopify.models import ShopifyGiftCard, parse_gift_card
from app.clients.shopify.queries import BULK_GIFT_CARDS_QUERY

# A bulk operation that is ours and has not failed: adopted after a lost start.
_LIVE = ("CREATED", "RUNNING", "COMPLETED")


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
            current = await self._current_bulk_operation()
            if (
                current is not None
                and _same_query(str(current.get("query") or ""))
                and current.get("status") in _LIVE
            ):
                return str(current["id"])
            return None

        return await self._write(
            "BulkOperationRunQuery",
            {"query": BULK_GIFT_CARDS_QUERY},
            started,
            reference="bulkOperationRunQuery",
            look_up=running,
        )

    async def _current_bulk_operation(self) -> dict[str, Any] | None:
        data = await self._query("CurrentBulkOperation", {})
        current = data.get("currentBulkOperation")
        return current if isinstance(current, dict) else None

    async def _wait_for_bulk_operation(self, operation_id: str, poll_interval: float) -> str | None:
        while True:
            current = await self._current_bulk_operation()
            if current is None or current.get("id") != operation_id:
                raise ShopifyUnavailable("the bulk operation disappeared (another one started?)")
            status = current.get("status")
            if status == "COMPLETED":
                url = current.get("url")
                return str(url) if url else None
            if status in ("FAILED", "CANCELED", "CANCELING", "EXPIRED"):
                raise ShopifyUnavailable(
                    f"bulk operation {status}: {current.get('errorCode') or 'no error code'}"
                )
            await asyncio.sleep(poll_interval)


def _same_query(text: str) -> bool:
    return " ".join(text.split()) == " ".join(BULK_GIFT_CARDS_QUERY.split())
