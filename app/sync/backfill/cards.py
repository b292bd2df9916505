"""One card offered to omni sync by a backfill pass, and what a refusal of it means.

A card an upstream refuses (a code Shopify will not take, a card the POS cannot create) is
skipped with the refusal as its reason; a refusal that is about the credentials, or one card
refused after another many times in a row, is the upstream refusing everything, and stops the
pass instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.clients.errors import UpstreamRejected
from app.clients.lightspeed import LightspeedAuthError
from app.clients.onsite import OnSiteAuthError
from app.clients.shopify import ShopifyGiftCard
from app.sync.omni.common import SHOPIFY, LinkOutcome, made_by_giftsync
from app.sync.omni.flow import OmniSync
from app.sync.omni.links import export_shopify_card
from app.sync.pos import PosCard

# The upstream refuses everything (a revoked scope, a wrong account): not the cards' fault.
REJECTED_IN_A_ROW_LIMIT = 25
_AUTH_CODES = frozenset({"UNAUTHORIZED", "ACCESS_DENIED", "HTTP_401", "HTTP_403"})


@dataclass(frozen=True)
class Offered:
    """A card's outcome, with what the report may show of it (id and last 4, never a code)."""

    outcome: LinkOutcome
    external_id: str
    last4: str


async def export_from_snapshot(
    omni: OmniSync, card: ShopifyGiftCard, taken_at: datetime, stale_after: timedelta
) -> LinkOutcome:
    """Export a card read from the export, read again first when the export is stale, so the
    POS gets today's balance."""
    if not made_by_giftsync(card) and datetime.now(UTC) - taken_at > stale_after:
        linked = await omni.linked_card(SHOPIFY, card.id)
        if linked is not None:
            return LinkOutcome("already_linked", card_id=linked)
        fresh = await omni.shopify.get_gift_card(card.id)
        if fresh is None:
            return LinkOutcome("skipped", reason="not_found")
        card = fresh
    return await export_shopify_card(omni, card)


def is_auth(error: UpstreamRejected) -> bool:
    return isinstance(error, LightspeedAuthError | OnSiteAuthError) or error.code in _AUTH_CODES


def rejected(item: object, error: UpstreamRejected) -> Offered:
    reason = f"rejected_by_{error.upstream}:{error.code}"
    if isinstance(item, PosCard):
        return Offered(LinkOutcome("skipped", reason=reason), item.external_id, item.serial[-4:])
    if isinstance(item, ShopifyGiftCard):
        return Offered(LinkOutcome("skipped", reason=reason), item.id, item.last_characters)
    raise TypeError(f"not a card: {type(item).__name__}")
