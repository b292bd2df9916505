"""What Lightspeed's refusals and silences mean as errors."""

from __future__ import annotations

from app.clients.errors import UnknownOutcome, UpstreamRejected, UpstreamUnavailable

UPSTREAM = "lightspeed"


class LightspeedError(UpstreamRejected):
    """Lightspeed refused the request: 409 edit conflict, 422 validation, other 4xx."""

    upstream = UPSTREAM


class LightspeedAuthError(LightspeedError):
    """No usable token: the refresh token was refused (reused, revoked, expired) or missing."""


class LightspeedUnavailable(UpstreamUnavailable):
    upstream = UPSTREAM


class LightspeedUnknownOutcome(UnknownOutcome):
    upstream = UPSTREAM
