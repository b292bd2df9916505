"""Headers every answer carries, in one place: CORS for the two checkout endpoints, and the
security headers (DESIGN 3; issues 14 and 16).

CORS is answered exactly as Shopify's own app library answers checkout extensions
(Shopify/shopify-app-js `ensureCORSHeadersFactory`): any origin (`*`, the extension runs in a
web worker on an origin Shopify may change), methods `POST`, headers `Authorization,
Content-Type`, never credentials, on preflights and on every answer including problems.
`Retry-After` is exposed so the extension can honour it. Nothing else gets CORS.

Every answer carries a Content-Security-Policy without 'unsafe-inline' (issue 17): pages load
their scripts and styles from giftsync itself, and a page that needs an inline element (the API
docs' Redoc injects its styles) marks it with the request's nonce, `request.state.csp_nonce`,
or names the exact styles it needs by hash in `request.state.csp_style_hashes`.
HTML pages may not be framed (`frame-ancestors 'none'`, and X-Frame-Options for old browsers).
"""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CORS_PATHS = frozenset({"/check-balance", "/check-balance/release"})
CORS_MAX_AGE_S = 7200
_CORS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"Retry-After"),
]
_PREFLIGHT = [
    *_CORS,
    (b"access-control-allow-methods", b"POST"),
    (b"access-control-allow-headers", b"Authorization, Content-Type"),
    (b"access-control-max-age", str(CORS_MAX_AGE_S).encode()),
    (b"vary", b"Origin"),
]
_ALWAYS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


_HSTS = (b"strict-transport-security", b"max-age=31536000")
# An answer that is not a page: nothing in it may load anything or be framed.
_CSP_OTHER = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_FRAME_DENY = (b"x-frame-options", b"DENY")
# The sandbox demo page may call giftsync on another origin (`?api=`), as the extension does.
_CONNECT = {"/demo/checkout": "'self' http: https:"}


def page_policy(nonce: str, path: str, style_hashes: tuple[str, ...] = ()) -> str:
    """The CSP of an HTML page: giftsync's own files, and inline only with this nonce (or, for
    a style a page names by its hash, that exact style)."""
    connect = _CONNECT.get(path, "'self'")
    styles = "".join(f" '{digest}'" for digest in style_hashes)
    return (
        "default-src 'self'; "
        f"script-src 'self' 'nonce-{nonce}'; "
        f"style-src 'self' 'nonce-{nonce}'{styles}; "
        "img-src 'self' data:; "
        "font-src 'self'; "
        f"connect-src {connect}; "
        "worker-src 'self' blob:; "
        "object-src 'none'; "
        "base-uri 'none'; "
        "form-action 'self'; "
        "frame-ancestors 'none'"
    )


def _is_html(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"content-type" and value.lower().startswith(b"text/html")
        for name, value in headers
    )


def _served_over_https(scope: Scope) -> bool:
    """HSTS only when the operator says giftsync is reached over https (`PUBLIC_URL`)."""
    runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    public_url = getattr(getattr(runtime, "settings", None), "public_url", None) or ""
    return str(public_url).startswith("https://")


class ResponseHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [*_ALWAYS, *([_HSTS] if _served_over_https(scope) else [])]
        cors = scope["path"] in CORS_PATHS
        if cors and scope["method"] == "OPTIONS":
            await _preflight(send, [*_PREFLIGHT, *extra])
            return
        added = [*extra, *(_CORS if cors else [])]
        nonce = secrets.token_urlsafe(16)
        state = scope.setdefault("state", {})
        state["csp_nonce"] = nonce

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if _is_html(headers):
                    hashes = tuple(state.get("csp_style_hashes", ()))
                    policy = page_policy(nonce, scope["path"], hashes).encode()
                    csp = [(b"content-security-policy", policy), _FRAME_DENY]
                else:
                    csp = [_CSP_OTHER]
                message["headers"] = [*headers, *added, *csp]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _preflight(send: Send, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
