"""Queries on `webhook_inbox`: each Shopify delivery stored once, with its processing job."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db.sql import sql

# One statement stores the delivery and queues its processing job, so acknowledging costs one
# round trip; the job row matches what `jobs.enqueue` writes (PostgreSQL runs a data-modifying
# WITH exactly once, whether or not the outer query reads it).
_STORE = """
    WITH delivery AS (
        INSERT INTO webhook_inbox (webhook_id, event_id, topic, body_sha256, shop_domain,
                                   triggered_at, payload)
        VALUES (:webhook_id, :event_id, :topic, :body_sha256, :shop, :triggered_at,
                CAST(:payload AS jsonb))
        ON CONFLICT DO NOTHING
        RETURNING id
    ), job AS (
        INSERT INTO jobs (kind, payload, idempotency_key, run_at, max_attempts)
        SELECT :kind, jsonb_build_object('delivery_id', id), 'webhook:' || id, now(),
               :max_attempts
        FROM delivery
        ON CONFLICT (idempotency_key) DO NOTHING
    )
    SELECT id FROM delivery
"""


async def store_with_job(
    conn: AsyncConnection,
    *,
    webhook_id: str,
    event_id: str | None,
    topic: str,
    shop_domain: str | None,
    triggered_at: datetime | None,
    payload_json: str,
    body_sha256: str | None,
    job_kind: str,
    max_attempts: int,
) -> bool:
    """True when the delivery is new (and its job queued); False for a duplicate."""
    stored = (
        await conn.execute(
            sql(_STORE),
            {
                "webhook_id": webhook_id,
                "event_id": event_id,
                "topic": topic,
                "body_sha256": body_sha256,
                "shop": shop_domain,
                "triggered_at": triggered_at,
                "payload": payload_json,
                "kind": job_kind,
                "max_attempts": max_attempts,
            },
        )
    ).first()
    return stored is not None


async def get(session: AsyncSession, delivery_id: int) -> Any:
    return (
        await session.execute(
            sql(
                """
                SELECT id, webhook_id, event_id, topic, shop_domain, triggered_at, payload,
                       processed_at
                FROM webhook_inbox WHERE id = :id
                """
            ),
            {"id": delivery_id},
        )
    ).one_or_none()


async def mark_processed(session: AsyncSession, delivery_id: int) -> None:
    """The first run to finish keeps its time: a lease-expired re-run changes nothing."""
    await session.execute(
        sql(
            "UPDATE webhook_inbox SET processed_at = now() WHERE id = :id AND processed_at IS NULL"
        ),
        {"id": delivery_id},
    )
