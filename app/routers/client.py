"""Who the caller of a checkout endpoint is, for PIN limits: decided here and nowhere else.

The socket address, or, when the socket is one of `TRUSTED_PROXIES`, the right-most
`X-Forwarded-For` address that is not itself a trusted proxy (the left part of that header is
whatever the client chose to send). Uvicorn's own forwarded-header handling is switched off by
`giftsync serve`, so the socket address here is the real peer. On `/proxy/*` the caller is
Shopify, so the client is the signed shop and logged-in customer instead.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from fastapi import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trusted(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: Request, trusted: Iterable[Network]) -> str:
    trusted = tuple(trusted)
    peer = request.client.host if request.client else "unknown"
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return peer


def proxy_client(shop: str, customer_id: str | None) -> str:
    """An app proxy call: Shopify signs the shop and the logged-in customer, not the address."""
    return f"proxy:{shop}:{customer_id or 'guest'}"
