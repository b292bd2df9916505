"""`POST /webhooks/shopify`: verify, store, acknowledge. Processing happens in the worker."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request

from app.problems import Problem, problem_schema
from app.sync.inbox import store_delivery

router = APIRouter(tags=["webhooks"])
MAX_BODY_BYTES = 1024 * 1024


async def _read_capped(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Problem(413, "payload_too_large", "Webhook bodies are limited to 1 MiB.")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY_BYTES:
            raise Problem(413, "payload_too_large", "Webhook bodies are limited to 1 MiB.")
    return bytes(body)


def _valid_hmac(secret: str, body: bytes, given: str | None) -> bool:
    if not given:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, given.strip().encode())


def _parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


@router.post(
    "/webhooks/shopify",
    responses={
        400: problem_schema("A required header is missing or the body is not JSON."),
        401: problem_schema("`X-Shopify-Hmac-Sha256` missing or wrong."),
        413: problem_schema("Body over 1 MiB."),
    },
)
async def shopify_webhook(request: Request) -> dict[str, Any]:
    runtime = request.app.state.runtime
    secret = runtime.settings.shopify_api_secret
    body = await _read_capped(request)
    if secret is None or not _valid_hmac(
        secret.get_secret_value(), body, request.headers.get("x-shopify-hmac-sha256")
    ):
        raise Problem(401, "invalid_hmac", "The webhook signature is missing or does not match.")
    topic = request.headers.get("x-shopify-topic")
    webhook_id = request.headers.get("x-shopify-webhook-id")
    if not topic or not webhook_id:
        raise Problem(
            400,
            "missing_header",
            "X-Shopify-Topic and X-Shopify-Webhook-Id are required.",
        )
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "invalid_json", "The webhook body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise Problem(400, "invalid_json", "The webhook body must be a JSON object.")
    created = await store_delivery(
        runtime.sessions,
        webhook_id=webhook_id[:255],
        event_id=(request.headers.get("x-shopify-event-id") or None),
        topic=topic[:128],
        shop_domain=request.headers.get("x-shopify-shop-domain"),
        triggered_at=_parse_time(request.headers.get("x-shopify-triggered-at")),
        payload=payload,
    )
    if created and runtime.worker is not None:
        runtime.worker.wake()
    return {"received": True, "duplicate": not created}
