"""What every part of omni sync shares: job kinds, outcomes, and how each side's card reads."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from app.clients.shopify import ShopifyGiftCard
from app.money import to_minor
from app.sync.omni.merge import MergePlan, SystemState
from app.sync.pos import PosCard

SHOPIFY = "shopify"
SYNC_JOB = "omni.sync"
MOVE_JOB = "omni.move"
DEACTIVATE_JOB = "omni.deactivate"
NOTIFY_JOB = "omni.notify"

# Shopify and Lightspeed stamp changes to the whole second, and a change can be committed
# after a later one was already stamped: re-reading a little before the cursor costs a few
# no-op merges and never skips a change.
CURSOR_OVERLAP = timedelta(seconds=5)
SHOPIFY_CODE = re.compile(r"[a-z0-9]{8,20}", re.IGNORECASE)
NOTE_MARKER = "giftsync"

LinkStatus = Literal["moved", "already_linked", "skipped"]
SyncStatus = Literal["in_sync", "repaired", "pending", "finding", "not_found"]


@dataclass(frozen=True, slots=True)
class LinkOutcome:
    """What happened to one card offered for linking (poller or backfill)."""

    status: LinkStatus
    card_id: uuid.UUID | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    status: SyncStatus
    plan: MergePlan | None = None


def shopify_state(card: ShopifyGiftCard, *, today: date | None = None) -> SystemState:
    """Shopify's view of a card; an expired card counts as disabled, like a deactivated one."""
    expired = card.expires_on is not None and card.expires_on < (today or datetime.now(UTC).date())
    enabled = card.enabled and card.deactivated_at is None and not expired
    return SystemState(
        system=SHOPIFY,
        balance_minor=to_minor(card.balance),
        status="enabled" if enabled else "disabled",
        currency=card.currency,
    )


def pos_state(card: PosCard, system: str, currency: str) -> SystemState:
    return SystemState(
        system=system, balance_minor=card.balance_minor, status=card.status, currency=currency
    )


def serial_for_shopify_card(prefix: str, shopify_card_id: str, *, key: str) -> str:
    """The POS serial of a card sold online: the prefix, then 16 digits keyed on the card.

    The serial spends the card in store, and Shopify card ids are not secret (order receipts
    carry them), so the digits are an HMAC of the id under CARD_HASH_KEY: unguessable, yet
    deterministic, so a create retried after a crash asks for the same serial and finds the
    card it made. 10^16 values keep two cards' serials apart.
    """
    legacy_id = shopify_card_id.rsplit("/", 1)[-1]
    if not legacy_id:
        raise ValueError("an empty Shopify gift card id")
    digest = hmac.new(key.encode(), f"pos-serial:{legacy_id}".encode(), hashlib.sha256).digest()
    return prefix + str(int.from_bytes(digest[:8], "big") % 10**16).rjust(16, "0")


def link_note(system: str, external_id: str) -> str:
    """The note giftsync writes on a Shopify card it made for a POS card."""
    return f"{NOTE_MARKER}: {system} card {external_id}"


def made_by_giftsync(card: ShopifyGiftCard) -> bool:
    """Made by giftsync (a shadow card or an imported POS card), so never exported."""
    return NOTE_MARKER in (card.note or "")
