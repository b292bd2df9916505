"""Phases 1 and 2 of a run: the bases at T0, then both upstreams, into the snapshot tables.

Shopify's bulk export and the POS card list are streamed into temporary tables (COPY in
batches), so nothing in this process grows with the card count. A run of named cards reads
just those cards, live.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.clients.shopify import ShopifyGiftCard
from app.db import reconcile_snapshot as snapshot
from app.db.reconcile_snapshot import POS_COLUMNS, SHOPIFY_COLUMNS
from app.logging import get_logger
from app.sync.omni.common import (
    CURSOR_OVERLAP,
    DEACTIVATE_JOB,
    MOVE_JOB,
    NOTE_MARKER,
    pos_state,
    shopify_state,
)
from app.sync.omni.flow import OmniSync
from app.sync.omni.triggers import pos_cursor_name, read_cursor
from app.sync.pos import PosCard
from app.sync.reconcile.common import TEMP_BUFFERS, Execution

log = get_logger(__name__)

_LINK_NOTE = re.compile(rf"^{NOTE_MARKER}: (?P<system>[a-z]+) card (?P<external_id>\S+)$")
_SHADOW_NOTE = re.compile(r"^shadow:(?P<shadow_id>[0-9a-f-]{36})$")


async def capture(ex: Execution, conn: AsyncConnection) -> None:
    """T0: the base of every card (with its moves in flight) and every shadow card."""
    cards = None if ex.params.card_ids is None else list(ex.params.card_ids)
    await snapshot.reset(conn, TEMP_BUFFERS)
    if ex.omni is not None:
        await snapshot.capture_bases(
            conn,
            move_kinds=(MOVE_JOB, DEACTIVATE_JOB),
            pos_system=ex.pos_system,
            card_ids=cards,
            after=ex.after,
        )
    await snapshot.capture_shadows(conn, cards)
    await snapshot.create_listings(conn)


def _shopify_row(ex: Execution, card: ShopifyGiftCard) -> tuple[Any, ...]:
    state = shopify_state(card, today=ex.today)
    note = (card.note or "").strip()
    note_pos_ext = None
    shadow_ref = None
    serial_hash = None
    link = _LINK_NOTE.match(note)
    shadow = _SHADOW_NOTE.match(note)
    if link is not None and link["system"] == ex.pos_system:
        note_pos_ext = link["external_id"]
    elif shadow is not None:
        shadow_ref = shadow["shadow_id"]
    elif ex.omni is not None and NOTE_MARKER not in note:
        # A merchant's card giftsync may have exported: its POS twin has a derived serial.
        with contextlib.suppress(ValueError):
            serial = ex.omni.pos_serial_for(card.id)
            serial_hash = ex.omni.code_hash(serial)
    return (
        card.id,
        state.balance_minor,
        state.status == "enabled",
        card.currency,
        card.last_characters[-4:],
        note_pos_ext,
        shadow_ref,
        card.created_at,
        serial_hash,
    )


def _pos_row(ex: Execution, omni: OmniSync, card: PosCard) -> tuple[Any, ...]:
    state = pos_state(card, omni.pos.system, ex.r.settings.currency)
    # Only a serial giftsync derived from a Shopify card can name a Shopify twin; the
    # others are matched by the note on their Shopify card.
    prefixed = card.serial.startswith(ex.r.settings.shopify_serial_prefix)
    return (
        card.external_id,
        state.balance_minor,
        state.status == "enabled",
        card.serial[-4:],
        omni.code_hash(card.serial) if prefixed else None,
    )


async def _stream_into(
    ex: Execution,
    conn: AsyncConnection,
    phase: str,
    table: str,
    columns: Sequence[str],
    rows: AsyncIterator[tuple[Any, ...]],
) -> int:
    batch: list[tuple[Any, ...]] = []
    count = 0
    async for row in rows:
        batch.append(row)
        if len(batch) >= ex.r.batch_size:
            await snapshot.copy_rows(conn, table, columns, batch)
            count += len(batch)
            batch = []
            ex.report(phase, count, None)
    await snapshot.copy_rows(conn, table, columns, batch)
    count += len(batch)
    ex.report(phase, count, count)
    return count


async def read_everything(ex: Execution, conn: AsyncConnection) -> None:
    """Shopify's bulk export once, and every POS card by paging, into the snapshot."""

    async def shopify_rows() -> AsyncIterator[tuple[Any, ...]]:
        async for card in ex.r.shopify.bulk_export_gift_cards(
            poll_interval=ex.r.bulk_poll_interval
        ):
            yield _shopify_row(ex, card)

    shopify_count = await _stream_into(
        ex, conn, "shopify", "rc_shopify", SHOPIFY_COLUMNS, shopify_rows()
    )
    pos_count = 0
    if ex.omni is not None:
        omni = ex.omni

        async def pos_rows() -> AsyncIterator[tuple[Any, ...]]:
            async for card in omni.pos.iter_cards():
                yield _pos_row(ex, omni, card)

        pos_count = await _stream_into(ex, conn, "pos", "rc_pos", POS_COLUMNS, pos_rows())
    await snapshot.index_listings(conn, with_bases=ex.omni is not None)
    log.info("reconcile_snapshot", shopify_cards=shopify_count, pos_cards=pos_count)


async def read_cards(ex: Execution, conn: AsyncConnection) -> None:
    """A reconcile of named cards reads just those cards, live (at most a thousand).

    Missing links are reported, not re-linked: finding a twin takes the full listings.
    """
    if ex.omni is not None and not ex.omni.pos.live_reads:
        await _catch_up_projection(ex, ex.omni)
    shopify_ids, pos_ids = await snapshot.ids_to_read(conn, with_bases=ex.omni is not None)
    shopify_rows = []
    for shopify_id in sorted(shopify_ids):
        card = await ex.r.shopify.get_gift_card(shopify_id)
        if card is not None:
            shopify_rows.append(_shopify_row(ex, card))
    await snapshot.copy_rows(conn, "rc_shopify", SHOPIFY_COLUMNS, shopify_rows)
    if ex.omni is not None:
        pos_rows = []
        for pos_id in sorted(pos_ids):
            pos_card = await ex.omni.pos.get_card(pos_id)
            if pos_card is not None:
                pos_rows.append(_pos_row(ex, ex.omni, pos_card))
        await snapshot.copy_rows(conn, "rc_pos", POS_COLUMNS, pos_rows)
    await snapshot.index_listings(conn, with_bases=ex.omni is not None)


async def _catch_up_projection(ex: Execution, omni: OmniSync) -> None:
    """A POS read through giftsync's projection (OnSite) is as fresh as the last poll:
    apply what the till did since, as the poller would (its cursor stays where it is, so
    it still handles those changes)."""
    since = await read_cursor(ex.r.sessions, pos_cursor_name(omni.pos.system))
    async for _change in omni.pos.changes_since(
        since - CURSOR_OVERLAP if since is not None else None
    ):
        pass
