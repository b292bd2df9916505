"""Refusals a checkout understands: each is one problem `code` of DESIGN 3."""

from __future__ import annotations

from app.clients.errors import UpstreamError, UpstreamUnavailable
from app.clients.vii import (
    ViiCardInactive,
    ViiInsufficientFunds,
    ViiInvalidPin,
    ViiUnknownCard,
)


class ShadowCardError(Exception):
    """A refusal the checkout understands; `code` is DESIGN 3's stable problem code."""

    status = 400
    code = "shadow_card_error"

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class CardEmpty(ShadowCardError):
    status, code = 402, "card_empty"


class InvalidCardOrPin(ShadowCardError):
    status, code = 403, "invalid_card_or_pin"


class CardNotActive(ShadowCardError):
    status, code = 409, "card_not_active"


class PinRequired(ShadowCardError):
    status, code = 409, "pin_required"


class CardLocked(ShadowCardError):
    status, code = 423, "card_locked"


class TooManyAttempts(ShadowCardError):
    status, code = 429, "too_many_attempts"


class CardBusy(ShadowCardError):
    status, code = 429, "busy"


class ViiUnavailableError(ShadowCardError):
    status, code = 503, "vii_unavailable"


class ShopifyUnavailableError(ShadowCardError):
    status, code = 503, "shopify_unavailable"


class ShadowCardNotFound(ShadowCardError):
    status, code = 404, "not_found"


WRONG_CARD_OR_PIN = "The card number or PIN is not right."


def vii_refusal(exc: UpstreamError) -> ShadowCardError:
    """What the shopper is told when Vii refuses or fails a checkout call."""
    if isinstance(exc, ViiInvalidPin | ViiUnknownCard):
        return InvalidCardOrPin(WRONG_CARD_OR_PIN)
    if isinstance(exc, ViiCardInactive):
        return CardNotActive("This gift card is not active.")
    if isinstance(exc, ViiInsufficientFunds):
        return CardEmpty("This gift card has no balance left.")
    retry_after = int(exc.retry_after or 5) if isinstance(exc, UpstreamUnavailable) else 5
    return ViiUnavailableError("Vii is not answering; try again shortly.", retry_after=retry_after)
