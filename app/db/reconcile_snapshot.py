"""The temporary tables of one reconcile run, on the one connection that holds them.

`rc_base` (omni cards: the agreed balance and version at T0, their links, whether moves are in
flight), `rc_shadow` (shadow cards and whether a job is busy with them), and the upstream
listings `rc_shopify` and `rc_pos`, filled by COPY. They live as long as the connection, so
every query of a run goes through the connection `reset` was called on.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.sql import sql

SHOPIFY_COLUMNS = (
    "id",
    "balance_minor",
    "enabled",
    "currency",
    "last4",
    "note_pos_ext",
    "shadow_ref",
    "created_at",
    "serial_hash",
)
POS_COLUMNS = ("external_id", "balance_minor", "enabled", "last4", "serial_hash")


async def reset(conn: AsyncConnection, temp_buffers: str) -> None:
    """Drop what an earlier run left on this pooled connection; room for the snapshot."""
    await conn.execute(sql("DISCARD TEMP"))
    with contextlib.suppress(DBAPIError):
        # The default (8 MB) holds about 20k cards. PostgreSQL refuses the change once a
        # session has used temporary tables; a pooled connection that ran a reconcile before
        # keeps its setting.
        await conn.execute(sql(f"SET temp_buffers = '{temp_buffers}'"))


async def discard(conn: AsyncConnection) -> None:
    await conn.execute(sql("DISCARD TEMP"))


async def capture_bases(
    conn: AsyncConnection,
    *,
    move_kinds: Sequence[str],
    pos_system: str | None,
    card_ids: Sequence[uuid.UUID] | None,
    after: str | None,
) -> None:
    """`rc_base`: every omni card's base at T0 (or `card_ids`, after the card `after`)."""
    await conn.execute(
        sql(
            """
            CREATE TEMP TABLE rc_base AS
            WITH in_flight AS (
                SELECT DISTINCT payload->>'card_id' AS card_id FROM jobs
                WHERE state <> 'done' AND kind = ANY(:kinds)
            )
            SELECT b.card_id, b.balance_minor, b.version, g.state AS card_state,
                   s.external_id AS shopify_id, s.code_hash AS shopify_code_hash,
                   p.external_id AS pos_id, p.code_hash AS pos_code_hash,
                   f.card_id IS NOT NULL AS pending
            FROM sync_base b
            JOIN gift_cards g ON g.id = b.card_id AND g.kind = 'omni'
            LEFT JOIN card_links s ON s.card_id = b.card_id AND s.system = 'shopify'
            LEFT JOIN card_links p ON p.card_id = b.card_id AND p.system = :pos
            LEFT JOIN in_flight f ON f.card_id = b.card_id::text
            WHERE (CAST(:cards AS uuid[]) IS NULL OR b.card_id = ANY(CAST(:cards AS uuid[])))
              AND (CAST(:after AS uuid) IS NULL OR b.card_id > CAST(:after AS uuid))
            """
        ),
        {
            "kinds": list(move_kinds),
            "pos": pos_system,
            "cards": None if card_ids is None else list(card_ids),
            "after": after,
        },
    )
    await conn.execute(sql("ALTER TABLE rc_base ADD PRIMARY KEY (card_id)"))


async def capture_shadows(conn: AsyncConnection, card_ids: Sequence[uuid.UUID] | None) -> None:
    """`rc_shadow`: every shadow card with a Shopify card, and whether a job holds it."""
    await conn.execute(
        sql(
            """
            CREATE TEMP TABLE rc_shadow AS
            WITH busy AS (
                SELECT DISTINCT payload->>'shadow_id' AS shadow_id FROM jobs
                WHERE state IN ('queued', 'running') AND payload ? 'shadow_id'
            )
            SELECT sc.id AS shadow_id, sc.card_id, sc.state, sc.shopify_gift_card_id AS shopify_id,
                   sc.hold_code IS NOT NULL AS has_hold, sc.applied_amount_minor,
                   sc.vii_last4, busy.shadow_id IS NOT NULL AS busy,
                   sc.settled_at IS NOT NULL AS settled
            FROM shadow_cards sc
            LEFT JOIN busy ON busy.shadow_id = sc.id::text
            WHERE sc.shopify_gift_card_id IS NOT NULL
              AND (CAST(:cards AS uuid[]) IS NULL OR sc.card_id = ANY(CAST(:cards AS uuid[])))
            """
        ),
        {"cards": None if card_ids is None else list(card_ids)},
    )


