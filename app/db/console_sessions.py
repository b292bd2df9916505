"""Console sessions (DESIGN 3): a random id in the browser's cookie, its hash and CSRF token here.

Only the hash of the id is stored, so a copy of the table signs nobody in. A session ends when
its operator signs out, after `IDLE` without a request, or when its named operator is revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.sql import rowcount, sql

IDLE = timedelta(hours=8)
ADMIN = "admin"


def id_hash(session_id: str) -> str:
    """Session ids are 256 random bits: a plain SHA-256 keeps them unusable from the table."""
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class ConsoleSession:
    operator: str
    csrf_token: str


async def create(session: AsyncSession, *, operator: str, address: str) -> tuple[str, str]:
    """A new session for `operator`; returns (cookie value, CSRF token). Expired ones go."""
    await session.execute(
        sql("DELETE FROM console_sessions WHERE last_seen_at <= now() - CAST(:idle AS interval)"),
        {"idle": IDLE},
    )
    session_id = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    await session.execute(
        sql(
            "INSERT INTO console_sessions (id_hash, operator, csrf_token, address) "
            "VALUES (:h, :operator, :csrf, :address)"
        ),
        {"h": id_hash(session_id), "operator": operator, "csrf": csrf_token, "address": address},
    )
    return session_id, csrf_token


async def touch(
    session: AsyncSession, session_id: str, *, idle: timedelta = IDLE
) -> ConsoleSession | None:
    """The live session with this id, its idle clock restarted; None when gone or expired.

    The admin session stands on ADMIN_TOKEN; a named operator's ends with its revocation.
    """
    row = (
        await session.execute(
            sql(
                """
                UPDATE console_sessions s SET last_seen_at = now()
                WHERE s.id_hash = :h
                  AND s.last_seen_at > now() - CAST(:idle AS interval)
                  AND (s.operator = :admin OR EXISTS (
                        SELECT 1 FROM operators o
                        WHERE o.name = s.operator AND o.revoked_at IS NULL))
                RETURNING s.operator, s.csrf_token
                """
            ),
            {"h": id_hash(session_id), "idle": idle, "admin": ADMIN},
        )
    ).first()
    return None if row is None else ConsoleSession(row.operator, row.csrf_token)


async def delete(session: AsyncSession, session_id: str) -> bool:
    result = await session.execute(
        sql("DELETE FROM console_sessions WHERE id_hash = :h"), {"h": id_hash(session_id)}
    )
    return rowcount(result) == 1
