"""What Vii's answers mean as errors: one class per decline, matched by code or by wording."""

from __future__ import annotations

import re
from decimal import Decimal

from app.clients.errors import UnknownOutcome, UpstreamRejected, UpstreamUnavailable

UPSTREAM = "vii"

# No public code list exists; these are the codes our simulator uses. Messages are matched too
# (see `refusal_class`) so a real Vii with other codes still maps to the right error.
CODE_INVALID_PIN = "1"
CODE_INSUFFICIENT_FUNDS = "2"
CODE_CARD_INACTIVE = "3"
CODE_UNKNOWN_CARD = "4"
CODE_AUTH_FAILED = "5"
CODE_HOLD_NOT_FOUND = "6"


class ViiError(UpstreamRejected):
    """Vii answered with a non-zero ResponseCode."""

    upstream = UPSTREAM


class ViiInvalidPin(ViiError):
    pass


class ViiInsufficientFunds(ViiError):
    def __init__(self, message: str, *, code: str, available: Decimal) -> None:
        super().__init__(message, code=code)
        self.available = available


class ViiCardInactive(ViiError):
    pass


class ViiUnknownCard(ViiError):
    pass


class ViiAuthFailed(ViiError):
    pass


class ViiHoldNotFound(ViiError):
    """Cancel or capture of a pre-authorisation Vii does not know (or no longer holds open)."""


class ViiUnavailable(UpstreamUnavailable):
    upstream = UPSTREAM


class ViiUnknownOutcome(UnknownOutcome):
    """A PreAuthRequest or Redemption was sent and its answer lost; `reference` is its viiTranId."""

    upstream = UPSTREAM


_CODE_TABLE: dict[str, type[ViiError]] = {
    CODE_INVALID_PIN: ViiInvalidPin,
    CODE_INSUFFICIENT_FUNDS: ViiInsufficientFunds,
    CODE_CARD_INACTIVE: ViiCardInactive,
    CODE_UNKNOWN_CARD: ViiUnknownCard,
    CODE_AUTH_FAILED: ViiAuthFailed,
    CODE_HOLD_NOT_FOUND: ViiHoldNotFound,
}

# Checked in order: the more specific words first ("Invalid PIN" must not read as an invalid
# card, "Pre-auth not found" not as an unknown card, "Preauth exceeds balance" as funds).
_KEYWORDS: tuple[tuple[re.Pattern[str], type[ViiError]], ...] = (
    (
        re.compile(r"insufficient|\bfunds?\b|exceeds?.*balance|balance.*exceed"),
        ViiInsufficientFunds,
    ),
    (re.compile(r"\bpin\b"), ViiInvalidPin),
    (re.compile(r"pre-?auth"), ViiHoldNotFound),
    (re.compile(r"inactive|not active|blocked|expired|suspended|cancelled card"), ViiCardInactive),
    (re.compile(r"not found|invalid card|unknown card|no such card"), ViiUnknownCard),
    (re.compile(r"auth|login|credential|\buser"), ViiAuthFailed),
    (re.compile(r"balance"), ViiInsufficientFunds),
)


def refusal_class(code: str, message: str) -> type[ViiError] | None:
    """The message wins over the code: codes differ between Vii set-ups, words do not."""
    lowered = message.lower()
    for pattern, error in _KEYWORDS:
        if pattern.search(lowered):
            return error
    return _CODE_TABLE.get(code)
