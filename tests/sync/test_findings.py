"""Findings (`app.sync.findings`): recorded once per subject, refreshed by runs, resolved when no
longer seen."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import findings as db_findings
from app.db.engine import SessionFactory, transaction
from app.sync import findings, run_reporter, runs


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
