"""`giftsync reconcile`: a run executed in this process, through its job.

The command claims the run's job as a worker would and keeps its lease, so if this process dies
a worker takes the run over and resumes it; if a worker already holds it, the command follows
the run until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta

from app.db import jobs
from app.db.engine import SessionFactory, transaction
from app.logging import mask_text
from app.sync import runs
from app.sync.reconcile.common import RUN_LOCK, Progress, ProgressCallback
from app.sync.reconcile.runner import Reconciler
from app.worker import run_as_singleton


async def execute_here(
    sessions: SessionFactory,
    reconciler: Reconciler,
    run_id: uuid.UUID,
    progress: ProgressCallback | None = None,
    *,
    lease: timedelta = timedelta(seconds=60),
) -> dict[str, int]:
    """Run the run in this process through its job (so a crash here is resumed by a worker),
    or, if a worker already took it, follow it until it ends."""
    worker_id = f"cli:{uuid.uuid4().hex[:12]}"
    async with transaction(sessions) as session:
        claimed = await jobs.claim_by_key(session, runs.run_job_key(run_id), worker_id, lease)
    if claimed is None:
        return await _follow(sessions, run_id, progress)

    async def keep_lease() -> None:
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            async with transaction(sessions) as session:
                await jobs.extend_leases(session, worker_id, [claimed.id], lease)

    counts: dict[str, int] = {}

    async def work() -> None:
        nonlocal counts
        counts = await reconciler.run(run_id, progress=progress)

    keeper = asyncio.create_task(keep_lease())
    try:
        # Runs take turns (as in the worker); this one holds its job meanwhile.
        while not await run_as_singleton(sessions, RUN_LOCK, work):  # noqa: ASYNC110
            await asyncio.sleep(1.0)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            async with transaction(sessions) as session:
                error = mask_text(f"{type(exc).__name__}: {exc}")
                await jobs.fail(session, claimed, worker_id, error)
        raise
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
    async with transaction(sessions) as session:
        await jobs.complete(session, claimed.id, worker_id)
    return counts


async def _follow(
    sessions: SessionFactory, run_id: uuid.UUID, progress: ProgressCallback | None
) -> dict[str, int]:
    while True:
        view = await runs.get_run(sessions, run_id, findings_limit=0)
        if view is None:
            raise LookupError(f"run {run_id} disappeared")
        if progress is not None and view.progress.get("cards_total") is not None:
            progress(
                Progress(
                    "cards",
                    int(view.progress.get("cards_done") or 0),
                    int(view.progress["cards_total"]),
                )
            )
        if view.status in ("succeeded", "failed"):
            if view.status == "failed":
                raise RuntimeError(f"reconcile run {run_id} failed: {view.error}")
            return {name: int(value) for name, value in view.counts.items()}
        await asyncio.sleep(0.5)
