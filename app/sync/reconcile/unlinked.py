"""Phase 5 of a full run: upstream cards giftsync made but no card links any more.

Found by the marks giftsync leaves: the note on a Shopify card it made for a POS card, the
serial it derived for a POS card it made from a Shopify card, the shadow reference on a shadow
card's Shopify card. They are reported (`missing_link`), and a shadow card no checkout recorded
is deactivated, as an orphan is.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import reconcile_snapshot as snapshot
from app.sync.reconcile.common import SHADOW_GRACE, Execution, system_status
from app.sync.reconcile.shadow_cards import deactivate_orphan


async def check_unlinked(ex: Execution, conn: AsyncConnection) -> None:
    if ex.omni is not None:
        await _unlinked_shopify(ex, conn)
        await _unlinked_pos(ex, conn)
    for row in await snapshot.unrecorded_shadow_cards(conn, ex.t0 - SHADOW_GRACE):
        # A checkout created it and never recorded it (crashed before its commit).
        await deactivate_orphan(
            ex,
            f"unlinked:shopify:{row.id}",
            None,
            row.id,
            {
                "shopify_id": row.id,
                "shopify_last4": row.last4,
                "shopify_balance_minor": row.balance_minor,
                "shadow_id": row.shadow_ref,
                "problem": "a shadow card with no checkout record",
                "repair": "deactivate the Shopify card",
            },
        )


async def _unlinked_shopify(ex: Execution, conn: AsyncConnection) -> None:
    """Shopify cards giftsync made for a POS card (its note says which), linked nowhere.

    Skipped when the POS card's own card lacks a Shopify link: phase 3 owns that one.
    """
    for row in await snapshot.unlinked_imports(conn, ex.pos_system):
        await ex.finding(
            "missing_link",
            f"unlinked:shopify:{row.id}",
            None,
            {
                "shopify_id": row.id,
                "shopify_last4": row.last4,
                "shopify_balance_minor": row.balance_minor,
                "shopify_status": system_status(row.enabled),
                "pos_system": ex.pos_system,
                "pos_external_id": row.note_pos_ext,
                "pos_card_found": bool(row.pos_found),
                "pos_linked_to": None if row.pos_card_id is None else str(row.pos_card_id),
                "problem": "giftsync created this Shopify card for a POS card; no card links it",
            },
        )


async def _unlinked_pos(ex: Execution, conn: AsyncConnection) -> None:
    """POS cards giftsync exported from Shopify (derived serial), linked nowhere."""
    for row in await snapshot.unlinked_exports(conn, ex.pos_system):
        await ex.finding(
            "missing_link",
            f"unlinked:{ex.pos_system}:{row.external_id}",
            None,
            {
                "pos_system": ex.pos_system,
                "pos_external_id": row.external_id,
                "serial_last4": row.last4,
                "pos_balance_minor": row.balance_minor,
                "pos_status": system_status(row.enabled),
                "shopify_id": row.shopify_id,
                "shopify_linked_to": None
                if row.shopify_card_id is None
                else str(row.shopify_card_id),
                "problem": "giftsync exported this POS card from Shopify; no card links it",
            },
        )
