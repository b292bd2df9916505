"""The POS set-up read back from the POS and named check by check, for `/readyz` and
`giftsync pos check` (DESIGN 3 and 5).

Each POS client reads what its writes will name (R-Series: shop, register, employee, balancing
payment type, the gift card type, unmasked codes; OnSite: the gift card product, the payment
method, the modified-date filter) and keeps the answer a minute. A POS that cannot be read is
one `error` check here, never an exception: a POS problem keeps POS writes from being sent (the
clients refuse them on a failed `error` check), it never stops giftsync from starting, and
Shopify and Vii keep working.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass
from typing import Any

from app.clients.errors import UpstreamError
from app.clients.lightspeed import LightspeedClient
from app.clients.onsite import OnSiteClient
from app.clients.setup_checks import SETUP_TTL_S
from app.settings import PosKind, Settings

Check = dict[str, Any]
# A /readyz probe must answer quickly even when the POS does not.
READ_TIMEOUT_S = 5.0


@dataclass
class _Failure:
    checks: dict[str, Check]
    at: float


# A POS that could not be read is not asked again for a minute either (the clients keep what
# they did read): keyed by client, forgotten with it.
_failures: weakref.WeakKeyDictionary[Any, _Failure] = weakref.WeakKeyDictionary()


async def pos_setup_checks(
    settings: Settings, pos_client: LightspeedClient | OnSiteClient | None
) -> dict[str, Check]:
    """`{"name": {"ok", "severity", "detail", ...}}` for each POS set-up check; {} with no POS."""
    if settings.pos_kind is PosKind.NONE:
        return {}
    if pos_client is None:
        return {"pos_setup": _unread(settings, "no POS client is configured")}
    failed = _failures.get(pos_client)
    if failed is not None and time.monotonic() - failed.at < SETUP_TTL_S:
        return failed.checks
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            checks = await pos_client.setup_checks()
    except (UpstreamError, TimeoutError) as exc:
        reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
        result = {"pos_setup": _unread(settings, f"could not read the POS set-up: {reason}")}
        _failures[pos_client] = _Failure(result, time.monotonic())
        return result
    _failures.pop(pos_client, None)
    return {check.name: check.as_check() for check in checks}


def _unread(settings: Settings, detail: str) -> Check:
    return {"ok": False, "severity": "error", "detail": detail, "pos": settings.pos_kind.value}


def failed_errors(checks: dict[str, Check]) -> list[str]:
    return [
        name for name, check in checks.items() if check["severity"] == "error" and not check["ok"]
    ]
