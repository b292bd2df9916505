"""`POST /webhooks/shopify`: verify, store, acknowledge. Processing happens in the worker.

Checks run in this order, so nothing unsigned is ever parsed, stored or processed: size (413,
from `Content-Length` before a byte is read when it is declared, else while streaming), the
signature over the raw body (401), the delivery headers (400), the media type (415), then the
JSON (400). The signature covers the body only, so the headers are validated, never trusted.

Late deliveries are normal: Shopify retries a failed delivery for 4 hours, so an event can
arrive long after its `X-Shopify-Triggered-At`. A late delivery is stored and processed like a
fresh one; the inbox's unique keys and the idempotent topic handlers make a late repeat a no-op.
The timestamp is only recorded, and a missing or unreadable one is stored as NULL: it is no
reason to refuse a signed delivery, which Shopify would then retry in vain.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from app.logging import get_logger
from app.problems import Problem, problem_schema
from app.sync.inbox import store_delivery

router = APIRouter(tags=["webhooks"])
log = get_logger(__name__)

MAX_BODY_BYTES = 1024 * 1024
# Shopify's payloads nest a handful of levels; a limit far above that keeps a hostile (but
# signed) body from reaching Python's or PostgreSQL's recursion limits.
MAX_JSON_DEPTH = 64
LATE_AFTER = timedelta(minutes=15)

_CONTENT_LENGTH = re.compile(r"[0-9]{1,20}", re.ASCII)
_TOPIC = re.compile(r"[A-Za-z0-9_./-]{1,128}", re.ASCII)
_OPAQUE_ID = re.compile(r"[\x21-\x7e]{1,255}", re.ASCII)
_SHOP_DOMAIN = re.compile(r"[A-Za-z0-9.-]{1,255}", re.ASCII)


class WebhookAck(BaseModel):
    received: bool
    duplicate: bool
    """True when this delivery (or its event) was already stored: not processed again."""


_HEADERS = [
    ("X-Shopify-Hmac-Sha256", True, "Base64 HMAC-SHA256 of the raw body, keyed by the app secret."),
    ("X-Shopify-Topic", True, "For example `orders/paid`."),
    ("X-Shopify-Webhook-Id", True, "One delivery; a retry repeats it."),
    ("X-Shopify-Event-Id", False, "One event; repeated across deliveries of the same event."),
    ("X-Shopify-Shop-Domain", False, "The shop's myshopify.com domain."),
    ("X-Shopify-Triggered-At", False, "When the event happened (ISO 8601); recorded only."),
]

_OPENAPI_EXTRA: dict[str, Any] = {
    "parameters": [
        {
            "name": name,
            "in": "header",
            "required": required,
            "description": description,
            "schema": {"type": "string"},
        }
        for name, required, description in _HEADERS
    ],
    "requestBody": {
        "required": True,
        "description": "The topic's payload, exactly as Shopify signed it (at most 1 MiB).",
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
}


async def _read_capped(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and _CONTENT_LENGTH.fullmatch(declared)
        and int(declared) > MAX_BODY_BYTES
    ):
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    return bytes(body)


def _too_large() -> Problem:
    return Problem(413, "payload_too_large", "Webhook bodies are limited to 1 MiB.")


def _valid_hmac(secret: str, body: bytes, given: str | None) -> bool:
    if not given:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, given.strip().encode())


def _parse_time(raw: str | None) -> datetime | None:
    """UTC, or None for anything unreadable or outside what PostgreSQL stores."""
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        # Naive means UTC (asyncpg would read it as the server's local time).
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _optional_header(request: Request, name: str, pattern: re.Pattern[str]) -> str | None:
    value = request.headers.get(name)
    if not value:
        return None
    if not pattern.fullmatch(value):
        raise Problem(400, "invalid_header", f"{name} is not a value Shopify sends.")
    return value


def _required_header(request: Request, name: str, pattern: re.Pattern[str]) -> str:
    value = _optional_header(request, name, pattern)
    if value is None:
        raise Problem(
            400, "missing_header", "X-Shopify-Topic and X-Shopify-Webhook-Id are required."
        )
    return value


def _check_media_type(request: Request) -> None:
    """Shopify always sends `application/json`; a body declared as anything else is refused.

    A missing Content-Type is let through: the signed body decides, and refusing a genuine
    delivery for a missing header would only make Shopify retry it in vain.
    """
    declared = request.headers.get("content-type", "")
    essence = declared.split(";", 1)[0].strip().lower()
    json_type = essence in ("", "application/json") or (
        essence.startswith("application/") and essence.endswith("+json")
    )
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if not json_type or encoding not in ("", "identity"):
        raise Problem(
            415,
            "unsupported_media_type",
            "Webhook bodies must be uncompressed application/json.",
        )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _depth_within(payload: Any, limit: int) -> bool:
    """Iterative, so the check itself cannot hit the recursion limit."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return True


