"""Queries on `pin_failures` and `card_lockouts`: PIN attempts counted before Vii is asked.

An attempt is written as a failure before the PIN is checked and deleted when it proves right,
so parallel guesses are counted the moment they start, not when their answers come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.locks import lock_for_transaction
from app.db.sql import rowcount, sql


@dataclass(frozen=True)
class AttemptCounts:
    card_short: int
    """Failures (and attempts in flight) on the card in the short window."""
    card_short_oldest: datetime | None
    card_day: int
    client_short: int
    client_short_oldest: datetime | None
    locked: bool
    now: datetime


async def counts(
    session: AsyncSession, vii_hash: str, client: str, *, short: timedelta, day: timedelta
) -> AttemptCounts:
    """Under the client's lock (the card's lock is the caller's), so counts and insert are one."""
    await lock_for_transaction(session, f"pin-client:{client}")
    row = (
        await session.execute(
            sql(
                """
                SELECT
                  count(*) FILTER (WHERE vii_card_hash = :hash AND failed_at > now() - CAST(:short AS interval))
                    AS card_short,
                  min(failed_at) FILTER (WHERE vii_card_hash = :hash AND failed_at > now() - CAST(:short AS interval))
                    AS card_short_oldest,
                  count(*) FILTER (WHERE vii_card_hash = :hash) AS card_day,
                  count(*) FILTER (WHERE client_address = :client AND failed_at > now() - CAST(:short AS interval))
                    AS client_short,
                  min(failed_at) FILTER (WHERE client_address = :client
                                         AND failed_at > now() - CAST(:short AS interval)) AS client_short_oldest,
                  EXISTS (SELECT 1 FROM card_lockouts
                          WHERE vii_card_hash = :hash AND cleared_at IS NULL) AS locked,
                  now() AS now
                FROM pin_failures
                WHERE failed_at > now() - CAST(:day AS interval) AND (vii_card_hash = :hash OR client_address = :client)
                """
            ),
            {"hash": vii_hash, "client": client, "short": short, "day": day},
        )
    ).one()
    return AttemptCounts(
        card_short=row.card_short,
        card_short_oldest=row.card_short_oldest,
        card_day=row.card_day,
        client_short=row.client_short,
        client_short_oldest=row.client_short_oldest,
        locked=bool(row.locked),
        now=row.now,
    )


async def insert_attempt(session: AsyncSession, vii_hash: str, client: str) -> int:
    attempt_id: int = await session.scalar(
        sql(
            "INSERT INTO pin_failures (vii_card_hash, client_address) VALUES (:h, :c) RETURNING id"
        ),
        {"h": vii_hash, "c": client},
    )
    return attempt_id


async def forget_attempt(session: AsyncSession, attempt_id: int) -> None:
    """The PIN was right (or never checked): the attempt is not a failure."""
    await session.execute(sql("DELETE FROM pin_failures WHERE id = :id"), {"id": attempt_id})


async def failures_in(session: AsyncSession, vii_hash: str, window: timedelta) -> int:
    return int(
        await session.scalar(
            sql(
                "SELECT count(*) FROM pin_failures "
                "WHERE vii_card_hash = :h AND failed_at > now() - CAST(:w AS interval)"
            ),
            {"h": vii_hash, "w": window},
        )
        or 0
    )


async def lock_out(session: AsyncSession, vii_hash: str, vii_last4: str) -> bool:
    """True when this call locked the card (it was not locked already)."""
    result = await session.execute(
        sql(
            """
            INSERT INTO card_lockouts (vii_card_hash, vii_last4) VALUES (:h, :l)
            ON CONFLICT (vii_card_hash) DO UPDATE
              SET locked_at = now(), cleared_at = NULL, cleared_by = NULL
              WHERE card_lockouts.cleared_at IS NOT NULL
            """
        ),
        {"h": vii_hash, "l": vii_last4},
    )
    return rowcount(result) == 1


async def clear(session: AsyncSession, vii_hash: str, cleared_by: str) -> bool:
    """Unlock the card and forget its failures; True when it was locked or had failures."""
    cleared = await session.execute(
        sql(
            """
            UPDATE card_lockouts SET cleared_at = now(), cleared_by = :by
            WHERE vii_card_hash = :h AND cleared_at IS NULL
            """
        ),
        {"h": vii_hash, "by": cleared_by},
    )
    forgotten = await session.execute(
        sql("DELETE FROM pin_failures WHERE vii_card_hash = :h"), {"h": vii_hash}
    )
    return rowcount(cleared) + rowcount(forgotten) > 0
