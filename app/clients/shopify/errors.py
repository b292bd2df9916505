"""What Shopify's refusals mean as errors: one class per kind of `userErrors` code."""

from __future__ import annotations

from app.clients.errors import UnknownOutcome, UpstreamRejected, UpstreamUnavailable

UPSTREAM = "shopify"


class ShopifyUserError(UpstreamRejected):
    """Shopify understood and refused: a `userErrors` entry or a non-transient GraphQL error."""

    upstream = UPSTREAM

    def __init__(self, message: str, *, code: str, field: str | None = None) -> None:
        super().__init__(message, code=code, upstream=UPSTREAM)
        self.field = field


class ShopifyCodeTaken(ShopifyUserError):
    """The gift card code (or customer email) already exists."""


class ShopifyInsufficientFunds(ShopifyUserError):
    """A debit above the card's balance."""


class ShopifyNotFound(ShopifyUserError):
    """The gift card, customer or other object named does not exist."""


class ShopifyInvalidInput(ShopifyUserError):
    """Refused input: a code too short or long, a bad amount, a mismatching currency, ..."""


class ShopifyAuthError(ShopifyUserError):
    """Shopify refused giftsync itself: the access token (HTTP 401/403, even after a renewal),
    or the client credentials grant (wrong client id or secret, app uninstalled). Nothing works
    until an operator acts, so `/readyz` shows it as an error."""


class ShopifyUnavailable(UpstreamUnavailable):
    upstream = UPSTREAM

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, upstream=UPSTREAM, retry_after=retry_after)


class ShopifyUnknownOutcome(UnknownOutcome):
    upstream = UPSTREAM

    def __init__(self, message: str, *, reference: str) -> None:
        super().__init__(message, reference=reference, upstream=UPSTREAM)


CODE_TO_ERROR: dict[str, type[ShopifyUserError]] = {
    "TAKEN": ShopifyCodeTaken,
    "INSUFFICIENT_FUNDS": ShopifyInsufficientFunds,
    "GIFT_CARD_NOT_FOUND": ShopifyNotFound,
    "CUSTOMER_NOT_FOUND": ShopifyNotFound,
    "RECIPIENT_NOT_FOUND": ShopifyNotFound,
    "NOT_FOUND": ShopifyNotFound,
    "TOO_SHORT": ShopifyInvalidInput,
    "TOO_LONG": ShopifyInvalidInput,
    "INVALID": ShopifyInvalidInput,
    "GREATER_THAN": ShopifyInvalidInput,
    "MISMATCHING_CURRENCY": ShopifyInvalidInput,
    "NEGATIVE_OR_ZERO_AMOUNT": ShopifyInvalidInput,
    "MISSING_ARGUMENT": ShopifyInvalidInput,
}
