"""Starts the upstream simulators; each simulator module registers itself in SIMULATORS."""

from __future__ import annotations

import asyncio

from app.logging import get_logger
from app.settings import Settings

log = get_logger(__name__)


async def run_forever(settings: Settings) -> None:
    log.info("sandbox_started", simulators=[])
    await asyncio.Event().wait()
