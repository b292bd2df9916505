"""The worker: claims jobs, runs periodic singletons, and keeps a heartbeat row fresh.

It runs inside `giftsync serve` or alone as `giftsync worker`; any number may share one
database, which is the only coordinator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from app.db import heartbeats, jobs
from app.db.engine import SessionFactory, autocommit_connection, transaction
from app.db.locks import try_lock_for_connection, unlock_for_connection
from app.logging import get_logger, mask_text
from app.metrics import JOBS_FINISHED

log = get_logger(__name__)

JobHandler = Callable[[dict[str, Any]], Awaitable[None]]


class RetryLater(Exception):
    """Raised by a handler that wants another attempt after a given delay."""

    def __init__(self, reason: str, delay: timedelta) -> None:
        super().__init__(reason)
        self.delay = delay


class PermanentJobError(Exception):
    """Raised by a handler when retrying can never help; the job goes straight to `dead`."""


@dataclass
class Periodic:
    """Work that runs every `interval` on exactly one worker at a time (advisory lock)."""

    name: str
    interval: timedelta
    run: Callable[[], Awaitable[None]]


@dataclass
class WorkerConfig:
    concurrency: int = 4
    idle_poll: float = 0.5
    lease: timedelta = timedelta(seconds=60)
    heartbeat_every: float = 5.0


@dataclass
class Worker:
    sessions: SessionFactory
    handlers: dict[str, JobHandler]
    periodic: list[Periodic] = field(default_factory=list)
    config: WorkerConfig = field(default_factory=WorkerConfig)
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    )
    _in_flight: set[int] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stop: asyncio.Event) -> None:
        await self.beat()
        log.info("worker_started", worker_id=self.worker_id, kinds=sorted(self.handlers))
        tasks = [
            asyncio.create_task(self._heartbeat_loop(stop), name="heartbeat"),
            *(
                asyncio.create_task(self._periodic_loop(p, stop), name=f"periodic:{p.name}")
                for p in self.periodic
            ),
            *(
                asyncio.create_task(self._job_loop(stop), name=f"jobs:{n}")
                for n in range(self.config.concurrency)
            ),
        ]
        try:
            await stop.wait()
        finally:
            self._wake.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._retire()
            log.info("worker_stopped", worker_id=self.worker_id)

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self, limit: int = 100) -> int:
        """Claim and run what is due now, one after another; returns how many ran."""
        async with transaction(self.sessions) as session:
            claimed = await jobs.claim(
                session, self.worker_id, limit=limit, lease=self.config.lease
            )
        for job in claimed:
            await self._execute(job)
        return len(claimed)

    async def beat(self) -> None:
        async with transaction(self.sessions) as session:
            await heartbeats.beat(session, self.worker_id)
            await jobs.extend_leases(
                session, self.worker_id, sorted(self._in_flight), self.config.lease
            )

    async def _retire(self) -> None:
        try:
            async with transaction(self.sessions) as session:
                await heartbeats.retire(session, self.worker_id)
        except Exception:
            log.warning("heartbeat_retire_failed", worker_id=self.worker_id)

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.config.heartbeat_every)
            try:
                await self.beat()
            except Exception as exc:
                log.warning("heartbeat_failed", error=mask_text(str(exc)))

    async def _job_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with transaction(self.sessions) as session:
                    claimed = await jobs.claim(
                        session, self.worker_id, limit=1, lease=self.config.lease
                    )
            except Exception as exc:
                log.warning("claim_failed", error=mask_text(str(exc)))
                claimed = []
            if not claimed:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.config.idle_poll)
                continue
            for job in claimed:
                try:
                    await self._execute(job)
                except Exception as exc:
                    log.error("job_bookkeeping_failed", job_id=job.id, error=mask_text(str(exc)))

    async def _execute(self, job: jobs.ClaimedJob) -> None:
        handler = self.handlers.get(job.kind)
        self._in_flight.add(job.id)
        bound = log.bind(job_id=job.id, kind=job.kind, attempt=job.attempts)
        try:
            if handler is None:
                raise PermanentJobError(f"no handler for job kind {job.kind!r}")
            await handler(job.payload)
        except Exception as exc:
            error = mask_text(f"{type(exc).__name__}: {exc}")
            retry_in = exc.delay if isinstance(exc, RetryLater) else None
            permanent = isinstance(exc, PermanentJobError)
            async with transaction(self.sessions) as session:
                state = await jobs.fail(
                    session,
                    job,
                    self.worker_id,
                    error,
                    retry_in=retry_in,
                    permanent=permanent,
                    count_attempt=not isinstance(exc, RetryLater),
                )
            JOBS_FINISHED.labels(kind=job.kind, outcome=state).inc()
            if state == "dead":
                bound.error("job_dead", error=error, trace=mask_text(traceback.format_exc()))
            else:
                bound.warning("job_failed", error=error, next_state=state)
        else:
            async with transaction(self.sessions) as session:
                held = await jobs.complete(session, job.id, self.worker_id)
            JOBS_FINISHED.labels(kind=job.kind, outcome="done" if held else "lost").inc()
            bound.debug("job_done")
        finally:
            self._in_flight.discard(job.id)

    async def _periodic_loop(self, periodic: Periodic, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await run_as_singleton(self.sessions, periodic.name, periodic.run)
            except Exception as exc:
                log.warning("periodic_failed", name=periodic.name, error=mask_text(str(exc)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=periodic.interval.total_seconds())


async def run_as_singleton(
    sessions: SessionFactory, name: str, work: Callable[[], Awaitable[None]]
) -> bool:
    """Run `work` only if no other process is running the same `name`; False if skipped.

    A session-level lock on a dedicated connection, not a transaction lock: the work may take
    many transactions, and if this process dies its connection closes and the lock is freed.
    """
    async with autocommit_connection(sessions) as autocommit:
        lock = f"singleton:{name}"
        if not await try_lock_for_connection(autocommit, lock):
            return False
        try:
            await work()
        finally:
            await unlock_for_connection(autocommit, lock)
        return True
