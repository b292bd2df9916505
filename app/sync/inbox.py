"""The webhook inbox: store each delivery once, then process it in the worker.

A delivery is a duplicate when its `X-Shopify-Webhook-Id` was seen (Shopify's retry) or when the
same `X-Shopify-Event-Id` arrived for the same topic under another delivery id; either way it
is acknowledged and not processed again. Storing and enqueueing happen in one transaction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.db import jobs, webhook_inbox
from app.db.engine import SessionFactory, autocommit_connection, transaction
from app.logging import get_logger

log = get_logger(__name__)

PROCESS_JOB = "webhook.process"
TOPIC_PAID = "orders/paid"
TOPIC_CANCELLED = "orders/cancelled"
TOPIC_TRANSACTION = "order_transactions/create"
TOPIC_REFUND = "refunds/create"
TopicHandler = Callable[[dict[str, Any], "Delivery"], Awaitable[None]]


@dataclass(frozen=True)
class Delivery:
    id: int
    webhook_id: str
    event_id: str | None
    topic: str
    shop_domain: str | None
    triggered_at: datetime | None


# What PostgreSQL's jsonb cannot hold: NUL (`\u0000`, with an odd number of backslashes before
# it, so an escaped backslash followed by "u0000" is not mistaken for one) and lone surrogates.
_UNSTORABLE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000|[\ud800-\udfff]")
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE_CHARS.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_scrub(key): _scrub(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


def storable_json(payload: dict[str, Any]) -> str:
    """The payload as JSON text jsonb accepts.

    A signed delivery is Shopify's own, so one carrying a NUL or a lone surrogate in some text
    field is stored with U+FFFD in its place rather than refused: refusing it would lose the
    event after Shopify's retries, while ids and amounts, which the handlers use, are untouched.
    """
    encoded = json.dumps(payload, ensure_ascii=False)
    # Substring and character-class scans first: the exact pattern is slow on every body.
    if "\\u0000" not in encoded and _SURROGATE.search(encoded) is None:
        return encoded
    if _UNSTORABLE.search(encoded) is None:
        return encoded
    log.warning("webhook_payload_scrubbed")
    return json.dumps(_scrub(payload), ensure_ascii=False)


async def store_delivery(
    sessions: SessionFactory,
    *,
    webhook_id: str,
    event_id: str | None,
    topic: str,
    shop_domain: str | None,
    triggered_at: datetime | None,
    payload: dict[str, Any],
    body_sha256: str | None = None,
) -> bool:
    """True when this delivery is new and was queued for processing.

    One statement is atomic on its own, so it runs outside an explicit transaction: the
    acknowledgement costs one round trip to PostgreSQL instead of three (BEGIN, it, COMMIT),
    and it is durable when the statement returns, before the answer leaves.
    """
    async with autocommit_connection(sessions) as autocommit:
        return await webhook_inbox.store_with_job(
            autocommit,
            webhook_id=webhook_id,
            event_id=event_id,
            topic=topic,
            shop_domain=shop_domain,
            triggered_at=triggered_at,
            payload_json=storable_json(payload),
            body_sha256=body_sha256,
            job_kind=PROCESS_JOB,
            max_attempts=jobs.DEFAULT_MAX_ATTEMPTS,
        )


async def process_delivery(
    sessions: SessionFactory, handlers: Mapping[str, Sequence[TopicHandler]], delivery_id: int
) -> None:
    """Run the topic's handlers in order (each idempotent) and mark the delivery processed."""
    async with sessions() as session:
        row = await webhook_inbox.get(session, delivery_id)
    if row is None or row.processed_at is not None:
        return
    delivery = Delivery(
        row.id, row.webhook_id, row.event_id, row.topic, row.shop_domain, row.triggered_at
    )
    topic_handlers = handlers.get(delivery.topic, ())
    for handler in topic_handlers:
        await handler(row.payload, delivery)
    if not topic_handlers:
        log.info("webhook_topic_stored_only", topic=delivery.topic)
    async with transaction(sessions) as session:
        await webhook_inbox.mark_processed(session, delivery_id)


@dataclass
class Inbox:
    """The `webhook.process` job: a stored delivery, run through its topic's handlers."""

    sessions: SessionFactory
    handlers: Mapping[str, Sequence[TopicHandler]]

    async def process(self, payload: dict[str, Any]) -> None:
        await process_delivery(self.sessions, self.handlers, int(payload["delivery_id"]))
