from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import jobs
from app.db.engine import SessionFactory, create_engine, session_factory, transaction
from app.worker import (
    PermanentJobError,
    RetryLater,
    Worker,
    WorkerConfig,
    run_as_singleton,
)


async def _enqueue_many(sessions: SessionFactory, count: int, kind: str = "probe") -> None:
    async with transaction(sessions) as session:
        for n in range(count):
            await jobs.enqueue(session, kind, {"n": n}, f"probe:{n}")


async def _run_until(worker: Worker, done: Callable[[], bool]) -> None:
    """Run the worker until `done()` holds (10 s at most), then stop it cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(10):
            while not done():
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task


async def _states(engine: AsyncEngine) -> Counter[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT state, count(*) FROM jobs GROUP BY state"))
        return Counter({state: count for state, count in rows})


async def test_two_workers_on_separate_pools_run_each_job_exactly_once(
    engine: AsyncEngine, database_url: str
) -> None:
    runs: Counter[int] = Counter()

    async def handler(payload: dict[str, Any]) -> None:
        await asyncio.sleep(0.001)
        runs[payload["n"]] += 1

    engines = [create_engine(database_url, pool_size=4) for _ in range(2)]
    sessions = [session_factory(e) for e in engines]
    await _enqueue_many(sessions[0], 300)
    config = WorkerConfig(concurrency=4, idle_poll=0.05)
    workers = [Worker(s, {"probe": handler}, config=config) for s in sessions]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        async with asyncio.timeout(60):
            while (await _states(engine))["done"] < 300:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for e in engines:
            await e.dispose()
    assert sorted(runs) == list(range(300))
    assert set(runs.values()) == {1}
    async with engine.connect() as connection:  # heartbeats are removed on a clean stop
        assert await connection.scalar(text("SELECT count(*) FROM worker_heartbeats")) == 0


async def test_enqueue_is_part_of_the_callers_transaction(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    with pytest.raises(RuntimeError):
        async with transaction(sessions) as session:
            await jobs.enqueue(session, "probe", {}, "rolled-back")
            raise RuntimeError("the state change failed")
    assert await _states(engine) == Counter()


async def test_same_idempotency_key_enqueues_once(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    async with transaction(sessions) as session:
        first = await jobs.enqueue(session, "probe", {"a": 1}, "order:1:txn:2:capture")
        second = await jobs.enqueue(session, "probe", {"a": 2}, "order:1:txn:2:capture")
    assert first is not None and second is None
    assert await _states(engine) == Counter({"queued": 1})


async def test_failing_job_backs_off_then_goes_dead_with_its_last_error(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    async def handler(payload: dict[str, Any]) -> None:
        raise ConnectionError("upstream down for card 6280001234567890")

    async with transaction(sessions) as session:
        await jobs.enqueue(session, "flaky", {}, "flaky:1", max_attempts=3)
    worker = Worker(sessions, {"flaky": handler})
    for attempt in range(1, 4):
        assert await worker.run_once() == 1
        async with engine.connect() as connection:
            state, attempts, run_at_future, error = (
                await connection.execute(
                    text("SELECT state, attempts, run_at > now(), last_error FROM jobs")
                )
            ).one()
        assert attempts == attempt
        if attempt < 3:
            assert state == "queued" and run_at_future
            assert await worker.run_once() == 0  # not due yet: backoff is respected
            async with engine.begin() as connection:
                await connection.execute(text("UPDATE jobs SET run_at = now()"))
        else:
            assert state == "dead"
    assert "ConnectionError: upstream down" in error
    assert "6280001234567890" not in error and "••••7890" in error


async def test_permanent_errors_go_dead_at_once_and_retry_requeues(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    async def handler(payload: dict[str, Any]) -> None:
        raise PermanentJobError("card unknown upstream")

    async with transaction(sessions) as session:
        job_id = await jobs.enqueue(session, "bad", {}, "bad:1")
    worker = Worker(sessions, {"bad": handler})
    await worker.run_once()
    assert await _states(engine) == Counter({"dead": 1})
    async with transaction(sessions) as session:
        assert job_id is not None and await jobs.retry_dead(session, job_id)
        assert not await jobs.retry_dead(session, job_id)
    assert await _states(engine) == Counter({"queued": 1})


async def test_unknown_kind_is_dead_not_lost(sessions: SessionFactory, engine: AsyncEngine) -> None:
    async with transaction(sessions) as session:
        await jobs.enqueue(session, "nobody-handles-this", {}, "x:1")
    await Worker(sessions, {}).run_once()
    assert await _states(engine) == Counter({"dead": 1})


async def test_retry_later_uses_the_requested_delay(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    async def handler(payload: dict[str, Any]) -> None:
        raise RetryLater("throttled", timedelta(seconds=120))

    async with transaction(sessions) as session:
        await jobs.enqueue(session, "slow", {}, "slow:1")
    await Worker(sessions, {"slow": handler}).run_once()
    async with engine.connect() as connection:
        delay = await connection.scalar(text("SELECT EXTRACT(EPOCH FROM run_at - now()) FROM jobs"))
    assert 100 < float(delay) <= 120


async def test_a_crashed_workers_job_is_reclaimed_after_its_lease(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    ran: list[int] = []

    async def handler(payload: dict[str, Any]) -> None:
        ran.append(payload["n"])

    await _enqueue_many(sessions, 1)
    async with transaction(sessions) as session:
        claimed = await jobs.claim(session, "dead-worker", limit=1, lease=timedelta(seconds=30))
    assert len(claimed) == 1
    survivor = Worker(sessions, {"probe": handler})
    assert await survivor.run_once() == 0  # lease still held by the crashed worker
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE jobs SET locked_until = now() - interval '1 second'"))
    assert await survivor.run_once() == 1
    assert ran == [0]
    async with transaction(sessions) as session:
        assert not await jobs.complete(session, claimed[0].id, "dead-worker")
    assert await _states(engine) == Counter({"done": 1})


async def test_singleton_runs_on_one_worker_at_a_time(
    sessions: SessionFactory, database_url: str
) -> None:
    other_engine = create_engine(database_url, pool_size=2)
    other = session_factory(other_engine)
    inside = asyncio.Event()
    release = asyncio.Event()

    async def long_work() -> None:
        inside.set()
        await release.wait()

    async def quick_work() -> None:
        raise AssertionError("must not run while the other holds the lock")

    try:
        first = asyncio.create_task(run_as_singleton(sessions, "poller", long_work))
        await inside.wait()
        assert await run_as_singleton(other, "poller", quick_work) is False
        release.set()
        assert await first is True
        ran: list[bool] = []

        async def now_free() -> None:
            ran.append(True)

        assert await run_as_singleton(other, "poller", now_free) is True and ran == [True]
    finally:
        await other_engine.dispose()


async def test_retry_later_does_not_spend_attempts(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    async def handler(payload: dict[str, Any]) -> None:
        raise RetryLater("waiting for an undo", timedelta(seconds=0))

    async with transaction(sessions) as session:
        await jobs.enqueue(session, "waits", {}, "waits:1", max_attempts=2)
    worker = Worker(sessions, {"waits": handler})
    for _ in range(5):
        assert await worker.run_once() == 1
    async with engine.connect() as connection:
        state, attempts = (await connection.execute(text("SELECT state, attempts FROM jobs"))).one()
    assert (state, attempts) == ("queued", 0)


async def test_a_database_error_while_recording_a_result_does_not_kill_the_loop(
    sessions: SessionFactory, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[int] = []

    async def handler(payload: dict[str, Any]) -> None:
        ran.append(payload["n"])

    await _enqueue_many(sessions, 2)
    real_complete = jobs.complete
    calls = {"n": 0}

    async def flaky_complete(*args: Any, **kwargs: Any) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("database blip")
        return await real_complete(*args, **kwargs)

    monkeypatch.setattr(jobs, "complete", flaky_complete)
    worker = Worker(
        sessions, {"probe": handler}, config=WorkerConfig(concurrency=1, idle_poll=0.02)
    )
    await _run_until(worker, lambda: len(ran) >= 2)
    assert sorted(ran) == [0, 1]
