"""Runs and findings (`app.sync.runs`): start with a job in one transaction, lifecycle, findings."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import findings as db_findings
from app.db.engine import SessionFactory, transaction
from app.db.jobs import claim, fail
from app.db.jobs import retry_dead as retry_dead_job
from app.settings import PosKind
from app.sync import findings, run_reporter, runs
from app.sync.run_reporter import RunReporter
from app.sync.runs import (
    BACKFILL_JOB,
    RECONCILE_JOB,
    BackfillParams,
    DirectionDisabled,
    NoPos,
    ReconcileParams,
    UnknownCards,
)
from tests.conftest import make_settings


async def _rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(text(sql), params)).all())


async def _card(engine: AsyncEngine) -> uuid.UUID:
    card_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO gift_cards (id, kind, currency) VALUES (:id, 'omni', 'AUD')"),
            {"id": card_id},
        )
    return card_id


# --- starting ---------------------------------------------------------------------------------


async def test_start_run_inserts_the_run_and_its_job(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    run_id = await runs.start_run(sessions, "reconcile", {"dry_run": True, "card_ids": None})

    [run] = await _rows(engine, "SELECT * FROM runs")
    assert run.id == run_id
    assert (run.kind, run.status) == ("reconcile", "queued")
    assert run.counts == {"checked": 0, "in_sync": 0, "repaired": 0, "findings": 0}
    assert run.params == {"dry_run": True, "card_ids": None}
    assert run.started_at is None and run.finished_at is None
    [job] = await _rows(engine, "SELECT * FROM jobs")
    assert job.kind == RECONCILE_JOB == "reconcile.run"
    assert job.payload == {"run_id": str(run_id)}
    assert job.idempotency_key == f"run:{run_id}"
    assert job.state == "queued"


async def test_backfill_run_starts_with_its_own_counts_and_job_kind(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    run_id = await runs.start_run(sessions, "backfill", {"direction": "to_pos"})
    [run] = await _rows(engine, "SELECT kind, counts FROM runs WHERE id = :id", id=run_id)
    assert run.counts == {"moved": 0, "already_linked": 0, "skipped": 0}
    [job] = await _rows(engine, "SELECT kind FROM jobs")
    assert job.kind == BACKFILL_JOB == "backfill.run"


async def test_a_rolled_back_start_leaves_neither_run_nor_job(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    with pytest.raises(RuntimeError, match="after the start"):
        async with transaction(sessions) as session:
            await runs.start_run_in(session, "reconcile", {"dry_run": False})
            raise RuntimeError("something after the start failed")
    assert await _rows(engine, "SELECT id FROM runs") == []
    assert await _rows(engine, "SELECT id FROM jobs") == []


async def test_a_failed_enqueue_leaves_no_run(
    sessions: SessionFactory, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_enqueue(*_args: Any, **_kwargs: Any) -> int | None:
        raise ConnectionError("lost the database mid-transaction")

    monkeypatch.setattr(runs, "enqueue", broken_enqueue)
    with pytest.raises(ConnectionError):
        await runs.start_run(sessions, "backfill", {"direction": "to_pos"})
    assert await _rows(engine, "SELECT id FROM runs") == []


async def test_concurrent_starts_make_separate_runs_and_jobs(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    started = await asyncio.gather(
        *(runs.start_run(sessions, "reconcile", {"dry_run": False}) for _ in range(2)),
        *(runs.start_run(sessions, "backfill", {"direction": "both"}) for _ in range(2)),
    )
    assert len(set(started)) == 4
    jobs = await _rows(engine, "SELECT payload->>'run_id' AS run_id, kind FROM jobs")
    assert sorted(job.run_id for job in jobs) == sorted(str(run_id) for run_id in started)
    assert sorted(job.kind for job in jobs) == [BACKFILL_JOB] * 2 + [RECONCILE_JOB] * 2


async def test_start_reconcile_of_some_cards(sessions: SessionFactory, engine: AsyncEngine) -> None:
    first, second = await _card(engine), await _card(engine)

    run_id = await runs.start_reconcile(sessions, dry_run=True, card_ids=[first, second, first])

    [run] = await _rows(engine, "SELECT params FROM runs WHERE id = :id", id=run_id)
    assert run.params == {"dry_run": True, "card_ids": [str(first), str(second)]}
    assert ReconcileParams.of(run.params) == ReconcileParams(True, [first, second])


async def test_start_reconcile_of_every_card(sessions: SessionFactory, engine: AsyncEngine) -> None:
    run_id = await runs.start_reconcile(sessions, dry_run=False)
    [run] = await _rows(engine, "SELECT params FROM runs WHERE id = :id", id=run_id)
    assert ReconcileParams.of(run.params) == ReconcileParams(False, None)


async def test_start_reconcile_refuses_unknown_cards_and_writes_nothing(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    known, unknown = await _card(engine), uuid.uuid4()
    with pytest.raises(UnknownCards) as raised:
        await runs.start_reconcile(sessions, dry_run=False, card_ids=[known, unknown])
    assert raised.value.card_ids == [unknown]
    assert await _rows(engine, "SELECT id FROM runs") == []
    assert await _rows(engine, "SELECT id FROM jobs") == []


@pytest.mark.parametrize(
    ("to_pos", "to_shopify", "asked", "directions", "disabled"),
    [
        (True, False, "to_pos", ["to_pos"], []),
        (False, True, "to_shopify", ["to_shopify"], []),
        (True, True, "both", ["to_pos", "to_shopify"], []),
        (True, False, "both", ["to_pos"], ["to_shopify"]),
        (False, True, "both", ["to_shopify"], ["to_pos"]),
    ],
)
def test_backfill_plan_runs_the_enabled_directions(
    to_pos: bool, to_shopify: bool, asked: Any, directions: list[str], disabled: list[str]
) -> None:
    settings = make_settings(
        pos_kind="retail",
        download_shopify_gift_cards=to_pos,
        create_update_shopify_gift_cards=to_shopify,
    )
    assert runs.backfill_plan(settings, asked) == BackfillParams(asked, directions, disabled)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("to_pos", "to_shopify", "asked", "refused"),
    [
        (False, False, "both", ["to_pos", "to_shopify"]),
        (False, True, "to_pos", ["to_pos"]),
        (True, False, "to_shopify", ["to_shopify"]),
    ],
)
def test_backfill_plan_refuses_a_direction_that_is_off(
    to_pos: bool, to_shopify: bool, asked: Any, refused: list[str]
) -> None:
    settings = make_settings(
        pos_kind="onsite",
        download_shopify_gift_cards=to_pos,
        create_update_shopify_gift_cards=to_shopify,
    )
    with pytest.raises(DirectionDisabled) as raised:
        runs.backfill_plan(settings, asked)
    assert raised.value.directions == refused


@pytest.mark.parametrize("asked", ["to_pos", "to_shopify", "both"])
def test_backfill_plan_needs_a_pos(asked: Any) -> None:
    settings = make_settings(pos_kind=PosKind.NONE)
    with pytest.raises(NoPos):
        runs.backfill_plan(settings, asked)


async def test_start_backfill_refused_writes_nothing(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    with pytest.raises(NoPos):
        await runs.start_backfill(sessions, make_settings(), "both")
    assert await _rows(engine, "SELECT id FROM runs") == []
    assert await _rows(engine, "SELECT id FROM jobs") == []


async def test_start_backfill_records_the_plan(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    settings = make_settings(pos_kind="retail", download_shopify_gift_cards=True)
    run_id = await runs.start_backfill(sessions, settings, "both")
    [run] = await _rows(engine, "SELECT params FROM runs WHERE id = :id", id=run_id)
    assert BackfillParams.of(run.params) == BackfillParams("both", ["to_pos"], ["to_shopify"])


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


# --- reading ----------------------------------------------------------------------------------


async def test_get_run_unknown_is_none(sessions: SessionFactory) -> None:
    assert await runs.get_run(sessions, uuid.uuid4()) is None


async def test_get_run_lists_the_findings_it_opened_or_saw(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    card_id = await _card(engine)
    earlier = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    later = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    async with transaction(sessions) as session:
        await findings.record_finding(
            session,
            earlier,
            finding_type="balance_mismatch",
            subject=f"card:{card_id}",
            card_id=card_id,
            evidence={"shopify": "10.00", "lightspeed": "12.00"},
        )
        await findings.record_finding(
            session,
            earlier,
            finding_type="orphan",
            subject="lightspeed:55",
            card_id=None,
            evidence={"last4": "0055"},
        )
        await findings.record_finding(
            session,
            later,
            finding_type="balance_mismatch",
            subject=f"card:{card_id}",
            card_id=card_id,
            evidence={"shopify": "10.00", "lightspeed": "13.00"},
        )
        await db_findings.open_finding(
            session,
            finding_type="unrepairable",
            subject="shadow:x",
            card_id=None,
            evidence={"reason": "not from a run"},
        )

    earlier_view = await runs.get_run(sessions, earlier)
    later_view = await runs.get_run(sessions, later)
    assert earlier_view is not None and later_view is not None
    assert [(f.type, f.subject) for f in earlier_view.findings] == [
        ("balance_mismatch", f"card:{card_id}"),
        ("orphan", "lightspeed:55"),
    ]
    [seen_again] = later_view.findings
    assert seen_again.card_id == card_id
    assert seen_again.evidence == {"shopify": "10.00", "lightspeed": "13.00"}
    assert seen_again.resolved_at is None
    assert seen_again.created_at is not None


async def test_get_run_reports_a_run_whose_job_died_as_failed(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    run_id = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    async with transaction(sessions) as session:
        [job] = await claim(session, "w-1", limit=1, lease=timedelta(seconds=60))
    async with transaction(sessions) as session:
        assert await fail(session, job, "w-1", "PermanentJobError: no handler", permanent=True)

    view = await runs.get_run(sessions, run_id)
    assert view is not None
    assert view.status == "failed"
    assert view.job_id == job.id
    assert view.error is not None and "no handler" in view.error
    [stored] = await _rows(engine, "SELECT status FROM runs")
    assert stored.status == "queued"

    async with transaction(sessions) as session:
        assert await retry_dead_job(session, job.id)
    retried = await runs.get_run(sessions, run_id)
    assert retried is not None
    assert (retried.status, retried.error) == ("queued", None)


# --- findings ---------------------------------------------------------------------------------


async def _finding(engine: AsyncEngine, finding_type: str, subject: str) -> Any:
    rows = await _rows(
        engine,
        "SELECT * FROM findings WHERE type = :t AND subject = :s ORDER BY id",
        t=finding_type,
        s=subject,
    )
    return rows[-1]


async def test_record_finding_opens_once_and_refreshes(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    first = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    second = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    async with transaction(sessions) as session:
        assert await findings.record_finding(
            session, first, finding_type="t", subject="s", card_id=None, evidence={"n": 1}
        )
        assert not await findings.record_finding(
            session, first, finding_type="t", subject="s", card_id=None, evidence={"n": 2}
        )
        assert not await findings.record_finding(
            session, second, finding_type="t", subject="s", card_id=None, evidence={"n": 3}
        )
    row = await _finding(engine, "t", "s")
    assert (row.first_run_id, row.last_run_id, row.evidence) == (first, second, {"n": 3})
    assert len(await _rows(engine, "SELECT id FROM findings")) == 1


async def test_open_finding_without_a_run_keeps_its_old_behaviour(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    async with transaction(sessions) as session:
        assert await db_findings.open_finding(
            session, finding_type="t", subject="s", card_id=None, evidence={"n": 1}
        )
        assert not await db_findings.open_finding(
            session, finding_type="t", subject="s", card_id=None, evidence={"n": 2}
        )
    row = await _finding(engine, "t", "s")
    assert (row.first_run_id, row.last_run_id, row.evidence) == (None, None, {"n": 1})

    run_id = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    async with transaction(sessions) as session:
        await findings.record_finding(
            session, run_id, finding_type="t", subject="s", card_id=None, evidence={"n": 3}
        )
    row = await _finding(engine, "t", "s")
    assert (row.first_run_id, row.last_run_id, row.evidence) == (run_id, run_id, {"n": 3})


async def test_a_resolved_finding_seen_again_opens_a_new_one(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    first = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    second = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    third = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    async with transaction(sessions) as session:
        await findings.record_finding(
            session, first, finding_type="t", subject="s", card_id=None, evidence={}
        )
    async with transaction(sessions) as session:
        assert await findings.resolve_findings_not_seen(session, second, finding_types=["t"]) == 1
    async with transaction(sessions) as session:
        assert await findings.record_finding(
            session, third, finding_type="t", subject="s", card_id=None, evidence={}
        )
    rows = await _rows(engine, "SELECT resolved_at, first_run_id FROM findings ORDER BY id")
    assert [row.resolved_at is None for row in rows] == [False, True]
    assert rows[1].first_run_id == third


async def test_resolve_findings_not_seen_respects_its_scope(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    card_a, card_b = await _card(engine), await _card(engine)
    before = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    async with transaction(sessions) as session:
        for finding_type, subject, card in [
            ("mismatch", "card:a", card_a),
            ("mismatch", "card:b", card_b),
            ("mismatch", "card:still", card_a),
            ("overdraft", "card:a", card_a),
        ]:
            await findings.record_finding(
                session,
                before,
                finding_type=finding_type,
                subject=subject,
                card_id=card,
                evidence={},
            )
    now = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    async with transaction(sessions) as session:
        await run_reporter.mark_running(session, now)
        await findings.record_finding(
            session,
            now,
            finding_type="mismatch",
            subject="card:still",
            card_id=card_a,
            evidence={},
        )
        resolved = await findings.resolve_findings_not_seen(
            session, now, finding_types=["mismatch"], card_ids=[card_a]
        )
    assert resolved == 1
    open_now = await _rows(
        engine, "SELECT type, subject FROM findings WHERE resolved_at IS NULL ORDER BY id"
    )
    assert [(row.type, row.subject) for row in open_now] == [
        ("mismatch", "card:b"),  # another card: outside a reconcile of card_a
        ("mismatch", "card:still"),  # seen again by this run
        ("overdraft", "card:a"),  # a type this run does not judge
    ]


async def test_resolve_findings_by_subject_prefix_escapes_like_wildcards(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    before = await runs.start_run(sessions, "backfill", {"direction": "to_pos"})
    async with transaction(sessions) as session:
        for subject in ("export_shopify:1", "exportXshopify:2", "import:3"):
            await findings.record_finding(
                session,
                before,
                finding_type="unmovable",
                subject=subject,
                card_id=None,
                evidence={},
            )
    now = await runs.start_run(sessions, "backfill", {"direction": "to_pos"})
    async with transaction(sessions) as session:
        resolved = await findings.resolve_findings_not_seen(
            session, now, finding_types=["unmovable"], subject_prefix="export_"
        )
    assert resolved == 1
    open_now = await _rows(engine, "SELECT subject FROM findings WHERE resolved_at IS NULL")
    assert sorted(row.subject for row in open_now) == ["exportXshopify:2", "import:3"]


async def test_an_older_run_does_not_resolve_what_a_newer_run_saw(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    older = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    newer = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    async with transaction(sessions) as session:
        await run_reporter.mark_running(session, older)
        await findings.record_finding(
            session, newer, finding_type="mismatch", subject="card:x", card_id=None, evidence={}
        )
    async with transaction(sessions) as session:
        assert (
            await findings.resolve_findings_not_seen(session, older, finding_types=["mismatch"])
            == 0
        )
    async with transaction(sessions) as session:
        # A finding another flow opened after the older run started is newer than its look too.
        await db_findings.open_finding(
            session, finding_type="mismatch", subject="card:y", card_id=None, evidence={}
        )
    async with transaction(sessions) as session:
        assert (
            await findings.resolve_findings_not_seen(session, older, finding_types=["mismatch"])
            == 0
        )
    assert len(await _rows(engine, "SELECT id FROM findings WHERE resolved_at IS NULL")) == 2


async def test_a_later_run_resolves_runless_findings_it_judges(
    sessions: SessionFactory, engine: AsyncEngine
) -> None:
    async with transaction(sessions) as session:
        await db_findings.open_finding(
            session, finding_type="mismatch", subject="card:z", card_id=None, evidence={}
        )
    run_id = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    async with transaction(sessions) as session:
        await run_reporter.mark_running(session, run_id)
        assert (
            await findings.resolve_findings_not_seen(session, run_id, finding_types=["mismatch"])
            == 1
        )


async def test_resolve_needs_finding_types(sessions: SessionFactory) -> None:
    run_id = await runs.start_run(sessions, "reconcile", {"dry_run": False})
    async with transaction(sessions) as session:
        with pytest.raises(ValueError, match="finding types"):
            await findings.resolve_findings_not_seen(session, run_id, finding_types=[])


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
