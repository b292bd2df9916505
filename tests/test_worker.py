from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.activity import RequestActivity
from app.db import jobs
from app.db.engine import SessionFactory, create_engine, session_factory, transaction
from app.worker import (
    JobHandler,
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


def _busy_worker(
    sessions: SessionFactory,
    activity: RequestActivity,
    handler: JobHandler,
    *,
    busy_cpu_share: float,
) -> Worker:
    config = WorkerConfig(
        concurrency=3,
        idle_poll=0.02,
        room_at_most=30.0,
        settled_for=0.25,
        busy_cpu_share=busy_cpu_share,
    )
    return Worker(sessions, {"probe": handler}, config=config, gives_way_to=activity)


class _Concurrency:
    """A job handler that notes how many jobs ran at once."""

    def __init__(self) -> None:
        self.running = 0
        self.seen: list[int] = []

    async def __call__(self, payload: dict[str, Any]) -> None:
        self.running += 1
        self.seen.append(self.running)
        await asyncio.sleep(0.05)
        self.running -= 1


@contextlib.asynccontextmanager
async def _stream_of_requests(activity: RequestActivity) -> AsyncIterator[None]:
    """Requests one after another, never 250 ms apart."""
    answering = True

    async def answer() -> None:
        while answering:
            with activity.request():
                await asyncio.sleep(0.004)
            await asyncio.sleep(0.001)

    task = asyncio.create_task(answer())
    try:
        yield
    finally:
        answering = False
        await task


async def test_while_requests_keep_the_process_busy_one_job_runs_at_a_time(
    sessions: SessionFactory,
) -> None:
    activity, jobs_seen = RequestActivity(), _Concurrency()
    # A CPU share of 0 is never below the limit: the process counts as saturated.
    worker = _busy_worker(sessions, activity, jobs_seen, busy_cpu_share=0.0)
    await _enqueue_many(sessions, 6)
    async with _stream_of_requests(activity):
        await _run_until(worker, lambda: len(jobs_seen.seen) >= 6)
    assert max(jobs_seen.seen) == 1


async def test_requests_that_leave_cpu_to_spare_get_every_job_loop(
    sessions: SessionFactory,
) -> None:
    activity, jobs_seen = RequestActivity(), _Concurrency()
    worker = _busy_worker(sessions, activity, jobs_seen, busy_cpu_share=10.0)
    await _enqueue_many(sessions, 6)
    async with _stream_of_requests(activity):
        await _run_until(worker, lambda: len(jobs_seen.seen) >= 6)
    assert max(jobs_seen.seen) > 1


async def test_once_requests_stop_every_job_loop_runs_again(sessions: SessionFactory) -> None:
    activity, jobs_seen = RequestActivity(), _Concurrency()
    worker = _busy_worker(sessions, activity, jobs_seen, busy_cpu_share=0.0)
    with activity.request():
        await asyncio.sleep(0)
    await asyncio.sleep(0.3)  # settled: no request for longer than `settled_for`
    await _enqueue_many(sessions, 6)
    await _run_until(worker, lambda: len(jobs_seen.seen) >= 6)
    assert max(jobs_seen.seen) > 1


async def test_a_busy_process_slows_jobs_but_never_stalls_them(
    sessions: SessionFactory,
) -> None:
    activity = RequestActivity()
    runs: list[int] = []

    async def handler(payload: dict[str, Any]) -> None:
        runs.append(payload["n"])

    config = WorkerConfig(concurrency=2, idle_poll=0.02, room_at_most=0.1, busy_cpu_share=0.0)
    worker = Worker(sessions, {"probe": handler}, config=config, gives_way_to=activity)
    await _enqueue_many(sessions, 4)
    with activity.request():  # never settled, never below the CPU limit
        await _run_until(worker, lambda: len(runs) >= 4)
    assert sorted(runs) == [0, 1, 2, 3]


async def test_settled_means_no_request_for_that_long() -> None:
    activity = RequestActivity()
    with activity.request():
        assert not activity.settled(0.0)
    ended = time.monotonic()
    assert await activity.room(5.0, settled_for=0.2, cpu_below=0.0)
    assert time.monotonic() - ended >= 0.2
    with activity.request():
        assert not await activity.room(0.05, settled_for=0.0, cpu_below=0.0)


async def test_the_cpu_share_follows_what_the_process_burns() -> None:
    activity = RequestActivity()
    started = time.process_time()
    while time.process_time() - started < 0.4:  # one core's worth of work
        sum(range(1000))
    assert activity.cpu_share() > 0.5
    await asyncio.sleep(0.4)
    assert activity.cpu_share() < 0.5
