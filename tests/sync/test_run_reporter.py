"""A run's lifecycle (`app.sync.run_reporter`): running, checkpoints, finishing once, resuming."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import SessionFactory, transaction
from app.sync import run_reporter, runs
from app.sync.run_reporter import RunReporter
from app.sync.runs import (
    ReconcileParams,
)


async def _rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(text(sql), params)).all())


# --- lifecycle --------------------------------------------------------------------------------


async def test_mark_running_then_resume(sessions: SessionFactory, engine: AsyncEngine) -> None:
    run_id = await runs.start_run(sessions, "backfill", {"direction": "to_pos"})

    async with transaction(sessions) as session:
        state = await run_reporter.mark_running(session, run_id)
    assert state is not None
    assert (state.id, state.kind, state.progress) == (run_id, "backfill", {})
    [first] = await _rows(engine, "SELECT status, started_at FROM runs")
    assert first.status == "running" and first.started_at is not None

    async with transaction(sessions) as session:
        assert await run_reporter.update_progress(
            session, run_id, {"cursor": "c-7", "done": 7}, {"moved": 7}
        )

    # A worker whose lease ran out is replaced; the new one resumes from the checkpoint.
    async with transaction(sessions) as session:
        resumed = await run_reporter.mark_running(session, str(run_id))
    assert resumed is not None
    assert resumed.progress == {"cursor": "c-7", "done": 7}
    assert resumed.counts == {"moved": 7, "already_linked": 0, "skipped": 0}
    [again] = await _rows(engine, "SELECT status, started_at FROM runs")
    assert again.started_at == first.started_at


async def test_mark_running_refuses_finished_and_unknown_runs(sessions: SessionFactory) -> None:
    run_id = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    async with transaction(sessions) as session:
        assert await run_reporter.mark_running(session, run_id) is not None
        assert await run_reporter.finish_run(session, run_id, "succeeded", {"checked": 3})
    async with transaction(sessions) as session:
        assert await run_reporter.mark_running(session, run_id) is None
        assert await run_reporter.mark_running(session, uuid.uuid4()) is None


async def test_update_progress_merges_and_stops_after_finish(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    run_id = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    async with transaction(sessions) as session:
        # Not running yet: a checkpoint before mark_running is refused.
        assert not await run_reporter.update_progress(session, run_id, {"done": 1}, {"checked": 1})
        await run_reporter.mark_running(session, run_id)
        assert await run_reporter.update_progress(
            session, run_id, {"done": 1, "total": 9}, {"checked": 1}
        )
        assert await run_reporter.update_progress(session, run_id, {"done": 4}, {"in_sync": 3})
    [run] = await _rows(engine, "SELECT progress, counts FROM runs")
    assert run.progress == {"done": 4, "total": 9}
    assert run.counts == {"checked": 1, "in_sync": 3, "repaired": 0, "findings": 0}

    async with transaction(sessions) as session:
        assert await run_reporter.finish_run(
            session, run_id, "failed", {"checked": 4}, "POS said no"
        )
        assert not await run_reporter.update_progress(session, run_id, {"done": 5}, {})
        assert not await run_reporter.finish_run(session, run_id, "succeeded", {})
    [done] = await _rows(engine, "SELECT status, error, counts, finished_at FROM runs")
    assert (done.status, done.error) == ("failed", "POS said no")
    assert done.counts["checked"] == 4
    assert done.finished_at is not None


async def test_finish_run_takes_only_final_statuses(sessions: SessionFactory) -> None:
    run_id = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    async with transaction(sessions) as session:
        with pytest.raises(ValueError, match="succeeded or failed"):
            await run_reporter.finish_run(session, run_id, "running", {})  # type: ignore[arg-type]


async def test_two_workers_finishing_one_run_only_one_wins(sessions: SessionFactory) -> None:
    run_id = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    async with transaction(sessions) as session:
        await run_reporter.mark_running(session, run_id)

    async def finish(status: Any) -> bool:
        async with transaction(sessions) as session:
            return await run_reporter.finish_run(session, run_id, status, {})

    outcomes = await asyncio.gather(finish("succeeded"), finish("failed"))
    assert sorted(outcomes) == [False, True]


async def test_reporter_runs_a_run_once(sessions: SessionFactory) -> None:
    run_id = await runs.start_run(sessions, "reconcile", {"dry_run": True, "card_ids": None})

    reporter = await RunReporter.begin(sessions, str(run_id))
    assert reporter is not None
    assert not reporter.resumed
    assert ReconcileParams.of(reporter.params).dry_run is True
    reporter.count("checked", 3)
    reporter.count("in_sync", 2)
    assert await reporter.checkpoint(done=3, total=10)
    reporter.count("checked")
    assert await reporter.succeed()

    view = await runs.get_run(sessions, run_id)
    assert view is not None
    assert view.status == "succeeded"
    assert view.counts == {"checked": 4, "in_sync": 2, "repaired": 0, "findings": 0}
    assert view.progress == {"done": 3, "total": 10}
    assert await RunReporter.begin(sessions, run_id) is None


async def test_reporter_resumes_from_the_last_checkpoint(sessions: SessionFactory) -> None:
    run_id = await runs.start_run(sessions, "backfill", {"direction": "to_pos"})
    first = await RunReporter.begin(sessions, run_id)
    assert first is not None
    first.count("moved", 5)
    await first.checkpoint(cursor="page-2")
    first.count("moved", 3)  # lost: the worker dies before the next checkpoint

    second = await RunReporter.begin(sessions, run_id)
    assert second is not None
    assert second.resumed
    assert second.progress == {"cursor": "page-2"}
    assert second.counts == {"moved": 5, "already_linked": 0, "skipped": 0}
    assert await second.fail("gave up")
    assert not await first.succeed()
    view = await runs.get_run(sessions, run_id)
    assert view is not None
    assert (view.status, view.error) == ("failed", "gave up")


async def test_reporter_records_findings_alone_or_in_a_transaction(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    run_id = await runs.start_run(sessions, "backfill", {"direction": "to_shopify"})
    reporter = await RunReporter.begin(sessions, run_id)
    assert reporter is not None
    assert await reporter.finding(
        finding_type="bad_serial", subject="lightspeed:1", card_id=None, evidence={"last4": "0001"}
    )
    with pytest.raises(RuntimeError):
        async with transaction(sessions) as session:
            await reporter.finding(
                finding_type="bad_serial",
                subject="lightspeed:2",
                card_id=None,
                evidence={},
                session=session,
            )
            raise RuntimeError("the repair it belonged to failed")
    view = await runs.get_run(sessions, run_id)
    assert view is not None
    assert [finding.subject for finding in view.findings] == ["lightspeed:1"]
