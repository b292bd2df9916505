"""Omni gift cards (DESIGN 1.A): one card in Shopify and on the POS, every move mirrored."""

from app.sync.omni.flow import (
    CURSOR_OVERLAP,
    DEACTIVATE_JOB,
    MOVE_JOB,
    NOTE_MARKER,
    NOTIFY_JOB,
    SHOPIFY,
    SYNC_JOB,
    LinkOutcome,
    OmniSync,
    SyncOutcome,
    pos_state,
    serial_for_shopify_card,
    shopify_state,
)
from app.sync.omni.triggers import POS_POLLER, SHOPIFY_POLLER, OmniPollers

__all__ = [
    "CURSOR_OVERLAP",
    "DEACTIVATE_JOB",
    "MOVE_JOB",
    "NOTE_MARKER",
    "NOTIFY_JOB",
    "POS_POLLER",
    "SHOPIFY",
    "SHOPIFY_POLLER",
    "SYNC_JOB",
    "LinkOutcome",
    "OmniPollers",
    "OmniSync",
    "SyncOutcome",
    "pos_state",
    "serial_for_shopify_card",
    "shopify_state",
]
