"""Errors every upstream client raises; each client subclasses them with its own detail.

    UpstreamError
    +- UpstreamUnavailable  not sent, or no answer after every safe retry (`retry_after`)
    +- UnknownOutcome       a write's answer was lost and no look-up could settle it (`reference`)
    +- UpstreamRejected     the upstream refused (`code`)

Each client's own classes live in its package and are importable from it, e.g.
`app.clients.vii`: ViiUnavailable, ViiUnknownOutcome, ViiError and its declines (ViiInvalidPin,
ViiInsufficientFunds, ViiCardInactive, ViiUnknownCard, ViiAuthFailed, ViiHoldNotFound);
`app.clients.shopify`: ShopifyUnavailable, ShopifyUnknownOutcome, ShopifyUserError and its kinds
(ShopifyCodeTaken, ShopifyInsufficientFunds, ShopifyNotFound, ShopifyInvalidInput);
`app.clients.lightspeed`: LightspeedUnavailable, LightspeedUnknownOutcome, LightspeedError,
LightspeedAuthError; `app.clients.onsite`: OnSiteUnavailable, OnSiteUnknownOutcome, OnSiteError,
OnSiteAuthError. Catch them by class. `app/clients/delivery.py` decides which of the first two a
failure becomes.

Messages never carry a PIN, a full card number or a credential: they are shown to operators,
stored on job rows and logged.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """Base for anything an upstream said or failed to say."""

    upstream: str = "upstream"

    def __init__(self, message: str, *, upstream: str | None = None) -> None:
        super().__init__(message)
        if upstream is not None:
            self.upstream = upstream


class UpstreamUnavailable(UpstreamError):
    """Down, timing out, 5xx or answering garbage after the retries that are safe were spent.

    `retry_after` (seconds) is a hint for the caller's own `Retry-After`.
    """

    def __init__(
        self, message: str, *, upstream: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, upstream=upstream)
        self.retry_after = retry_after


class UnknownOutcome(UpstreamError):
    """A write whose answer was lost: it may or may not have been applied upstream.

    Never retried blindly. `reference` names the attempt (Vii `viiTranId`, Lightspeed
    `remoteReference`, Shopify idempotency note) so the caller can look it up or undo it.
    """

    def __init__(self, message: str, *, reference: str, upstream: str | None = None) -> None:
        super().__init__(message, upstream=upstream)
        self.reference = reference


class UpstreamRejected(UpstreamError):
    """The upstream understood the request and refused it (4xx, userErrors, ResponseCode)."""

    def __init__(self, message: str, *, code: str, upstream: str | None = None) -> None:
        super().__init__(message, upstream=upstream)
        self.code = code
