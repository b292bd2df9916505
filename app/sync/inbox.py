"""The webhook inbox: store each delivery once, then process it in the worker.

A delivery is a duplicate when its `X-Shopify-Webhook-Id` was seen (Shopify's retry) or when the
same `X-Shopify-Event-Id` arrived for the same topic under another delivery id; either way it
is acknowledged and not processed again. Storing and enqueueing happen in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from app.db import jobs
from app.db.engine import SessionFactory, transaction
from app.logging import get_logger

log = get_logger(__name__)

PROCESS_JOB = "webhook.process"
TopicHandler = Callable[[dict[str, Any], "Delivery"], Awaitable[None]]


@dataclass(frozen=True)
class Delivery:
    id: int
    webhook_id: str
    event_id: str | None
    topic: str
    shop_domain: str | None
    triggered_at: datetime | None


async def store_delivery(
    sessions: SessionFactory,
    *,
    webhook_id: str,
    event_id: str | None,
    topic: str,
    shop_domain: str | None,
    triggered_at: datetime | None,
    payload: dict[str, Any],
) -> bool:
    """True when this delivery is new and was queued for processing."""
    async with transaction(sessions) as session:
        delivery_id: int | None = await session.scalar(
            text(
                """
                INSERT INTO webhook_inbox
                    (webhook_id, event_id, topic, shop_domain, triggered_at, payload)
                VALUES (:webhook_id, :event_id, :topic, :shop, :triggered_at,
                        CAST(:payload AS jsonb))
                ON CONFLICT DO NOTHING
                RETURNING id
                """
            ),
            {
                "webhook_id": webhook_id,
                "event_id": event_id,
                "topic": topic,
                "shop": shop_domain,
                "triggered_at": triggered_at,
                "payload": json.dumps(payload),
            },
        )
        if delivery_id is None:
            return False
        await jobs.enqueue(
            session, PROCESS_JOB, {"delivery_id": delivery_id}, f"webhook:{delivery_id}"
        )
        return True


async def process_delivery(
    sessions: SessionFactory, handlers: dict[str, TopicHandler], delivery_id: int
) -> None:
    """Run the topic's handler (idempotent by design) and mark the delivery processed."""
    async with sessions() as session:
        row = (
            await session.execute(
                text(
                    """
                    SELECT id, webhook_id, event_id, topic, shop_domain, triggered_at, payload,
                           processed_at
                    FROM webhook_inbox WHERE id = :id
                    """
                ),
                {"id": delivery_id},
            )
        ).one_or_none()
    if row is None or row.processed_at is not None:
        return
    delivery = Delivery(
        row.id, row.webhook_id, row.event_id, row.topic, row.shop_domain, row.triggered_at
    )
    handler = handlers.get(delivery.topic)
    if handler is not None:
        await handler(row.payload, delivery)
    else:
        log.info("webhook_topic_stored_only", topic=delivery.topic)
    async with transaction(sessions) as session:
        await session.execute(
            text("UPDATE webhook_inbox SET processed_at = now() WHERE id = :id"),
            {"id": delivery_id},
        )
