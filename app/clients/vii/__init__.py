"""Vii stored-value gift cards over their XML protocol (see UPSTREAMS.md "Vii gift cards").

`client` holds the one method per request type, `protocol` the XML, `errors` what a decline
means. Everything a caller needs is importable from here.
"""

from app.clients.vii.client import ViiClient
from app.clients.vii.errors import (
    CODE_AUTH_FAILED,
    CODE_CARD_INACTIVE,
    CODE_HOLD_NOT_FOUND,
    CODE_INSUFFICIENT_FUNDS,
    CODE_INVALID_PIN,
    CODE_UNKNOWN_CARD,
    UPSTREAM,
    ViiAuthFailed,
    ViiCardInactive,
    ViiError,
    ViiHoldNotFound,
    ViiInsufficientFunds,
    ViiInvalidPin,
    ViiUnavailable,
    ViiUnknownCard,
    ViiUnknownOutcome,
)
from app.clients.vii.protocol import (
    CHECK_BALANCE,
    PRE_AUTH,
    PRE_AUTH_CANCELLATION,
    REDEMPTION,
    UNDO,
    ViiBalance,
    ViiPreAuth,
    ViiRedemption,
)

__all__ = [
    "CHECK_BALANCE",
    "CODE_AUTH_FAILED",
    "CODE_CARD_INACTIVE",
    "CODE_HOLD_NOT_FOUND",
    "CODE_INSUFFICIENT_FUNDS",
    "CODE_INVALID_PIN",
    "CODE_UNKNOWN_CARD",
    "PRE_AUTH",
    "PRE_AUTH_CANCELLATION",
    "REDEMPTION",
    "UNDO",
    "UPSTREAM",
    "ViiAuthFailed",
    "ViiBalance",
    "ViiCardInactive",
    "ViiClient",
    "ViiError",
    "ViiHoldNotFound",
    "ViiInsufficientFunds",
    "ViiInvalidPin",
    "ViiPreAuth",
    "ViiRedemption",
    "ViiUnavailable",
    "ViiUnknownCard",
    "ViiUnknownOutcome",
]
