"""How single setting values are read: durations, money, keys, networks, URLs, API versions.

Each parser raises ValueError with a message that never repeats a secret input; the caller puts
the setting's name in front.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BeforeValidator
from pydantic_settings import NoDecode

_ISO_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)

# `initialAmount` (gift card create) and `bulkOperations` exist from this version on (DESIGN 4).
OLDEST_SHOPIFY_API_VERSION = "2026-07"
_API_VERSION = re.compile(r"(?P<year>20\d\d)-(?P<month>01|04|07|10)")


class PosKind(StrEnum):
    RETAIL = "retail"
    ONSITE = "onsite"
    NONE = "none"


class BalanceSign(StrEnum):
    NEGATIVE = "negative"
    POSITIVE = "positive"


class Plan(StrEnum):
    GROWTH = "growth"
    ENTERPRISE = "enterprise"


class CheckoutAuth(StrEnum):
    """Who may call the checkout endpoints (DESIGN 3): Shopify-signed callers, or anyone."""

    SHOPIFY = "shopify"
    OPEN = "open"


def parse_duration(raw: object) -> timedelta:
    """Seconds (`90`) or an ISO 8601 duration (`PT24H`, `P1DT2H`); nothing else."""
    if isinstance(raw, timedelta):
        return raw
    if isinstance(raw, bool):
        raise ValueError("expected seconds or an ISO 8601 duration")
    if isinstance(raw, int | float | Decimal):
        seconds = Decimal(str(raw))
    else:
        text = str(raw).strip().upper()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = Decimal(text)
        else:
            match = _ISO_DURATION.fullmatch(text)
            if match is None or text in {"P", "PT"} or text.endswith("T"):
                raise ValueError("expected seconds (90) or an ISO 8601 duration (PT24H)")
            parts = {k: Decimal(v) for k, v in match.groupdict().items() if v}
            seconds = (
                parts.get("days", Decimal(0)) * 86400
                + parts.get("hours", Decimal(0)) * 3600
                + parts.get("minutes", Decimal(0)) * 60
                + parts.get("seconds", Decimal(0))
            )
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return timedelta(seconds=float(seconds))


def parse_money(raw: object) -> Decimal:
    """A decimal string with at most two places; floats are refused so no binary rounding sneaks in."""
    if isinstance(raw, float):
        raise ValueError("give money as a decimal string such as 5000.00")
    value = Decimal(str(raw).strip())
    if not value.is_finite() or value < 0:
        raise ValueError("must be a positive decimal amount")
    if value.as_tuple().exponent < -2:  # type: ignore[operator]
        raise ValueError("at most two decimal places")
    return value


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: object) -> tuple[Network, ...]:
    """Comma-separated addresses or CIDRs; a bare address is a network of one."""
    if isinstance(raw, tuple | list):
        items = [str(item) for item in raw]
    else:
        items = str(raw or "").split(",")
    networks: list[Network] = []
    for item in (part.strip() for part in items):
        if not item:
            continue
        try:
            # Not strict: `10.0.0.1/8` is read as the network it lies in, as proxies list it.
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR such as 10.0.0.0/8") from None
    return tuple(networks)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Money = Annotated[Decimal, BeforeValidator(parse_money)]
# NoDecode: pydantic-settings would otherwise read a tuple from the environment as JSON.
Networks = Annotated[tuple[Network, ...], NoDecode, BeforeValidator(parse_networks)]


def decode_key(raw: str) -> bytes:
    """A 32-byte key given as 64 hex characters or base64 (standard or URL-safe alphabet)."""
    text = raw.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    if re.fullmatch(r"[A-Za-z0-9+/_-]{43}=?", text):
        padded = text if text.endswith("=") else text + "="
        try:
            decoded = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) == 32:
            return decoded
    raise ValueError("must be 32 bytes written as 64 hex characters or base64")


def check_api_version(value: str) -> str:
    text = value.strip()
    if not _API_VERSION.fullmatch(text):
        raise ValueError(
            "must be a stable Shopify API version such as "
            f"{OLDEST_SHOPIFY_API_VERSION} (year-month, months 01, 04, 07, 10)"
        )
    if text < OLDEST_SHOPIFY_API_VERSION:
        raise ValueError(
            f"{text} is older than {OLDEST_SHOPIFY_API_VERSION}, the oldest version giftsync "
            "speaks (initialAmount and bulkOperations exist from it on)"
        )
    return text


def check_url(value: str | None) -> str | None:
    """An absolute http(s) URL with a host; https itself is judged with the mode (sandbox or not)."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ValueError("must be an absolute https:// URL") from None
    if parts.scheme not in {"http", "https"} or not host:
        raise ValueError("must be an absolute https:// URL")
    return text


def is_loopback_url(url: str) -> bool:
    """Loopback hosts: `localhost`, 127.0.0.0/8 and ::1, where local fakes listen."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_scheme(url: str) -> str:
    return urlsplit(url).scheme


def check_host_name(value: str | None) -> str | None:
    """A shop's host name (`shop.myshopify.com`): no scheme, path or port."""
    if value is None or value.strip() == "":
        return None
    text = value.strip().lower().rstrip(".")
    label = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    if not re.fullmatch(rf"{label}(?:\.{label})+", text):
        raise ValueError("must be the shop's host name, such as your-shop.myshopify.com")
    return text
