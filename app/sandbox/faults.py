"""Fault switches shared by every simulator: latency, errors, throttling, lost answers.

Switched at start (constructor) or at run time through `POST /_sim/faults` on each simulator.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse


@dataclass
class Faults:
    latency_ms: float = 0.0
    """Added to every answer."""
    error_rate: float = 0.0
    """Share of requests answered 503 before anything is applied."""
    lose_answer_rate: float = 0.0
    """Share of writes applied and then never answered (the caller times out)."""
    force_throttle: bool = False
    """Answer every request as over the rate limit."""
    lost_answer_hang_s: float = 3600.0
    seed: int | None = None
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.seed is not None:
            self._rng.seed(self.seed)

    async def delay(self) -> None:
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)

    def draw_error(self) -> bool:
        return self.error_rate > 0 and self._rng.random() < self.error_rate

    def draw_lost_answer(self) -> bool:
        return self.lose_answer_rate > 0 and self._rng.random() < self.lose_answer_rate

    async def hang(self) -> None:
        """Called after a write was applied when its answer is to be lost."""
        await asyncio.sleep(self.lost_answer_hang_s)

    def update(self, changes: dict[str, Any]) -> None:
        for name, value in changes.items():
            if name.startswith("_") or not hasattr(self, name):
                raise ValueError(f"unknown fault switch {name!r}")
            setattr(self, name, type(getattr(self, name))(value) if value is not None else None)
        if "seed" in changes and self.seed is not None:
            self._rng.seed(self.seed)

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


def faults_router(faults: Faults) -> APIRouter:
    router = APIRouter(prefix="/_sim", include_in_schema=False)

    @router.get("/faults")
    async def get_faults() -> dict[str, Any]:
        return faults.public()

    @router.post("/faults")
    async def set_faults(changes: dict[str, Any]) -> JSONResponse:
        try:
            faults.update(changes)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(faults.public())

    return router
