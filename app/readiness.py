"""What `/readyz` reports (DESIGN 3): each check named, with a `severity`.

Only a failed `error` check makes giftsync not ready (503); a `warning` is shown and nothing
more (a set-up that works but that an operator should know about). Checks that ask an upstream
are cached by their provider; the ones here read the database and the settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from app.db import heartbeats
from app.db.migrate import current_revision, head_revision
from app.settings import PosKind, Settings

if TYPE_CHECKING:
    from app.runtime import Runtime

HEARTBEAT_FRESH = timedelta(seconds=30)
Check = dict[str, Any]
ExtraChecks = Callable[[], Awaitable[dict[str, Check]]]


def error(ok: bool, **detail: Any) -> Check:
    return {"ok": ok, "severity": "error", **detail}


def warning(ok: bool, **detail: Any) -> Check:
    return {"ok": ok, "severity": "warning", **detail}


def _upstreams(settings: Settings) -> Check:
    mode = "simulated" if settings.sandbox_enabled else "configured"
    shopify_ready = settings.sandbox_enabled or bool(
        settings.shopify_shop_domain
        and (settings.shopify_admin_token or settings.shopify_client_id)
        and settings.shopify_api_secret
    )
    vii_ready = settings.sandbox_enabled or settings.vii_base_url is not None
    upstreams: dict[str, Any] = {
        "shopify": {"ok": shopify_ready, "mode": mode if shopify_ready else "not_configured"},
        "vii": {"ok": True, "mode": mode if vii_ready else "not_configured"},
    }
    if settings.pos_kind is not PosKind.NONE:
        upstreams[settings.pos_kind.value] = {"ok": True, "mode": mode}
    return error(all(u["ok"] for u in upstreams.values()), **upstreams)


def _directions(settings: Settings) -> Check:
    def state(on: bool) -> dict[str, Any]:
        return {"state": "on" if on else "off"}

    return warning(
        True,
        pos_to_shopify=state(settings.create_update_shopify_gift_cards),
        shopify_to_pos=state(settings.download_shopify_gift_cards),
        notifications=state(settings.send_gift_card_notifications),
    )


async def _database(runtime: Runtime) -> dict[str, Check]:
    checks: dict[str, Check] = {}
    try:
        async with asyncio.timeout(3):
            async with runtime.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
                age = await heartbeats.seconds_since_newest(connection)
    except Exception as exc:
        unreachable = "database unreachable"
        return {
            "database": error(False, error=type(exc).__name__),
            "worker_heartbeat": error(False, error=unreachable),
            "migrations": error(False, error=unreachable),
        }
    checks["database"] = error(True)
    fresh = age is not None and float(age) <= HEARTBEAT_FRESH.total_seconds()
    checks["worker_heartbeat"] = error(
        fresh, age_seconds=None if age is None else round(float(age), 1)
    )
    try:
        current = await current_revision(runtime.engine)
    except Exception as exc:
        checks["migrations"] = error(False, error=type(exc).__name__)
    else:
        head = head_revision(runtime.database_url)
        checks["migrations"] = error(current == head, current=current, head=head)
    return checks


async def readiness(runtime: Runtime, extra: ExtraChecks | None = None) -> dict[str, Any]:
    checks = await _database(runtime)
    checks["upstreams"] = _upstreams(runtime.settings)
    checks["sync_directions"] = _directions(runtime.settings)
    found = runtime.settings.warnings()
    checks["configuration"] = warning(not found, warnings=found)
    if extra is not None:
        checks.update(await extra())
    ready = all(c["ok"] for c in checks.values() if c["severity"] == "error")
    return {"status": "ready" if ready else "not_ready", "checks": checks}
