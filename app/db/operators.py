"""Queries on `operators`, `audit_log` and `auth_failures`: who may operate, and what they did."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.sql import sql


def token_hash(token: str) -> str:
    """Operator tokens are 256 random bits: a plain SHA-256 is enough to keep them unreadable."""
    return hashlib.sha256(token.encode()).hexdigest()


async def add(session: AsyncSession, name: str, token: str) -> None:
    await session.execute(
        sql("INSERT INTO operators (name, token_hash) VALUES (:n, :h)"),
        {"n": name, "h": token_hash(token)},
    )


async def name_for(session: AsyncSession, token: str) -> str | None:
    name: str | None = await session.scalar(
        sql("SELECT name FROM operators WHERE token_hash = :h AND revoked_at IS NULL"),
        {"h": token_hash(token)},
    )
    return name


async def failures(session: AsyncSession, address: str, window: timedelta) -> int:
    return int(
        await session.scalar(
            sql(
                "SELECT count(*) FROM auth_failures "
                "WHERE address = :a AND failed_at > now() - CAST(:w AS interval)"
            ),
            {"a": address, "w": window},
        )
        or 0
    )


async def record_failure(session: AsyncSession, address: str, scope: str) -> None:
    await session.execute(
        sql("INSERT INTO auth_failures (address, scope) VALUES (:a, :s)"),
        {"a": address, "s": scope},
    )


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    operator: str
    address: str
    action: str
    status: int
    body_sha256: str
    detail: dict[str, Any]


async def audit(
    session: AsyncSession,
    *,
    operator: str,
    address: str,
    action: str,
    status: int,
    body: bytes,
    detail: dict[str, Any] | None = None,
) -> None:
    await session.execute(
        sql(
            """
            INSERT INTO audit_log (operator, address, action, status, body_sha256, detail)
            VALUES (:operator, :address, :action, :status, :hash, CAST(:detail AS jsonb))
            """
        ),
        {
            "operator": operator,
            "address": address,
            "action": action,
            "status": status,
            "hash": hashlib.sha256(body).hexdigest(),
            "detail": json.dumps(detail or {}),
        },
    )


async def audit_page(session: AsyncSession, *, before_id: int | None, limit: int) -> list[AuditRow]:
    rows = await session.execute(
        sql(
            """
            SELECT id, at, operator, address, action, status, body_sha256, detail FROM audit_log
            WHERE CAST(:before AS bigint) IS NULL OR id < :before
            ORDER BY id DESC LIMIT :limit
            """
        ),
        {"before": before_id, "limit": limit},
    )
    return [AuditRow(*row) for row in rows.all()]
