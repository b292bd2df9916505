"""Runs (`app.sync.runs`): started with their job in one transaction, read back with their findings."""

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
from app.sync import findings, runs
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
