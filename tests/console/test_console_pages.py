"""Console pages over HTTP: Overview, Findings, Runs, Cards, Lockouts (issue 17).

A Lightspeed R-Series and a Shopify simulator stand behind giftsync; drift is made on them
directly (only a reconcile sees it), and the runs the console starts are run by a worker here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import transaction
from app.db.jobs import enqueue
from app.db.lists import RunRow
from app.run_progress import run_progress
from app.runtime import Runtime
from app.settings import Settings
from app.worker import Worker
from tests.conftest import make_settings
from tests.console.conftest import Console
from tests.console.store import Store, store
from tests.wiring import shadow_upstreams

SERIAL = "gc2026console01"


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        pos_kind="retail",
        create_update_shopify_gift_cards=True,
        download_shopify_gift_cards=True,
    )


@pytest.fixture
async def shop(runtime: Runtime) -> AsyncIterator[Store]:
    async with store(runtime) as found:
        yield found


async def _run_jobs(runtime: Runtime) -> None:
    worker = Worker(runtime.sessions, runtime.handlers)
    while await worker.run_once():
        pass


def _run_id(location: str) -> uuid.UUID:
    found = re.fullmatch(r"/console/runs/([0-9a-f-]{36})", location)
    assert found is not None, location
    return uuid.UUID(found.group(1))


async def test_overview_shows_each_direction_the_queue_and_the_last_run(
    shop: Store, console: Console, engine: AsyncEngine
) -> None:
    await shop.sell(SERIAL, "50.00")
    await shop.flow.pollers.poll_shopify()  # its first look sets the cursor
    async with transaction(shop.runtime.sessions) as session:
        dead = await enqueue(session, "test.kind", {}, "dead-1")
        await session.execute(
            text("UPDATE jobs SET state = 'dead', last_error = 'boom' WHERE id = :id"),
            {"id": dead},
        )
    started = await console.post("/console/runs/reconcile")
    await _run_jobs(shop.runtime)

    page = (await console.http.get("/console")).text
    directions = re.search(r'<table id="directions">(.*?)</table>', page, re.S)
    assert directions is not None
    rows = re.findall(r"<tr>(.*?)</tr>", directions.group(1), re.S)[1:]
    assert len(rows) == 3
    assert "POS → Shopify" in rows[0] and '<span class="pill on">on</span>' in rows[0]
    assert "Shopify → POS" in rows[1] and '<span class="pill on">on</span>' in rows[1]
    assert "notifications" in rows[2] and '<span class="pill off">off</span>' in rows[2]
    assert "UTC" in rows[0] and "UTC" in rows[1]  # each poller's cursor has moved
    assert '<span class="big" id="dead-jobs">1</span>' in page
    assert '<span class="big" id="queue-depth">0</span>' in page
    assert f'href="/console/runs/{_run_id(started.headers["location"])}"' in page
    assert '<span class="pill succeeded">succeeded</span>' in page
    assert "<code>2026-07</code>" in page
    assert "worker_heartbeat" in page and "upstreams" in page

    retried = await console.post(f"/console/jobs/{dead}/retry")
    assert retried.status_code == 303
    async with engine.connect() as connection:
        state = await connection.scalar(text("SELECT state FROM jobs WHERE id = :i"), {"i": dead})
    assert state == "queued"


async def test_a_drift_is_found_reported_and_resolved_with_a_note(
    shop: Store, console: Console, engine: AsyncEngine
) -> None:
    card = await shop.sell(SERIAL, "50.00")
    shop.status_conflict(card)

    dry = await console.post("/console/runs/reconcile", dry_run="on")
    assert dry.status_code == 303
    dry_id = _run_id(dry.headers["location"])
    queued = (await console.http.get(f"/console/runs/{dry_id}/progress")).json()
    assert queued["status"] == "queued" and queued["finished"] is False
    await _run_jobs(shop.runtime)
    progress = (await console.http.get(f"/console/runs/{dry_id}/progress")).json()
    assert {k: progress[k] for k in ("status", "done", "total", "percent", "finished")} == {
        "status": "succeeded",
        "done": 1,
        "total": 1,
        "percent": 100,
        "finished": True,
    }
    assert progress["counts"] == {"checked": 1, "in_sync": 0, "repaired": 0, "findings": 1}
    report = (await console.http.get(f"/console/runs/{dry_id}")).text
    assert "these are the findings it would record" in report
    assert "<code>status_conflict</code>" in report
    # A dry run records nothing.
    assert "No findings here." in (await console.http.get("/console/findings")).text

    real = await console.post("/console/runs/reconcile")
    await _run_jobs(shop.runtime)
    listed = (await console.http.get("/console/findings?type=status_conflict&state=open")).text
    [finding_id] = map(int, set(re.findall(r'href="/console/findings/(\d+)"', listed)))
    assert f'href="/console/cards/{card.card_id}"' in listed
    assert (
        "<code>status_conflict</code>"
        in (await console.http.get(f"/console/runs/{_run_id(real.headers['location'])}")).text
    )

    page = (await console.http.get(f"/console/findings/{finding_id}")).text
    assert '<span class="pill warn">open</span>' in page
    assert "What it means" in page and "What to do" in page
    assert "<th>balances</th><td>shopify 50.00, lightspeed 70.00</td>" in page
    assert "<th>base</th><td>50.00</td>" in page

    empty = await console.post(f"/console/findings/{finding_id}/resolve", note="  ")
    assert empty.status_code == 422
    assert "a note is required" in empty.text
    resolved = await console.post(
        f"/console/findings/{finding_id}/resolve", note="Card archived in store by Sam"
    )
    assert resolved.headers["location"] == f"/console/findings/{finding_id}?done=resolved"
    page = (await console.http.get(resolved.headers["location"])).text
    assert "Finding resolved." in page
    assert "by <strong>admin</strong>" in page
    assert "Card archived in store by Sam" in page
    again = await console.post(f"/console/findings/{finding_id}/resolve", note="twice")
    assert again.headers["location"] == f"/console/findings/{finding_id}?done=already"
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT resolved_by, resolution_note FROM findings WHERE id = :i"),
                {"i": finding_id},
            )
        ).one()
        audit = (
            await connection.execute(text("SELECT operator, action, status FROM audit_log"))
        ).all()
    assert tuple(row) == ("admin", "Card archived in store by Sam")
    assert ("admin", f"POST /console/findings/{finding_id}/resolve", 303) in [
        tuple(a) for a in audit
    ]


async def test_reconcile_a_findings_card_again(
    shop: Store, console: Console, engine: AsyncEngine
) -> None:
    card = await shop.sell(SERIAL, "50.00")
    shop.status_conflict(card)
    await console.post("/console/runs/reconcile")
    await _run_jobs(shop.runtime)
    async with engine.connect() as connection:
        finding_id = await connection.scalar(text("SELECT id FROM findings"))
    # Staff settle it in store; reconciling that one card sees it fixed and resolves it.
    assert shop.flow.ls_sim is not None
    shop.flow.ls_sim.cards[card.external_id].archived = True

    response = await console.post(f"/console/findings/{finding_id}/reconcile")
    run_id = _run_id(response.headers["location"])
    await _run_jobs(shop.runtime)

    page = (await console.http.get(f"/console/runs/{run_id}")).text
    assert f'href="/console/cards/{card.card_id}"' in page
    assert '<span class="pill succeeded" data-field="status">succeeded</span>' in page
    finding = (await console.http.get(f"/console/findings/{finding_id}")).text
    assert "by a run that saw it fixed" in finding


async def test_backfill_switched_off_is_refused_with_the_setting_named(
    shop: Store, console: Console, engine: AsyncEngine
) -> None:
    shop.runtime.settings.download_shopify_gift_cards = False
    response = await console.post("/console/runs/backfill", direction="to_pos")
    assert response.status_code == 409
    assert "Switched off in Settings: to_pos (DOWNLOAD_SHOPIFY_GIFT_CARDS)." in response.text
    started = await console.post("/console/runs/backfill", direction="to_shopify")
    assert started.status_code == 303
    listed = (await console.http.get("/console/runs?kind=backfill")).text
    assert str(_run_id(started.headers["location"])) in listed
    assert (await console.post("/console/runs/backfill", direction="up")).status_code == 422


async def test_staff_find_a_card_and_see_every_balance_and_its_ledger(
    shop: Store, console: Console
) -> None:
    card = await shop.sell(SERIAL, "50.00")
    for form in ({"last4": SERIAL[-4:]}, {"serial": SERIAL.upper()}):
        found = await console.post("/console/cards", **form)
        assert found.status_code == 200
        assert f'href="/console/cards/{card.card_id}"' in found.text
        assert SERIAL not in found.text.lower()  # a serial is never shown back
    none = await console.post("/console/cards", last4="zzzz")
    assert "No card matches." in none.text
    bad = await console.post("/console/cards", last4="12")
    assert bad.status_code == 422
    assert (await console.post("/console/cards")).status_code == 422

    page = (await console.http.get(f"/console/cards/{card.card_id}")).text
    balances = re.findall(r'<div class="system">(\w+)', page)
    assert balances == ["agreed", "lightspeed", "shopify"]
    assert page.count('<div class="big num">50.00</div>') == 3
    assert "card_created" in page
    assert SERIAL not in page.lower()
    missing = await console.http.get(f"/console/cards/{uuid.uuid4()}")
    assert missing.status_code == 404


async def test_lockouts_are_cleared_by_number_or_from_the_list(
    runtime: Runtime, console: Console, engine: AsyncEngine
) -> None:
    async with shadow_upstreams(runtime):
        assert runtime.shadow is not None
        hashes = [
            runtime.shadow.secrets.card_hash(n) for n in ("6280001111111111", "6280002222222222")
        ]
        async with engine.begin() as connection:
            for vii_hash in hashes:
                await connection.execute(
                    text("INSERT INTO card_lockouts (vii_card_hash, vii_last4) VALUES (:h, :l)"),
                    {"h": vii_hash, "l": "1111" if vii_hash == hashes[0] else "2222"},
                )
        page = (await console.http.get("/console/lockouts")).text
        assert "…1111" in page and "…2222" in page

        cleared = await console.post(
            "/console/lockouts/clear", vii_card_number="6280 0011 1111 1111"
        )
        assert "Cleared: the card can be used again." in cleared.text
        assert "…1111" not in cleared.text
        by_hash = await console.post("/console/lockouts/clear", card_hash=hashes[1])
        assert "Cleared" in by_hash.text and "No card is locked." in by_hash.text
        nothing = await console.post("/console/lockouts/clear", vii_card_number="6280003333333333")
        assert "neither locked nor had wrong PINs" in nothing.text
        bad = await console.post("/console/lockouts/clear", vii_card_number="12")
        assert bad.status_code == 422
    async with engine.connect() as connection:
        cleared_by = (await connection.execute(text("SELECT cleared_by FROM card_lockouts"))).all()
    assert [row[0] for row in cleared_by] == ["admin", "admin"]


def test_progress_rate_and_time_left() -> None:
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    run = RunRow(
        id=uuid.uuid4(),
        kind="reconcile",
        status="running",
        params={},
        counts={},
        progress={"cards_done": 300, "cards_total": 1000},
        error=None,
        created_at=start,
        started_at=start,
        finished_at=None,
        job_id=1,
    )
    progress = run_progress(run, now=start + timedelta(seconds=60))
    assert (progress.done, progress.total, progress.percent) == (300, 1000, 30)
    assert (progress.rate_per_second, progress.seconds_left) == (5.0, 140)
    backfill = RunRow(
        **{
            **run.__dict__,
            "kind": "backfill",
            "progress": {
                "to_pos": {"processed": 10, "total": 40},
                "to_shopify": {"processed": 5, "total": None},
            },
        }
    )
    assert (run_progress(backfill, now=start).done, run_progress(backfill).total) == (15, None)


async def test_what_upstreams_said_is_shown_as_text_never_markup(
    console: Console, engine: AsyncEngine
) -> None:
    async with engine.begin() as connection:
        finding_id = await connection.scalar(
            text(
                "INSERT INTO findings (type, subject, evidence) VALUES ('unrepairable', "
                "'<script>alert(1)</script>', '{\"reason\": \"<img src=x onerror=alert(2)>\"}') "
                "RETURNING id"
            )
        )
    for path in ("/console/findings", f"/console/findings/{finding_id}"):
        page = (await console.http.get(path)).text
        assert "<script>alert(1)" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