def _parse_payload(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        # ValueError covers bad syntax, bad encodings, NaN/Infinity, 1e309 and huge integers.
        raise Problem(400, "invalid_json", "The webhook body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise Problem(400, "invalid_json", "The webhook body must be a JSON object.")
    # Counting brackets bounds the depth from above, so most bodies skip the walk.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and not _depth_within(
        payload, MAX_JSON_DEPTH
    ):
        raise Problem(
            400, "invalid_json", f"The webhook body nests deeper than {MAX_JSON_DEPTH} levels."
        )
    return payload


def _refuse_other_shops(ours: str | None, given: str | None) -> None:
    """A body signed with our secret for another shop (another install of the app) is not ours."""
    if ours is None:
        return
    if given is None or not hmac.compare_digest(given.lower(), ours.lower()):
        raise Problem(401, "unknown_shop", "This webhook is for another shop.")


@router.post(
    "/webhooks/shopify",
    response_model=WebhookAck,
    responses={
        400: problem_schema(
            "`missing_header`, `invalid_header` or `invalid_json` (not a JSON object)."
        ),
        401: problem_schema(
            "`invalid_hmac`: `X-Shopify-Hmac-Sha256` missing or wrong; `unknown_shop`: "
            "`X-Shopify-Shop-Domain` is not SHOPIFY_SHOP_DOMAIN."
        ),
        413: problem_schema("`payload_too_large`: body over 1 MiB."),
        415: problem_schema("`unsupported_media_type`: not uncompressed application/json."),
    },
    openapi_extra=_OPENAPI_EXTRA,
)
async def shopify_webhook(request: Request) -> WebhookAck:
    runtime = request.app.state.runtime
    secret = runtime.settings.shopify_api_secret
    body = await _read_capped(request)
    if secret is None or not _valid_hmac(
        secret.get_secret_value(), body, request.headers.get("x-shopify-hmac-sha256")
    ):
        raise Problem(401, "invalid_hmac", "The webhook signature is missing or does not match.")
    topic = _required_header(request, "X-Shopify-Topic", _TOPIC)
    webhook_id = _required_header(request, "X-Shopify-Webhook-Id", _OPAQUE_ID)
    event_id = _optional_header(request, "X-Shopify-Event-Id", _OPAQUE_ID)
    shop_domain = _optional_header(request, "X-Shopify-Shop-Domain", _SHOP_DOMAIN)
    _refuse_other_shops(runtime.settings.shopify_shop_domain, shop_domain)
    _check_media_type(request)
    payload = _parse_payload(body)
    triggered_at = _parse_time(request.headers.get("x-shopify-triggered-at"))
    if triggered_at is not None and datetime.now(UTC) - triggered_at > LATE_AFTER:
        log.info(
            "webhook_late_delivery",
            topic=topic,
            webhook_id=webhook_id,
            late_s=int((datetime.now(UTC) - triggered_at).total_seconds()),
        )
    created = await store_delivery(
        runtime.sessions,
        webhook_id=webhook_id,
        event_id=event_id,
        topic=topic,
        shop_domain=shop_domain,
        triggered_at=triggered_at,
        payload=payload,
        body_sha256=hashlib.sha256(body).hexdigest(),
    )
    if created and runtime.worker is not None:
        runtime.worker.wake()
    return WebhookAck(received=True, duplicate=not created)
