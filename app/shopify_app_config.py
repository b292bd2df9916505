"""`shopify/shopify.app.toml` for giftsync's Dev Dashboard app (DESIGN 9).

`giftsync shopify app-config` writes it from `SHOPIFY_CLIENT_ID` and `PUBLIC_URL`; the merchant
deploys it with Shopify's CLI (`shopify app deploy`). Key names follow shopify.dev's app
configuration reference (build/cli-for-apps/app-configuration) and the schema Shopify's CLI
validates. A template rather than a TOML writer: the comments are part of what the merchant
reads, and every value put into it is checked to be a plain TOML string first.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# What giftsync calls: gift cards and their transactions (shadow cards, omni sync), orders for
# the webhooks and reconcile, customers for gift card owners. `write_app_proxy` is required to
# declare an app proxy at all (shopify.dev, build/online-store/app-proxies).
ACCESS_SCOPES: tuple[str, ...] = (
    "read_customers",
    "write_customers",
    "read_gift_card_transactions",
    "write_gift_card_transactions",
    "read_gift_cards",
    "write_gift_cards",
    "read_orders",
    "write_app_proxy",
)

# The topics giftsync acts on (DESIGN 3, POST /webhooks/shopify).
WEBHOOK_TOPICS: tuple[str, ...] = (
    "orders/paid",
    "orders/cancelled",
    "refunds/create",
    "order_transactions/create",
)
WEBHOOK_PATH = "/webhooks/shopify"

# https://{shop}/apps/giftsync/... is forwarded, signed, to {PUBLIC_URL}/proxy/...
APP_PROXY_PATH = "/proxy"
APP_PROXY_PREFIX = "apps"
APP_PROXY_SUBPATH = "giftsync"

# giftsync never sends a merchant through an OAuth redirect (it takes tokens by the client
# credentials grant), but Shopify's CLI requires the list; this is the placeholder the CLI
# itself registers for apps without an app home.
_NO_REDIRECT = "https://shopify.dev/apps/default-app-home/api/auth"

_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,100}", re.ASCII)
_API_VERSION = re.compile(r"[0-9]{4}-(01|04|07|10)", re.ASCII)
_URL_TEXT = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+", re.ASCII)

_TEMPLATE = """\
# giftsync's Shopify app. Deploy it from this folder with Shopify's CLI: `shopify app deploy`.
# Written by `giftsync shopify app-config` from SHOPIFY_CLIENT_ID and PUBLIC_URL: write it
# again rather than editing it by hand.
name = "giftsync"
client_id = "{client_id}"
application_url = "{public_url}"
# No pages in the Shopify admin: giftsync is set up through its environment and runs on its own.
embedded = false

[access_scopes]
# The gift card scopes may need Shopify's approval for the app (shopify/README.md).
scopes = "{scopes}"

[auth]
# giftsync takes its tokens by the client credentials grant and never redirects anyone.
redirect_urls = ["{no_redirect}"]

[webhooks]
api_version = "{api_version}"

# App-scoped subscriptions, signed with the app's client secret (SHOPIFY_API_SECRET). The Admin
# API's webhookSubscriptions query does not list them; this file is their only source.
[[webhooks.subscriptions]]
topics = [{topics}]
uri = "{webhook_uri}"

# The theme app block calls https://{{shop}}/{proxy_prefix}/{proxy_subpath}/check-balance; Shopify signs
# the request and forwards it to {proxy_url}/check-balance.
[app_proxy]
url = "{proxy_url}"
prefix = "{proxy_prefix}"
subpath = "{proxy_subpath}"
"""


def _public_url(public_url: str) -> str:
    """PUBLIC_URL without its trailing slash; HTTPS, since Shopify delivers only there."""
    url = public_url.strip().rstrip("/")
    parts = urlsplit(url)
    if not _URL_TEXT.fullmatch(url):
        raise ValueError("PUBLIC_URL: only a plain URL can go into shopify.app.toml")
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("PUBLIC_URL: must be an https:// address Shopify can reach")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("PUBLIC_URL: no query, fragment or credentials")
    return url


def render_app_toml(client_id: str, public_url: str, api_version: str) -> str:
    """The text of `shopify/shopify.app.toml`; ValueError names the setting that cannot be used."""
    if not _CLIENT_ID.fullmatch(client_id):
        raise ValueError("SHOPIFY_CLIENT_ID: letters, digits, '-' and '_' only")
    if not _API_VERSION.fullmatch(api_version):
        raise ValueError("SHOPIFY_API_VERSION: a quarterly version such as 2026-07")
    base = _public_url(public_url)
    return _TEMPLATE.format(
        client_id=client_id,
        public_url=base,
        scopes=",".join(ACCESS_SCOPES),
        no_redirect=_NO_REDIRECT,
        api_version=api_version,
        topics=", ".join(f'"{topic}"' for topic in WEBHOOK_TOPICS),
        webhook_uri=f"{base}{WEBHOOK_PATH}",
        proxy_url=f"{base}{APP_PROXY_PATH}",
        proxy_prefix=APP_PROXY_PREFIX,
        proxy_subpath=APP_PROXY_SUBPATH,
    )
