"""The POS set-up a client reads back and judges, and the gate that keeps writes from a bad one.

Each client (Lightspeed R-Series, OnSite) reads the merchant's records its writes will name and
turns them into `SetupCheck`s; `/readyz` shows them (DESIGN 3: each with `severity` `error` or
`warning`) and `SetupGate.require` refuses to send a write while an `error` check fails. The
answer is kept `ttl` seconds, so neither a busy write path nor a probed `/readyz` reads it more
than about once a minute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]
SETUP_TTL_S = 60.0


@dataclass(frozen=True)
class SetupCheck:
    name: str
    ok: bool
    severity: Severity
    detail: str
    setting: str | None = None
    value: str | None = None

    def as_check(self) -> dict[str, Any]:
        """The `/readyz` shape: ok, severity, then what an operator needs to act."""
        check: dict[str, Any] = {"ok": self.ok, "severity": self.severity, "detail": self.detail}
        if self.setting is not None:
            check["setting"] = self.setting
            check["value"] = self.value
        return check

    @property
    def failed_error(self) -> bool:
        return self.severity == "error" and not self.ok


def check(
    name: str,
    ok: bool,
    detail: str,
    *,
    setting: str | None = None,
    value: str | None = None,
    severity: Severity = "error",
) -> SetupCheck:
    return SetupCheck(name, ok, severity, detail, setting, value)


class SetupGate:
    """The last set-up read, kept `ttl` seconds; `require` raises `refuse(message)` on error."""

    def __init__(
        self,
        read: Callable[[], Awaitable[list[SetupCheck]]],
        refuse: Callable[[str], Exception],
        *,
        live: Callable[[], list[SetupCheck]] | None = None,
        ttl: float = SETUP_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._refuse = refuse
        self._live = live or list
        self.ttl = ttl
        self._clock = clock
        self._checks: list[SetupCheck] | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def checks(self, *, fresh: bool = False) -> list[SetupCheck]:
        async with self._lock:
            if fresh or self._checks is None or self._clock() - self._read_at >= self.ttl:
                self._checks = await self._read()
                self._read_at = self._clock()
            return [*self._checks, *self._live()]

    async def require(self) -> None:
        failed = [c for c in await self.checks() if c.failed_error]
        if failed:
            problems = "; ".join(
                f"{c.setting}: {c.detail}" if c.setting else c.detail for c in failed
            )
            raise self._refuse(f"POS set-up refused, nothing sent: {problems}")
