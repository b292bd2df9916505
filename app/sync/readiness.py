"""What `/readyz` reports: each check named, with `ok` deciding the status."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from app.db.migrate import current_revision, head_revision
from app.settings import PosKind, Settings

if TYPE_CHECKING:
    from app.runtime import Runtime

HEARTBEAT_FRESH = timedelta(seconds=30)


def _upstreams(settings: Settings) -> dict[str, dict[str, Any]]:
    mode = "simulated" if settings.sandbox_enabled else "configured"
    shopify_ready = settings.sandbox_enabled or bool(
        (settings.shopify_shop_domain or settings.shopify_base_url) and settings.shopify_admin_token
    )
    vii_ready = settings.sandbox_enabled or settings.vii_base_url is not None
    upstreams = {
        "shopify": {"ok": shopify_ready, "mode": mode if shopify_ready else "not_configured"},
        "vii": {"ok": True, "mode": mode if vii_ready else "not_configured"},
    }
    if settings.pos_kind is not PosKind.NONE:
        upstreams[settings.pos_kind.value] = {"ok": True, "mode": mode}
    return upstreams


def _directions(settings: Settings) -> dict[str, dict[str, Any]]:
    def state(on: bool) -> dict[str, Any]:
        return {"ok": True, "state": "on" if on else "off"}

    return {
        "pos_to_shopify": state(settings.create_update_shopify_gift_cards),
        "shopify_to_pos": state(settings.download_shopify_gift_cards),
        "notifications": state(settings.send_gift_card_notifications),
    }


async def readiness(runtime: Runtime) -> dict[str, Any]:
    checks: dict[str, dict[str, Any]] = {}
    try:
        async with asyncio.timeout(3):
            async with runtime.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
                age = await connection.scalar(
                    text("SELECT EXTRACT(EPOCH FROM now() - max(beat_at)) FROM worker_heartbeats")
                )
        checks["database"] = {"ok": True}
        fresh = age is not None and float(age) <= HEARTBEAT_FRESH.total_seconds()
        checks["worker_heartbeat"] = {
            "ok": fresh,
            "age_seconds": None if age is None else round(float(age), 1),
        }
    except Exception as exc:
        checks["database"] = {"ok": False, "error": type(exc).__name__}
        checks["worker_heartbeat"] = {"ok": False, "error": "database unreachable"}
    if checks["database"]["ok"]:
        try:
            current = await current_revision(runtime.engine)
        except Exception as exc:
            current = None
            checks["migrations"] = {"ok": False, "error": type(exc).__name__}
        else:
            head = head_revision(runtime.database_url)
            checks["migrations"] = {"ok": current == head, "current": current, "head": head}
    else:
        checks["migrations"] = {"ok": False, "error": "database unreachable"}
    checks["upstreams"] = {"ok": True, **_upstreams(runtime.settings)}
    checks["upstreams"]["ok"] = all(v["ok"] for k, v in checks["upstreams"].items() if k != "ok")
    checks["sync_directions"] = {"ok": True, **_directions(runtime.settings)}
    ready = all(check["ok"] for check in checks.values())
    return {"status": "ready" if ready else "not_ready", "checks": checks}
