"""What OnSite's refusals and silences mean as errors."""

from __future__ import annotations

from app.clients.errors import UnknownOutcome, UpstreamRejected, UpstreamUnavailable

UPSTREAM = "onsite"


class OnSiteError(UpstreamRejected):
    upstream = UPSTREAM


class OnSiteAuthError(OnSiteError):
    """Credentials, private app id or seat refused; retrying will not help."""


class OnSiteUnavailable(UpstreamUnavailable):
    upstream = UPSTREAM


class OnSiteUnknownOutcome(UnknownOutcome):
    upstream = UPSTREAM