async def create_listings(conn: AsyncConnection) -> None:
    """The empty `rc_shopify` and `rc_pos`, for `copy_rows`."""
    await conn.execute(
        sql(
            "CREATE TEMP TABLE rc_shopify (id text NOT NULL, balance_minor bigint NOT NULL, "
            "enabled boolean NOT NULL, currency text NOT NULL, last4 text, note_pos_ext text, "
            "shadow_ref text, created_at timestamptz, serial_hash text)"
        )
    )
    await conn.execute(
        sql(
            "CREATE TEMP TABLE rc_pos (external_id text NOT NULL, balance_minor bigint NOT NULL,"
            " enabled boolean NOT NULL, last4 text, serial_hash text)"
        )
    )


async def copy_rows(
    conn: AsyncConnection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """COPY rows into a listing table (asyncpg's binary COPY: no statement per row)."""
    if not rows:
        return
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    await driver.copy_records_to_table(table, records=rows, columns=list(columns))


async def ids_to_read(conn: AsyncConnection, *, with_bases: bool) -> tuple[set[str], set[str]]:
    """(Shopify ids, POS ids) the captured cards are linked to, for a run of named cards."""
    shopify_ids: set[str] = set()
    pos_ids: set[str] = set()
    if with_bases:
        for row in (await conn.execute(sql("SELECT shopify_id, pos_id FROM rc_base"))).all():
            if row.shopify_id is not None:
                shopify_ids.add(row.shopify_id)
            if row.pos_id is not None:
                pos_ids.add(row.pos_id)
    for row in (await conn.execute(sql("SELECT shopify_id FROM rc_shadow"))).all():
        shopify_ids.add(row.shopify_id)
    return shopify_ids, pos_ids


async def index_listings(conn: AsyncConnection, *, with_bases: bool) -> None:
    # A page read while the POS was writing can repeat a card: keep one row per id.
    for table, key in (("rc_shopify", "id"), ("rc_pos", "external_id")):
        await conn.execute(
            sql(
                f"DELETE FROM {table} a USING {table} b "  # noqa: S608 -- fixed names
                f"WHERE a.{key} = b.{key} AND a.ctid < b.ctid"
            )
        )
        await conn.execute(sql(f"CREATE UNIQUE INDEX ON {table} ({key})"))
        await conn.execute(sql(f"CREATE INDEX ON {table} (serial_hash)"))
    await conn.execute(sql("CREATE INDEX ON rc_shopify (note_pos_ext)"))
    # Autovacuum never analyses temporary tables; the joins that follow need row counts.
    for table in ("rc_shopify", "rc_pos", "rc_shadow", *(("rc_base",) if with_bases else ())):
        await conn.execute(sql(f"ANALYZE {table}"))


# --- omni cards, a batch at a time ---------------------------------------------------------

_BATCH_FROM = """
    FROM rc_base b
    LEFT JOIN rc_shopify s ON s.id = b.shopify_id
    LEFT JOIN rc_pos p ON p.external_id = b.pos_id
    WHERE b.card_id > CAST(:after AS uuid) AND b.card_id <= CAST(:last AS uuid)
"""
# In agreement as it stands: both sides hold the base and are enabled, or the card is over
# everywhere and recorded so. Anything else goes to the merge.
_SETTLED = """
    (NOT b.pending AND s.id IS NOT NULL AND p.external_id IS NOT NULL AND (
        (s.enabled AND p.enabled AND s.balance_minor = b.balance_minor
         AND p.balance_minor = b.balance_minor AND upper(btrim(s.currency)) = :currency)
        OR (NOT s.enabled AND NOT p.enabled AND b.card_state = 'deactivated')))
"""
_BATCH_COUNTS = f"""
    SELECT count(*) AS cards, count(*) FILTER (WHERE {_SETTLED}) AS settled {_BATCH_FROM}
"""
_BATCH_SUSPECTS = f"""
    SELECT b.card_id, b.balance_minor, b.version, b.pending, b.card_state,
           b.shopify_id, b.pos_id, b.shopify_code_hash, b.pos_code_hash,
           s.id AS s_id, s.balance_minor AS s_balance, s.enabled AS s_enabled,
           s.currency AS s_currency,
           p.external_id AS p_id, p.balance_minor AS p_balance, p.enabled AS p_enabled
    {_BATCH_FROM} AND NOT {_SETTLED}
    ORDER BY b.card_id
"""


async def base_count(conn: AsyncConnection) -> int:
    return int(await conn.scalar(sql("SELECT count(*) FROM rc_base")) or 0)


async def batch_end(conn: AsyncConnection, after: str, size: int) -> Any:
    """The last card of the next batch of `size` cards after `after`, or None when none is left.

    A plain range (no "IS NULL OR"): each batch walks the key's index from where the last one
    stopped, instead of scanning and sorting every card.
    """
    last = await conn.scalar(
        sql(
            "SELECT card_id FROM rc_base WHERE card_id > CAST(:after AS uuid) "
            "ORDER BY card_id OFFSET :skip LIMIT 1"
        ),
        {"after": after, "skip": size - 1},
    )
    if last is None:
        last = await conn.scalar(
            sql(
                "SELECT card_id FROM rc_base WHERE card_id > CAST(:after AS uuid) "
                "ORDER BY card_id DESC LIMIT 1"
            ),
            {"after": after},
        )
    return last


async def batch_counts(conn: AsyncConnection, after: str, last: Any, currency: str) -> Any:
    """(cards, settled) of the batch; settled cards agree with their base on both sides."""
    window = {"after": after, "last": last, "currency": currency}
    return (await conn.execute(sql(_BATCH_COUNTS), window)).one()


async def batch_suspects(conn: AsyncConnection, after: str, last: Any, currency: str) -> list[Any]:
    """The batch's cards that are not settled, with both sides' snapshot, in card order."""
    window = {"after": after, "last": last, "currency": currency}
    return list((await conn.execute(sql(_BATCH_SUSPECTS), window)).all())


async def shopify_twins(conn: AsyncConnection, pos_id: str, pos_code_hash: str | None) -> list[Any]:
    """Unlinked Shopify cards giftsync's marks tie to this POS card (note or derived serial)."""
    rows = await conn.execute(
        sql(
            """
            SELECT s.id AS external_id, s.last4, s.balance_minor, s.enabled,
                   s.currency, s.note_pos_ext IS NOT NULL AS imported
            FROM rc_shopify s
            WHERE (s.note_pos_ext = :pos_id
                   OR (CAST(:code_hash AS text) IS NOT NULL
                       AND s.serial_hash = CAST(:code_hash AS text)))
              AND NOT EXISTS (SELECT 1 FROM card_links l
                              WHERE l.system = 'shopify' AND l.external_id = s.id)
            """
        ),
        {"pos_id": pos_id, "code_hash": pos_code_hash},
    )
    return list(rows.all())


async def pos_twins(
    conn: AsyncConnection, shopify_id: str, shopify_code_hash: str | None, pos_system: str
) -> list[Any]:
    """Unlinked POS cards giftsync's marks tie to this Shopify card."""
    rows = await conn.execute(
        sql(
            """
            SELECT p.external_id, p.last4, p.balance_minor, p.enabled, p.serial_hash,
                   s.note_pos_ext IS NOT NULL AS imported
            FROM rc_pos p
            LEFT JOIN rc_shopify s ON s.id = :shopify_id
            WHERE (p.external_id = s.note_pos_ext
                   OR (s.serial_hash IS NOT NULL AND p.serial_hash = s.serial_hash)
                   OR (CAST(:code_hash AS text) IS NOT NULL
                       AND p.serial_hash = CAST(:code_hash AS text)))
              AND NOT EXISTS (SELECT 1 FROM card_links l
                              WHERE l.system = :pos AND l.external_id = p.external_id)
            """
        ),
        {"shopify_id": shopify_id, "code_hash": shopify_code_hash, "pos": pos_system},
    )
    return list(rows.all())


# --- shadow cards ------------------------------------------------------------------------------


async def busy_shadow_cards(conn: AsyncConnection) -> tuple[int, list[uuid.UUID]]:
    """(shadow cards free to check, cards of those a job is busy with)."""
    free = int(await conn.scalar(sql("SELECT count(*) FROM rc_shadow WHERE NOT busy")) or 0)
    busy = (await conn.execute(sql("SELECT card_id FROM rc_shadow WHERE busy"))).all()
    return free, [row.card_id for row in busy]


async def shadow_problems(conn: AsyncConnection) -> list[Any]:
    """Shadow cards whose Shopify card disagrees with the hold behind it: enabled although
    the card is no longer applied, or disabled (or gone) although its hold is open."""
    rows = await conn.execute(
        sql(
            """
            SELECT r.shadow_id, r.card_id, r.state, r.shopify_id, r.has_hold,
                   r.applied_amount_minor, r.vii_last4, r.settled,
                   s.id IS NOT NULL AS found, s.enabled, s.balance_minor, s.last4
            FROM rc_shadow r
            LEFT JOIN rc_shopify s ON s.id = r.shopify_id
            WHERE NOT r.busy AND (
                (r.state <> 'applied' AND s.enabled)
                OR (r.state = 'applied' AND r.has_hold
                    AND (s.id IS NULL OR NOT s.enabled)))
            ORDER BY r.shadow_id
            """
        )
    )
    return list(rows.all())


# --- upstream cards giftsync made but no longer links --------------------------------------------


async def unrecorded_shadow_cards(conn: AsyncConnection, created_before: Any) -> list[Any]:
    """Enabled Shopify cards marked as shadow cards that no checkout recorded or holds."""
    rows = await conn.execute(
        sql(
            """
            SELECT s.id, s.last4, s.shadow_ref, s.balance_minor
            FROM rc_shopify s
            WHERE s.shadow_ref IS NOT NULL AND s.enabled AND s.created_at < :before
              AND NOT EXISTS (SELECT 1 FROM shadow_cards sc
                              WHERE sc.id::text = s.shadow_ref
                                 OR sc.shopify_gift_card_id = s.id)
              AND NOT EXISTS (SELECT 1 FROM card_links l
                              WHERE l.system = 'shopify' AND l.external_id = s.id)
              AND NOT EXISTS (SELECT 1 FROM jobs j
                              WHERE j.state IN ('queued', 'running')
                                AND j.payload->>'shadow_id' = s.shadow_ref)
            ORDER BY s.id
            """
        ),
        {"before": created_before},
    )
    return list(rows.all())


async def unlinked_imports(conn: AsyncConnection, pos_system: str | None) -> list[Any]:
    """Shopify cards giftsync made for a POS card (their note says which), linked nowhere,
    unless that POS card's own card lacks a Shopify link (the omni-card phase owns that)."""
    rows = await conn.execute(
        sql(
            """
            SELECT s.id, s.last4, s.note_pos_ext, s.balance_minor, s.enabled,
                   p.external_id IS NOT NULL AS pos_found, pl.card_id AS pos_card_id
            FROM rc_shopify s
            LEFT JOIN rc_pos p ON p.external_id = s.note_pos_ext
            LEFT JOIN card_links pl ON pl.system = :pos AND pl.external_id = s.note_pos_ext
            WHERE s.note_pos_ext IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM card_links l
                              WHERE l.system = 'shopify' AND l.external_id = s.id)
              AND NOT (pl.card_id IS NOT NULL
                       AND NOT EXISTS (SELECT 1 FROM card_links o
                                       WHERE o.card_id = pl.card_id
                                         AND o.system = 'shopify'))
            ORDER BY s.id
            """
        ),
        {"pos": pos_system},
    )
    return list(rows.all())


async def unlinked_exports(conn: AsyncConnection, pos_system: str | None) -> list[Any]:
    """POS cards giftsync exported from Shopify (derived serial), linked nowhere, unless
    that Shopify card's own card lacks a POS link."""
    rows = await conn.execute(
        sql(
            """
            SELECT p.external_id, p.last4, p.balance_minor, p.enabled,
                   s.id AS shopify_id, sl.card_id AS shopify_card_id
            FROM rc_pos p
            JOIN rc_shopify s ON s.serial_hash = p.serial_hash
            LEFT JOIN card_links sl ON sl.system = 'shopify' AND sl.external_id = s.id
            WHERE NOT EXISTS (SELECT 1 FROM card_links l
                              WHERE l.system = :pos AND l.external_id = p.external_id)
              AND NOT (sl.card_id IS NOT NULL
                       AND NOT EXISTS (SELECT 1 FROM card_links o
                                       WHERE o.card_id = sl.card_id AND o.system = :pos))
            ORDER BY p.external_id
            """
        ),
        {"pos": pos_system},
    )
    return list(rows.all())
