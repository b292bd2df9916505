"""Reconcile (issue 6, DESIGN 7): prove card by card that every system agrees, repair what is safe.

Events get lost, staff adjust balances by hand, upstreams fail for hours. A reconcile run reads
every system in bulk and compares it with what giftsync last agreed (`sync_base`):

- omni cards (Shopify + POS): the three-way merge of DESIGN 7 through `OmniSync.sync_card`, so a
  repair is exactly what an event would have done: one idempotent move per side, queued in the
  same transaction as the base update (a crash never leaves half a repair);
- Vii shadow cards (Shopify + our hold state; Vii cannot list holds): an enabled Shopify card
  without an open hold is deactivated (`orphan_shadow_card`), an open hold whose Shopify card is
  disabled is handed to the shadow close job (`hold_without_card`);
- links: a card whose link row vanished is re-linked when giftsync's own marks (the note it
  wrote, the serial it derived) name exactly one twin, otherwise reported (`missing_link`).

How one run keeps memory flat and stays correct while the world moves on:

1. `T0`: one statement copies the base (balance, version) of every card, and which cards have
   moves still in flight, into a temporary table. Cards with moves in flight are skipped
   (`pending`): their upstream balances may or may not include those moves yet.
2. Shopify's bulk export and the POS card list are streamed into temporary tables (COPY in
   batches): nothing in this process grows with the card count.
3. The tables are joined in PostgreSQL and walked in card-id order in batches. A card whose
   balances equal its base on both sides is in sync and costs no write. Any other card goes to
   `sync_card` with the snapshot's states and the version read at `T0`; if the base moved
   since (an event merged meanwhile), `sync_card` drops the snapshot and reads live under the
   card's lock, so a snapshot older than the base can never be merged.
4. Findings are recorded with the run id; after a full run, open findings of the types the
   reconciler judges, on subjects it checked, that it did not see again are resolved.

A dry run does all of this up to the decision and writes nothing but its own run row (counts,
and the findings it would record under `progress.findings`).
A crash anywhere loses nothing: each card's repair is one transaction, the run checkpoints the
last card it finished, and the `reconcile.run` job (re-claimed when its lease runs out) takes a
fresh snapshot and continues after that card.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.clients.errors import UpstreamError, UpstreamRejected
from app.clients.shopify import ShopifyGiftCard, ShopifyNotFound
from app.db import jobs
from app.db.engine import SessionFactory, autocommit_connection, transaction
from app.db.locks import lock_for_transaction
from app.logging import get_logger, mask_text
from app.metrics import (
    RECONCILE_CARDS_CHECKED,
    RECONCILE_CARDS_IN_SYNC,
    RECONCILE_CARDS_REPAIRED,
    RECONCILE_DRIFT_MINOR,
    RECONCILE_FINDINGS,
    RECONCILE_RUN_SECONDS,
)
from app.settings import Settings
from app.sync import runs
from app.sync.findings import record_finding, resolve_findings_not_seen
from app.sync.omni import (
    CURSOR_OVERLAP,
    DEACTIVATE_JOB,
    MOVE_JOB,
    NOTE_MARKER,
    SHOPIFY,
    OmniSync,
    pos_state,
    shopify_state,
)
from app.sync.omni.merge import MergePlan, SystemState, SystemStatus, in_sync, plan_merge
from app.sync.omni.sync import sync_card
from app.sync.omni.triggers import pos_cursor_name, read_cursor
from app.sync.pos import PosCard
from app.sync.run_reporter import RunReporter
from app.sync.runs import ReconcileParams
from app.sync.shadow.lifecycle import CLOSE_JOB, request_close
from app.worker import RetryLater, run_as_singleton

log = get_logger(__name__)

PERIODIC_NAME = "reconcile"
RUN_LOCK = "reconcile-run"
DEACTIVATE_SHADOW_JOB = "reconcile.deactivate_shopify"
BATCH_SIZE = 10_000
"""Cards per batch: one checkpoint per batch, and no more rows than this in memory at once.

Smaller batches cost more than they save: each is a few indexed queries over the snapshot."""
TEMP_BUFFERS = "128MB"
REPAIR_CONCURRENCY = 8
"""Cards repaired at once (one pooled connection each, beside the snapshot's)."""
FINDINGS_IN_PROGRESS = 200
"""A dry run lists at most this many would-be findings in its progress (the counts are exact)."""
SHADOW_GRACE = timedelta(minutes=10)
"""A shadow-marked Shopify card younger than this may belong to a checkout still committing."""

# Findings the reconciler is the judge of, resolved when a later full run no longer sees them.
# An overdraft is not among them: it is money already spent twice, a loss for staff to chase,
# and a card zeroed by it looks perfectly in sync afterwards.
OMNI_FINDINGS = ("missing_link", "status_conflict", "currency_mismatch", "unrepairable")
SHADOW_FINDINGS = ("orphan_shadow_card", "hold_without_card")

_LINK_NOTE = re.compile(rf"^{NOTE_MARKER}: (?P<system>[a-z]+) card (?P<external_id>\S+)$")
_SHADOW_NOTE = re.compile(r"^shadow:(?P<shadow_id>[0-9a-f-]{36})$")

SHOPIFY_COLUMNS = (
    "id",
    "balance_minor",
    "enabled",
    "currency",
    "last4",
    "note_pos_ext",
    "shadow_ref",
    "created_at",
    "serial_hash",
)
POS_COLUMNS = ("external_id", "balance_minor", "enabled", "last4", "serial_hash")


@runtime_checkable
class ReconcileShopify(Protocol):
    """What a reconcile needs from Shopify (`app.clients.shopify.ShopifyClient`)."""

    def bulk_export_gift_cards(
        self, *, poll_interval: float = 1.0
    ) -> AsyncIterator[ShopifyGiftCard]: ...

    async def get_gift_card(self, card_id: str) -> ShopifyGiftCard | None: ...

    async def find_gift_card_by_code(self, code: str) -> ShopifyGiftCard | None: ...

    async def deactivate_gift_card(self, card_id: str) -> ShopifyGiftCard: ...


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run is: `phase` is shopify, pos, cards, shadow or unlinked."""

    phase: str
    done: int
    total: int | None


ProgressCallback = Callable[[Progress], None]


@dataclass
class _Tally:
    """What one execution saw, beyond the four counts the run row carries."""

    findings_by_type: Counter[str] = field(default_factory=Counter)
    findings_before: Counter[str] = field(default_factory=Counter)
    """What earlier attempts of a resumed run had counted already."""
    drift_minor: int = 0
    would_be: list[dict[str, Any]] = field(default_factory=list)
    unchecked: list[uuid.UUID] = field(default_factory=list)
    """Cards skipped or failed this time: their open findings are kept, not resolved."""


_BATCH_FROM = """
    FROM rc_base b
    LEFT JOIN rc_shopify s ON s.id = b.shopify_id
    LEFT JOIN rc_pos p ON p.external_id = b.pos_id
    WHERE b.card_id > CAST(:after AS uuid) AND b.card_id <= CAST(:last AS uuid)
"""
# In agreement as it stands: both sides hold the base and are enabled, or the card is over
# everywhere and recorded so (see `_omni_card`). Anything else goes to the merge.
_SETTLED = """
    (NOT b.pending AND s.id IS NOT NULL AND p.external_id IS NOT NULL AND (
        (s.enabled AND p.enabled AND s.balance_minor = b.balance_minor
         AND p.balance_minor = b.balance_minor AND upper(btrim(s.currency)) = :currency)
        OR (NOT s.enabled AND NOT p.enabled AND b.card_state = 'deactivated')))
"""
_BATCH_COUNTS = f"""
    SELECT count(*) AS cards, count(*) FILTER (WHERE {_SETTLED}) AS settled {_BATCH_FROM}
"""
_BATCH_SUSPECTS = f"""
    SELECT b.card_id, b.balance_minor, b.version, b.pending, b.card_state,
           b.shopify_id, b.pos_id, b.shopify_code_hash, b.pos_code_hash,
           s.id AS s_id, s.balance_minor AS s_balance, s.enabled AS s_enabled,
           s.currency AS s_currency,
           p.external_id AS p_id, p.balance_minor AS p_balance, p.enabled AS p_enabled
    {_BATCH_FROM} AND NOT {_SETTLED}
    ORDER BY b.card_id
"""


class RunEnded(Exception):
    """The run is no longer running: another execution finished it."""


def _state(enabled: bool) -> SystemStatus:
    return "enabled" if enabled else "disabled"


class Reconciler:
    def __init__(
        self,
        sessions: SessionFactory,
        settings: Settings,
        omni: OmniSync | None,
        shopify: ReconcileShopify,
        *,
        bulk_poll_interval: float = 2.0,
        batch_size: int = BATCH_SIZE,
        repair_concurrency: int = REPAIR_CONCURRENCY,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.omni = omni
        self.shopify = shopify
        self.bulk_poll_interval = bulk_poll_interval
        self.batch_size = batch_size
        self.repair_concurrency = repair_concurrency

    async def run(
        self, run_id: uuid.UUID | str, *, progress: ProgressCallback | None = None
    ) -> dict[str, int]:
        """Execute (or resume) the run; its params (`dry_run`, `card_ids`) are the run row's.

        Returns the run's counts. A run that has already finished is not run again.
        """
        reporter = await RunReporter.begin(self.sessions, run_id)
        if reporter is None:
            return await _stored_counts(self.sessions, run_id)
        params = ReconcileParams.of(reporter.params)
        mode = "dry_run" if params.dry_run else "repair"
        started = time.monotonic()
        before = dict(reporter.counts)
        execution = _Execution(self, reporter, params, progress)
        try:
            await execution.execute()
        except RunEnded:
            # Finished by another execution meanwhile (this one had lost its job's lease).
            return await _stored_counts(self.sessions, reporter.run_id)
        await reporter.succeed()
        RECONCILE_RUN_SECONDS.labels(mode=mode).observe(time.monotonic() - started)
        _count_metrics(mode, before, reporter.counts, execution.tally)
        log.info(
            "reconcile_finished",
            run_id=str(reporter.run_id),
            dry_run=params.dry_run,
            **reporter.counts,
            drift_minor=execution.tally.drift_minor,
        )
        return dict(reporter.counts)

    async def run_job(self, payload: dict[str, Any]) -> None:
        """Job `reconcile.run`: one run at a time; a second waits for the first to finish."""

        async def work() -> None:
            await self.run(payload["run_id"])

        if not await run_as_singleton(self.sessions, RUN_LOCK, work):
            raise RetryLater("another reconcile run is executing", timedelta(seconds=30))

    async def run_deactivate(self, payload: dict[str, Any]) -> None:
        """Job: deactivate an orphaned shadow card in Shopify (irreversible, so only this)."""
        shopify_id = payload["shopify_id"]
        try:
            await self.shopify.deactivate_gift_card(shopify_id)
        except ShopifyNotFound:
            return
        except UpstreamRejected as exc:
            async with transaction(self.sessions) as session:
                await record_finding(
                    session,
                    payload["run_id"],
                    finding_type="unrepairable",
                    subject=payload["subject"],
                    card_id=payload.get("card_id"),
                    evidence={
                        "repair": "deactivate the Shopify card",
                        "shopify_id": shopify_id,
                        "error": mask_text(f"{type(exc).__name__}: {exc}")[:300],
                    },
                )
            return
        log.info("reconcile_shadow_deactivated", shopify_id=shopify_id)

    async def schedule(self) -> None:
        """Periodic: queue a full run when none ran within RECONCILE_INTERVAL."""
        await schedule_run(self.sessions, self.settings.reconcile_interval)


async def schedule_run(sessions: SessionFactory, interval: timedelta) -> uuid.UUID | None:
    """Start a full reconcile unless one was started within `interval` or is still under way.

    The database decides, so any number of workers, each with its own timer, start one run per
    interval between them. A run whose job died does not count as under way.
    """
    async with transaction(sessions) as session:
        await lock_for_transaction(session, "reconcile-schedule")
        busy = await session.scalar(
            text(
                """
                SELECT 1 FROM runs r
                LEFT JOIN jobs j ON j.idempotency_key = 'run:' || r.id::text
                WHERE r.kind = 'reconcile'
                  AND coalesce(r.params->>'dry_run', 'false') = 'false'
                  AND (r.params->'card_ids' IS NULL OR r.params->'card_ids' = 'null'::jsonb)
                  AND (r.created_at > now() - CAST(:interval AS interval)
                       OR (r.status IN ('queued', 'running') AND j.state IN ('queued', 'running')))
                LIMIT 1
                """
            ),
            {"interval": interval},
        )
        if busy is not None:
            return None
        params = ReconcileParams(dry_run=False, card_ids=None).to_json()
        run_id = await runs.start_run_in(session, "reconcile", {**params, "scheduled": True})
    log.info("reconcile_scheduled", run_id=str(run_id))
    return run_id


async def _stored_counts(sessions: SessionFactory, run_id: uuid.UUID | str) -> dict[str, int]:
    async with sessions() as session:
        counts = await session.scalar(
            text("SELECT counts FROM runs WHERE id = :id"), {"id": run_id}
        )
    return {name: int(value) for name, value in (counts or {}).items()}


def _count_metrics(mode: str, before: dict[str, int], after: dict[str, int], tally: _Tally) -> None:
    """Metrics count what this execution added (a resumed run already counted the rest)."""

    def added(name: str) -> int:
        return max(after.get(name, 0) - before.get(name, 0), 0)

    RECONCILE_CARDS_CHECKED.labels(mode=mode).inc(added("checked"))
    RECONCILE_CARDS_IN_SYNC.labels(mode=mode).inc(added("in_sync"))
    RECONCILE_CARDS_REPAIRED.labels(mode=mode).inc(added("repaired"))
    RECONCILE_DRIFT_MINOR.labels(mode=mode).inc(tally.drift_minor)
    for finding_type, count in (tally.findings_by_type - tally.findings_before).items():
        RECONCILE_FINDINGS.labels(type=finding_type, mode=mode).inc(count)


class _Execution:
    """One attempt at one run, on one database connection that holds the snapshot tables."""

    def __init__(
        self,
        reconciler: Reconciler,
        reporter: RunReporter,
        params: ReconcileParams,
        progress: ProgressCallback | None,
    ) -> None:
        self.r = reconciler
        self.reporter = reporter
        self.params = params
        self.dry_run = params.dry_run
        self.full = params.card_ids is None
        self.run_id = reporter.run_id
        self.omni = reconciler.omni
        self.pos_system = reconciler.omni.pos.system if reconciler.omni is not None else None
        self.tally = _Tally()
        self._progress = progress
        self._t0 = datetime.now(UTC)
        self._today = self._t0.date()
        done = reporter.progress.get("phases_done") or []
        self.phases_done: list[str] = [str(phase) for phase in done]
        self.after: str | None = reporter.progress.get("after")
        by_type = reporter.progress.get("findings_by_type") or {}
        self.tally.findings_before.update({str(k): int(v) for k, v in by_type.items()})
        self.tally.findings_by_type.update(self.tally.findings_before)
        self.tally.would_be = list(reporter.progress.get("findings") or [])
        self._drift_before = int(reporter.progress.get("drift_minor") or 0)
        self.seconds: dict[str, float] = {}
        self._currency = reconciler.settings.currency.strip().upper()

    # --- the run ------------------------------------------------------------------------------

    async def execute(self) -> None:
        # Temporary tables live as long as the connection; each statement commits alone.
        async with autocommit_connection(self.r.sessions) as conn:
            try:
                await self._timed("capture", self._capture(conn))
                if self.full:
                    await self._timed("read", self._read_everything(conn))
                else:
                    await self._timed("read", self._read_cards(conn))
                if self.omni is not None and "cards" not in self.phases_done:
                    await self._timed("cards", self._omni_cards(conn))
                    await self._phase_done("cards")
                if "shadow" not in self.phases_done:
                    await self._timed("shadow", self._shadow_cards(conn))
                    await self._phase_done("shadow")
                if self.full and "unlinked" not in self.phases_done:
                    await self._timed("unlinked", self._unlinked(conn))
                    await self._phase_done("unlinked")
                if not self.dry_run:
                    await self._timed("resolve", self._resolve())
            finally:
                with contextlib.suppress(Exception):
                    await conn.execute(text("DISCARD TEMP"))

    async def _timed(self, phase: str, work: Awaitable[None]) -> None:
        """Run one phase; its seconds go to the log and `progress.seconds` (operators ask)."""
        started = time.monotonic()
        await work
        self.seconds[phase] = round(time.monotonic() - started, 3)
        log.info(
            "reconcile_phase", run_id=str(self.run_id), phase=phase, **{"s": self.seconds[phase]}
        )

    async def _phase_done(self, phase: str) -> None:
        self.phases_done.append(phase)
        await self._checkpoint()

    async def _checkpoint(self, **extra: Any) -> None:
        running = await self.reporter.checkpoint(
            phases_done=self.phases_done,
            after=self.after,
            findings_by_type=dict(self.tally.findings_by_type),
            drift_minor=self._drift_before + self.tally.drift_minor,
            findings=self.tally.would_be,
            seconds=self.seconds,
            **extra,
        )
        if not running:
            raise RunEnded(str(self.run_id))

    def _report(self, phase: str, done: int, total: int | None) -> None:
        if self._progress is not None:
            self._progress(Progress(phase, done, total))

    # --- 1. the bases at T0 --------------------------------------------------------------

    async def _capture(self, conn: AsyncConnection) -> None:
        cards = None if self.params.card_ids is None else list(self.params.card_ids)
        await conn.execute(text("DISCARD TEMP"))
        with contextlib.suppress(DBAPIError):
            # Room for the snapshot in this backend's memory (the default, 8 MB, holds about
            # 20k cards). PostgreSQL refuses the change once a session has used temporary
            # tables; a pooled connection that ran a reconcile before keeps its setting.
            await conn.execute(text(f"SET temp_buffers = '{TEMP_BUFFERS}'"))
        if self.omni is not None:
            await conn.execute(
                text(
                    """
                    CREATE TEMP TABLE rc_base AS
                    WITH in_flight AS (
                        SELECT DISTINCT payload->>'card_id' AS card_id FROM jobs
                        WHERE state <> 'done' AND kind IN (:move, :deactivate)
                    )
                    SELECT b.card_id, b.balance_minor, b.version, g.state AS card_state,
                           s.external_id AS shopify_id, s.code_hash AS shopify_code_hash,
                           p.external_id AS pos_id, p.code_hash AS pos_code_hash,
                           f.card_id IS NOT NULL AS pending
                    FROM sync_base b
                    JOIN gift_cards g ON g.id = b.card_id AND g.kind = 'omni'
                    LEFT JOIN card_links s ON s.card_id = b.card_id AND s.system = 'shopify'
                    LEFT JOIN card_links p ON p.card_id = b.card_id AND p.system = :pos
                    LEFT JOIN in_flight f ON f.card_id = b.card_id::text
                    WHERE (CAST(:cards AS uuid[]) IS NULL OR b.card_id = ANY(CAST(:cards AS uuid[])))
                      AND (CAST(:after AS uuid) IS NULL OR b.card_id > CAST(:after AS uuid))
                    """
                ),
                {
                    "move": MOVE_JOB,
                    "deactivate": DEACTIVATE_JOB,
                    "pos": self.pos_system,
                    "cards": cards,
                    "after": self.after,
                },
            )
            await conn.execute(text("ALTER TABLE rc_base ADD PRIMARY KEY (card_id)"))
        await conn.execute(
            text(
                """
                CREATE TEMP TABLE rc_shadow AS
                WITH busy AS (
                    SELECT DISTINCT payload->>'shadow_id' AS shadow_id FROM jobs
                    WHERE state IN ('queued', 'running') AND payload ? 'shadow_id'
                )
                SELECT sc.id AS shadow_id, sc.card_id, sc.state, sc.shopify_gift_card_id AS shopify_id,
                       sc.hold_code IS NOT NULL AS has_hold, sc.applied_amount_minor,
                       sc.vii_last4, busy.shadow_id IS NOT NULL AS busy,
                       sc.settled_at IS NOT NULL AS settled
                FROM shadow_cards sc
                LEFT JOIN busy ON busy.shadow_id = sc.id::text
                WHERE sc.shopify_gift_card_id IS NOT NULL
                  AND (CAST(:cards AS uuid[]) IS NULL OR sc.card_id = ANY(CAST(:cards AS uuid[])))
                """
            ),
            {"cards": cards},
        )
        await conn.execute(
            text(
                "CREATE TEMP TABLE rc_shopify (id text NOT NULL, balance_minor bigint NOT NULL, "
                "enabled boolean NOT NULL, currency text NOT NULL, last4 text, note_pos_ext text, "
                "shadow_ref text, created_at timestamptz, serial_hash text)"
            )
        )
        await conn.execute(
            text(
                "CREATE TEMP TABLE rc_pos (external_id text NOT NULL, balance_minor bigint NOT NULL,"
                " enabled boolean NOT NULL, last4 text, serial_hash text)"
            )
        )

    # --- 2. upstreams into the snapshot tables ---------------------------------------------

    def _shopify_row(self, card: ShopifyGiftCard) -> tuple[Any, ...]:
        state = shopify_state(card, today=self._today)
        note = (card.note or "").strip()
        note_pos_ext = None
        shadow_ref = None
        serial_hash = None
        link = _LINK_NOTE.match(note)
        shadow = _SHADOW_NOTE.match(note)
        if link is not None and link["system"] == self.pos_system:
            note_pos_ext = link["external_id"]
        elif shadow is not None:
            shadow_ref = shadow["shadow_id"]
        elif self.omni is not None and NOTE_MARKER not in note:
            # A merchant's card giftsync may have exported: its POS twin has a derived serial.
            with contextlib.suppress(ValueError):
                serial = self.omni.pos_serial_for(card.id)
                serial_hash = self.omni.code_hash(serial)
        return (
            card.id,
            state.balance_minor,
            state.status == "enabled",
            card.currency,
            card.last_characters[-4:],
            note_pos_ext,
            shadow_ref,
            card.created_at,
            serial_hash,
        )

    def _pos_row(self, card: PosCard) -> tuple[Any, ...]:
        assert self.omni is not None
        state = pos_state(card, self.omni.pos.system, self.r.settings.currency)
        # Only a serial giftsync derived from a Shopify card can name a Shopify twin; the
        # others are matched by the note on their Shopify card.
        prefixed = card.serial.startswith(self.r.settings.shopify_serial_prefix)
        return (
            card.external_id,
            state.balance_minor,
            state.status == "enabled",
            card.serial[-4:],
            self.omni.code_hash(card.serial) if prefixed else None,
        )

    async def _copy(
        self, conn: AsyncConnection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        if not rows:
            return
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.copy_records_to_table(table, records=rows, columns=list(columns))

    async def _stream_into(
        self,
        conn: AsyncConnection,
        phase: str,
        table: str,
        columns: Sequence[str],
        rows: AsyncIterator[tuple[Any, ...]],
    ) -> int:
        batch: list[tuple[Any, ...]] = []
        count = 0
        async for row in rows:
            batch.append(row)
            if len(batch) >= self.r.batch_size:
                await self._copy(conn, table, columns, batch)
                count += len(batch)
                batch = []
                self._report(phase, count, None)
        await self._copy(conn, table, columns, batch)
        count += len(batch)
        self._report(phase, count, count)
        return count

    async def _read_everything(self, conn: AsyncConnection) -> None:
        """Shopify's bulk export once, and every POS card by paging, into the snapshot."""

        async def shopify_rows() -> AsyncIterator[tuple[Any, ...]]:
            async for card in self.r.shopify.bulk_export_gift_cards(
                poll_interval=self.r.bulk_poll_interval
            ):
                yield self._shopify_row(card)

        shopify_count = await self._stream_into(
            conn, "shopify", "rc_shopify", SHOPIFY_COLUMNS, shopify_rows()
        )
        pos_count = 0
        if self.omni is not None:
            omni = self.omni

            async def pos_rows() -> AsyncIterator[tuple[Any, ...]]:
                async for card in omni.pos.iter_cards():
                    yield self._pos_row(card)

            pos_count = await self._stream_into(conn, "pos", "rc_pos", POS_COLUMNS, pos_rows())
        await self._index_snapshot(conn)
        log.info("reconcile_snapshot", shopify_cards=shopify_count, pos_cards=pos_count)

    async def _read_cards(self, conn: AsyncConnection) -> None:
        """A reconcile of named cards reads just those cards, live (at most a thousand).

        Missing links are reported, not re-linked: finding a twin takes the full listings.
        """
        shopify_ids: set[str] = set()
        pos_ids: set[str] = set()
        if self.omni is not None and not self.omni.pos.live_reads:
            await self._catch_up_projection(self.omni)
        if self.omni is not None:
            for row in (await conn.execute(text("SELECT shopify_id, pos_id FROM rc_base"))).all():
                if row.shopify_id is not None:
                    shopify_ids.add(row.shopify_id)
                if row.pos_id is not None:
                    pos_ids.add(row.pos_id)
        for row in (await conn.execute(text("SELECT shopify_id FROM rc_shadow"))).all():
            shopify_ids.add(row.shopify_id)
        shopify_rows = []
        for shopify_id in sorted(shopify_ids):
            card = await self.r.shopify.get_gift_card(shopify_id)
            if card is not None:
                shopify_rows.append(self._shopify_row(card))
        await self._copy(conn, "rc_shopify", SHOPIFY_COLUMNS, shopify_rows)
        if self.omni is not None:
            pos_rows = []
            for pos_id in sorted(pos_ids):
                pos_card = await self.omni.pos.get_card(pos_id)
                if pos_card is not None:
                    pos_rows.append(self._pos_row(pos_card))
            await self._copy(conn, "rc_pos", POS_COLUMNS, pos_rows)
        await self._index_snapshot(conn)

    async def _catch_up_projection(self, omni: OmniSync) -> None:
        """A POS read through giftsync's projection (OnSite) is as fresh as the last poll:
        apply what the till did since, as the poller would (its cursor stays where it is, so
        it still handles those changes)."""
        since = await read_cursor(self.r.sessions, pos_cursor_name(omni.pos.system))
        async for _change in omni.pos.changes_since(
            since - CURSOR_OVERLAP if since is not None else None
        ):
            pass

    async def _index_snapshot(self, conn: AsyncConnection) -> None:
        # A page read while the POS was writing can repeat a card: keep one row per id.
        for table, key in (("rc_shopify", "id"), ("rc_pos", "external_id")):
            await conn.execute(
                text(
                    f"DELETE FROM {table} a USING {table} b "  # noqa: S608 -- fixed names
                    f"WHERE a.{key} = b.{key} AND a.ctid < b.ctid"
                )
            )
            await conn.execute(text(f"CREATE UNIQUE INDEX ON {table} ({key})"))
            await conn.execute(text(f"CREATE INDEX ON {table} (serial_hash)"))
        await conn.execute(text("CREATE INDEX ON rc_shopify (note_pos_ext)"))
        # Autovacuum never analyses temporary tables; the joins below need row counts.
        for table in ("rc_shopify", "rc_pos", "rc_shadow", *(("rc_base",) if self.omni else ())):
            await conn.execute(text(f"ANALYZE {table}"))

    # --- 3. omni cards ----------------------------------------------------------------------

    async def _omni_cards(self, conn: AsyncConnection) -> None:
        """Walk the cards in id order, a batch at a time, checkpointing after each batch.

        PostgreSQL counts the cards whose balances equal their base on both sides (the vast
        majority); only the others come back to Python, for the merge to judge.
        """
        assert self.omni is not None
        done = int(self.reporter.progress.get("cards_done") or 0)
        total = int(await conn.scalar(text("SELECT count(*) FROM rc_base")) or 0) + done
        self._report("cards", done, total)
        # A plain range (no "IS NULL OR"): each batch walks the key's index from where the
        # last one stopped, instead of scanning and sorting every card.
        after = self.after or str(uuid.UUID(int=0))
        while True:
            last = await conn.scalar(
                text(
                    "SELECT card_id FROM rc_base WHERE card_id > CAST(:after AS uuid) "
                    "ORDER BY card_id OFFSET :skip LIMIT 1"
                ),
                {"after": after, "skip": self.r.batch_size - 1},
            )
            if last is None:
                last = await conn.scalar(
                    text(
                        "SELECT card_id FROM rc_base WHERE card_id > CAST(:after AS uuid) "
                        "ORDER BY card_id DESC LIMIT 1"
                    ),
                    {"after": after},
                )
                if last is None:
                    return
            window = {"after": after, "last": last, "currency": self._currency}
            counted = (await conn.execute(text(_BATCH_COUNTS), window)).one()
            self._count("checked", counted.settled)
            self._count("in_sync", counted.settled)
            rows = (await conn.execute(text(_BATCH_SUSPECTS), window)).all()
            repairs = [repair for row in rows if (repair := await self._omni_card(conn, row))]
            await self._run_bounded(repairs)
            # Every repair of the batch is committed: the cursor may pass it. A crash before
            # this line redoes the batch (repairs are idempotent; cards repaired before the
            # crash then count as pending or in sync).
            done += counted.cards
            after = self.after = str(last)
            await self._checkpoint(cards_done=done, cards_total=total)
            self._report("cards", done, total)

    async def _run_bounded(self, repairs: Sequence[Callable[[], Awaitable[None]]]) -> None:
        """Repairs of different cards in parallel: each is its own transaction under its own
        card lock, and most of its time is PostgreSQL's (commits), not ours."""
        if not repairs:
            return
        slots = asyncio.Semaphore(self.r.repair_concurrency)

        async def one(repair: Callable[[], Awaitable[None]]) -> None:
            async with slots:
                await repair()

        try:
            async with asyncio.TaskGroup() as group:
                for repair in repairs:
                    group.create_task(one(repair))
        except ExceptionGroup as failed:
            # The others were cancelled, each rolled back whole: report the cause as is.
            raise failed.exceptions[0] from None

    async def _omni_card(
        self, conn: AsyncConnection, row: Any
    ) -> Callable[[], Awaitable[None]] | None:
        """Check one card from the snapshot; returns its repair when it needs one.

        The snapshot connection is used here, one card at a time; the repairs returned never
        touch it, so they can run side by side.
        """
        assert self.omni is not None and self.pos_system is not None
        card_id: uuid.UUID = row.card_id
        if row.pending:
            self._count("pending")
            self.tally.unchecked.append(card_id)
            return None
        self._count("checked")
        if row.shopify_id is None or row.pos_id is None:
            await self._missing_link(conn, row)
            return None
        if row.s_id is None or row.p_id is None:
            return lambda: self._absent(row)
        if not row.s_enabled and not row.p_enabled and row.card_state == "deactivated":
            # Over everywhere: no money can move on it again. Merging balances the systems
            # keep after deactivation (OnSite redeems the rest, Shopify keeps it) would only
            # move the base back and forth, one ledger entry per run.
            self._count("in_sync")
            return None
        states = [
            SystemState(SHOPIFY, row.s_balance, _state(row.s_enabled), row.s_currency),
            SystemState(
                self.pos_system,
                row.p_balance,
                _state(row.p_enabled),
                self.r.settings.currency,
            ),
        ]
        plan = plan_merge(str(card_id), row.balance_minor, row.version, states)
        settled = in_sync(plan) and plan.new_base_version == row.version
        if settled and (
            row.card_state == "deactivated" or any(s.status == "enabled" for s in states)
        ):
            self._count("in_sync")
            return None
        version: int = row.version
        return lambda: self._sync(card_id, states, version)

    async def _sync(
        self,
        card_id: uuid.UUID,
        states: Sequence[SystemState] | None,
        version: int | None,
        *,
        relinked: bool = False,
    ) -> None:
        """Hand one card to omni sync, with the snapshot's states when they are still valid.

        `relinked`: a link row was just restored, a repair even if the balances agree.
        """
        assert self.omni is not None
        try:
            outcome = await sync_card(
                self.omni,
                card_id,
                states=states,
                dry_run=self.dry_run,
                run_id=None if self.dry_run else self.run_id,
                expected_version=version,
            )
        except UpstreamError as exc:
            # Only a live re-read reaches an upstream here; the card stays as it was.
            await self._finding(
                "unrepairable",
                f"card:{card_id}",
                card_id,
                {"repair": "merge", "error": mask_text(f"{type(exc).__name__}: {exc}")[:300]},
            )
            self.tally.unchecked.append(card_id)
            return
        if outcome.status == "pending":
            self._count("pending")
            self.tally.unchecked.append(card_id)
            return
        if outcome.status == "not_found":
            # Read live and found missing: omni recorded the finding (with this run's id).
            self._noted_finding(
                "missing_link", f"card:{card_id}", card_id, {"problem": "not found when re-read"}
            )
            return
        plan = outcome.plan
        assert plan is not None
        self._plan_outcome(card_id, plan, relinked=relinked)

    def _plan_outcome(self, card_id: uuid.UUID, plan: MergePlan, *, relinked: bool) -> None:
        if plan.moves or plan.deactivate or relinked:
            self._count("repaired")
            self.tally.drift_minor += sum(abs(move.amount_minor) for move in plan.moves)
        elif not plan.findings:
            self._count("in_sync")
        for finding in plan.findings:
            # sync_card recorded it (or, dry, would have): count it and list it if dry.
            self._noted_finding(finding.type, f"card:{card_id}", card_id, dict(finding.evidence))

    async def _missing_link(self, conn: AsyncConnection, row: Any) -> None:
        """A card lost a link row: re-link its twin when giftsync's own marks name exactly one."""
        assert self.pos_system is not None
        card_id: uuid.UUID = row.card_id
        missing = [
            system
            for system, external_id in ((SHOPIFY, row.shopify_id), (self.pos_system, row.pos_id))
            if external_id is None
        ]
        candidates: Sequence[Any] = ()
        if len(missing) == 1 and missing[0] == SHOPIFY:
            candidates = (
                await conn.execute(
                    text(
                        """
                        SELECT s.id AS external_id, s.last4, s.balance_minor, s.enabled,
                               s.currency, s.note_pos_ext IS NOT NULL AS imported
                        FROM rc_shopify s
                        WHERE (s.note_pos_ext = :pos_id
                               OR (CAST(:code_hash AS text) IS NOT NULL
                                   AND s.serial_hash = CAST(:code_hash AS text)))
                          AND NOT EXISTS (SELECT 1 FROM card_links l
                                          WHERE l.system = 'shopify' AND l.external_id = s.id)
                        """
                    ),
                    {"pos_id": row.pos_id, "code_hash": row.pos_code_hash},
                )
            ).all()
        elif len(missing) == 1:
            candidates = (
                await conn.execute(
                    text(
                        """
                        SELECT p.external_id, p.last4, p.balance_minor, p.enabled, p.serial_hash,
                               s.note_pos_ext IS NOT NULL AS imported
                        FROM rc_pos p
                        LEFT JOIN rc_shopify s ON s.id = :shopify_id
                        WHERE (p.external_id = s.note_pos_ext
                               OR (s.serial_hash IS NOT NULL AND p.serial_hash = s.serial_hash)
                               OR (CAST(:code_hash AS text) IS NOT NULL
                                   AND p.serial_hash = CAST(:code_hash AS text)))
                          AND NOT EXISTS (SELECT 1 FROM card_links l
                                          WHERE l.system = :pos AND l.external_id = p.external_id)
                        """
                    ),
                    {
                        "shopify_id": row.shopify_id,
                        "code_hash": row.shopify_code_hash,
                        "pos": self.pos_system,
                    },
                )
            ).all()
        evidence: dict[str, Any] = {
            "card_id": str(card_id),
            "shopify_id": row.shopify_id,
            "pos_system": self.pos_system,
            "pos_external_id": row.pos_id,
            "missing_links": missing,
            "candidates": [c.external_id for c in candidates[:5]],
        }
        if len(candidates) != 1:
            evidence["problem"] = (
                "no link row, and no unlinked card carries giftsync's mark for it"
                if not candidates
                else "no link row, and several unlinked cards could be its twin"
            )
            await self._finding("missing_link", f"card:{card_id}", card_id, evidence)
            return
        twin = candidates[0]
        log.warning(
            "reconcile_relink",
            card_id=str(card_id),
            system=missing[0],
            external_id=twin.external_id,
            dry_run=self.dry_run,
        )
        if self.dry_run:
            self._count("repaired")
            return
        if not await self._relink(card_id, missing[0], twin, row):
            # Linked by someone else meanwhile: the next run looks again.
            self.tally.unchecked.append(card_id)
            return
        await self._after_relink(card_id, missing[0], twin, row)

    async def _relink(self, card_id: uuid.UUID, system: str, twin: Any, row: Any) -> bool:
        # Sold in store: the Shopify code is the POS serial, so both links carry its hash.
        if system == SHOPIFY:
            code_hash = row.pos_code_hash if twin.imported else None
        else:
            code_hash = twin.serial_hash or (row.shopify_code_hash if twin.imported else None)
        async with transaction(self.r.sessions) as session:
            await lock_for_transaction(session, f"omni-card:{card_id}")
            inserted = await session.scalar(
                text(
                    """
                    INSERT INTO card_links (card_id, system, external_id, code_last4, code_hash,
                                            last_seen_balance_minor, last_seen_status, last_seen_at)
                    VALUES (:card, :system, :ext, :last4, :hash, :balance, :status, now())
                    ON CONFLICT DO NOTHING
                    RETURNING id
                    """
                ),
                {
                    "card": card_id,
                    "system": system,
                    "ext": twin.external_id,
                    "last4": twin.last4,
                    "hash": code_hash,
                    "balance": twin.balance_minor,
                    "status": _state(twin.enabled),
                },
            )
        return inserted is not None

    async def _after_relink(self, card_id: uuid.UUID, system: str, twin: Any, row: Any) -> None:
        """Merge the re-linked card with the snapshot (the version check still guards it)."""
        assert self.pos_system is not None
        currency = self.r.settings.currency
        shopify: SystemState | None
        pos: SystemState | None
        if system == SHOPIFY:
            shopify = SystemState(SHOPIFY, twin.balance_minor, _state(twin.enabled), twin.currency)
            pos = None
            if row.p_id is not None:
                pos = SystemState(self.pos_system, row.p_balance, _state(row.p_enabled), currency)
        else:
            pos = SystemState(self.pos_system, twin.balance_minor, _state(twin.enabled), currency)
            shopify = None
            if row.s_id is not None:
                shopify = SystemState(SHOPIFY, row.s_balance, _state(row.s_enabled), row.s_currency)
        if shopify is None or pos is None:
            await self._sync(card_id, None, None, relinked=True)
        else:
            await self._sync(card_id, [shopify, pos], row.version, relinked=True)

    async def _absent(self, row: Any) -> None:
        """A linked card is not in the snapshot: confirm live before calling it missing."""
        assert self.omni is not None and self.pos_system is not None
        card_id: uuid.UUID = row.card_id
        absent: list[tuple[str, str]] = []
        try:
            if row.s_id is None and await self.r.shopify.get_gift_card(row.shopify_id) is None:
                absent.append((SHOPIFY, row.shopify_id))
            if row.p_id is None and await self.omni.pos.get_card(row.pos_id) is None:
                absent.append((self.pos_system, row.pos_id))
        except UpstreamError as exc:
            await self._finding(
                "unrepairable",
                f"card:{card_id}",
                card_id,
                {"repair": "confirm", "error": mask_text(f"{type(exc).__name__}: {exc}")[:300]},
            )
            self.tally.unchecked.append(card_id)
            return
        if not absent:
            # The export missed it (created just before, or a page skipped): merge it live.
            await self._sync(card_id, None, None)
            return
        await self._finding(
            "missing_link",
            f"card:{card_id}",
            card_id,
            {
                "card_id": str(card_id),
                "shopify_id": row.shopify_id,
                "pos_system": self.pos_system,
                "pos_external_id": row.pos_id,
                "absent": [{"system": system, "external_id": ext} for system, ext in absent],
                "problem": "linked, but the upstream has no such card",
            },
        )

    # --- 4. shadow cards ------------------------------------------------------------------

    async def _shadow_cards(self, conn: AsyncConnection) -> None:
        checked = int(await conn.scalar(text("SELECT count(*) FROM rc_shadow WHERE NOT busy")) or 0)
        for row in (await conn.execute(text("SELECT card_id FROM rc_shadow WHERE busy"))).all():
            self.tally.unchecked.append(row.card_id)
        problems = (
            await conn.execute(
                text(
                    """
                    SELECT r.shadow_id, r.card_id, r.state, r.shopify_id, r.has_hold,
                           r.applied_amount_minor, r.vii_last4, r.settled,
                           s.id IS NOT NULL AS found, s.enabled, s.balance_minor, s.last4
                    FROM rc_shadow r
                    LEFT JOIN rc_shopify s ON s.id = r.shopify_id
                    WHERE NOT r.busy AND (
                        (r.state <> 'applied' AND s.enabled)
                        OR (r.state = 'applied' AND r.has_hold
                            AND (s.id IS NULL OR NOT s.enabled)))
                    ORDER BY r.shadow_id
                    """
                )
            )
        ).all()
        self._count("checked", checked)
        self._count("in_sync", checked - len(problems))
        for number, row in enumerate(problems, 1):
            if row.state != "applied":
                await self._orphan(row)
            else:
                await self._hold_without_card(row)
            self._report("shadow", number, len(problems))

    async def _orphan(self, row: Any) -> None:
        """Enabled in Shopify, yet the hold behind it is closed: spendable money nobody backs.

        The row left `applied` before the snapshot and nothing is in flight for it, and rows
        never return to `applied`: nothing in giftsync would ever deactivate this card.
        """
        subject = f"card:{row.card_id}"
        evidence = {
            "shadow_id": str(row.shadow_id),
            "shadow_state": row.state,
            "shopify_id": row.shopify_id,
            "shopify_last4": row.last4,
            "shopify_balance_minor": row.balance_minor,
            "applied_minor": row.applied_amount_minor,
            "vii_last4": row.vii_last4,
            "repair": "deactivate the Shopify card",
        }
        if not row.settled:
            # Its close never finished: the close job deactivates, then captures what the
            # card spent. Deactivating alone would free money the card may have spent.
            evidence["repair"] = "finish the shadow close job"
            await self._close_shadow(row, "orphan_shadow_card", subject, evidence)
            return
        await self._deactivate_orphan(subject, row.card_id, row.shopify_id, evidence)

    async def _deactivate_orphan(
        self, subject: str, card_id: uuid.UUID | None, shopify_id: str, evidence: dict[str, Any]
    ) -> None:
        if self.dry_run:
            self._would_be("orphan_shadow_card", subject, card_id, evidence)
            self._repaired_with("orphan_shadow_card")
            return
        async with transaction(self.r.sessions) as session:
            await record_finding(
                session,
                self.run_id,
                finding_type="orphan_shadow_card",
                subject=subject,
                card_id=card_id,
                evidence=evidence,
            )
            await jobs.enqueue(
                session,
                DEACTIVATE_SHADOW_JOB,
                {
                    "shopify_id": shopify_id,
                    "card_id": None if card_id is None else str(card_id),
                    "subject": subject,
                    "run_id": str(self.run_id),
                },
                # Once per Shopify card ever: deactivation is final.
                f"reconcile:deactivate:{shopify_id}",
            )
        self._repaired_with("orphan_shadow_card")

    async def _hold_without_card(self, row: Any) -> None:
        """A hold is open but its Shopify card cannot be spent (disabled) or is gone."""
        subject = f"card:{row.card_id}"
        evidence: dict[str, Any] = {
            "shadow_id": str(row.shadow_id),
            "shopify_id": row.shopify_id,
            "vii_last4": row.vii_last4,
            "applied_minor": row.applied_amount_minor,
        }
        found = bool(row.found)
        if not found:
            try:
                live = await self.r.shopify.get_gift_card(row.shopify_id)
            except UpstreamError as exc:
                await self._finding(
                    "unrepairable",
                    subject,
                    row.card_id,
                    {**evidence, "error": mask_text(f"{type(exc).__name__}: {exc}")[:300]},
                )
                self.tally.unchecked.append(row.card_id)
                return
            if live is not None and shopify_state(live).status == "enabled":
                self._count("in_sync")  # the export missed it; it is fine
                return
            found = live is not None
        if not found:
            # Nothing to deactivate, and the close job needs the card: staff decide.
            evidence["problem"] = "Shopify has no card with this id; the hold stays open"
            await self._finding("hold_without_card", subject, row.card_id, evidence)
            return
        evidence["repair"] = "release the hold through the shadow close job"
        if self.dry_run:
            self._would_be("hold_without_card", subject, row.card_id, evidence)
            self._repaired_with("hold_without_card")
            return
        await self._close_shadow(row, "hold_without_card", subject, evidence)

    async def _close_shadow(
        self, row: Any, finding_type: str, subject: str, evidence: dict[str, Any]
    ) -> None:
        """Repair through the shadow card's own close: deactivate, capture what was spent."""
        if self.dry_run:
            self._would_be(finding_type, subject, row.card_id, evidence)
            self._repaired_with(finding_type)
            return
        async with transaction(self.r.sessions) as session:
            closing = await request_close(session, row.shadow_id, "released")
            if not closing and row.state == "applied":
                # Closed meanwhile by its own flow, whose close job does the rest.
                self._count("in_sync")
                return
            if not closing:
                await jobs.enqueue(
                    session,
                    CLOSE_JOB,
                    {"shadow_id": str(row.shadow_id)},
                    f"shadow:{row.shadow_id}:close:reconcile:{self.run_id}",
                )
            await record_finding(
                session,
                self.run_id,
                finding_type=finding_type,
                subject=subject,
                card_id=row.card_id,
                evidence=evidence,
            )
        self._repaired_with(finding_type)

    # --- 5. upstream cards that giftsync made but no longer links ---------------------------

    async def _unlinked(self, conn: AsyncConnection) -> None:
        if self.omni is not None:
            await self._unlinked_shopify(conn)
            await self._unlinked_pos(conn)
        for row in (
            await conn.execute(
                text(
                    """
                    SELECT s.id, s.last4, s.shadow_ref, s.balance_minor
                    FROM rc_shopify s
                    WHERE s.shadow_ref IS NOT NULL AND s.enabled AND s.created_at < :before
                      AND NOT EXISTS (SELECT 1 FROM shadow_cards sc
                                      WHERE sc.id::text = s.shadow_ref
                                         OR sc.shopify_gift_card_id = s.id)
                      AND NOT EXISTS (SELECT 1 FROM card_links l
                                      WHERE l.system = 'shopify' AND l.external_id = s.id)
                      AND NOT EXISTS (SELECT 1 FROM jobs j
                                      WHERE j.state IN ('queued', 'running')
                                        AND j.payload->>'shadow_id' = s.shadow_ref)
                    ORDER BY s.id
                    """
                ),
                {"before": self._t0 - SHADOW_GRACE},
            )
        ).all():
            # A checkout created it and never recorded it (crashed before its commit).
            await self._deactivate_orphan(
                f"unlinked:shopify:{row.id}",
                None,
                row.id,
                {
                    "shopify_id": row.id,
                    "shopify_last4": row.last4,
                    "shopify_balance_minor": row.balance_minor,
                    "shadow_id": row.shadow_ref,
                    "problem": "a shadow card with no checkout record",
                    "repair": "deactivate the Shopify card",
                },
            )

    async def _unlinked_shopify(self, conn: AsyncConnection) -> None:
        """Shopify cards giftsync made for a POS card (its note says which), linked nowhere.

        Skipped when the POS card's own card lacks a Shopify link: phase 3 owns that one.
        """
        rows = (
            await conn.execute(
                text(
                    """
                    SELECT s.id, s.last4, s.note_pos_ext, s.balance_minor, s.enabled,
                           p.external_id IS NOT NULL AS pos_found, pl.card_id AS pos_card_id
                    FROM rc_shopify s
                    LEFT JOIN rc_pos p ON p.external_id = s.note_pos_ext
                    LEFT JOIN card_links pl ON pl.system = :pos AND pl.external_id = s.note_pos_ext
                    WHERE s.note_pos_ext IS NOT NULL
                      AND NOT EXISTS (SELECT 1 FROM card_links l
                                      WHERE l.system = 'shopify' AND l.external_id = s.id)
                      AND NOT (pl.card_id IS NOT NULL
                               AND NOT EXISTS (SELECT 1 FROM card_links o
                                               WHERE o.card_id = pl.card_id
                                                 AND o.system = 'shopify'))
                    ORDER BY s.id
                    """
                ),
                {"pos": self.pos_system},
            )
        ).all()
        for row in rows:
            await self._finding(
                "missing_link",
                f"unlinked:shopify:{row.id}",
                None,
                {
                    "shopify_id": row.id,
                    "shopify_last4": row.last4,
                    "shopify_balance_minor": row.balance_minor,
                    "shopify_status": _state(row.enabled),
                    "pos_system": self.pos_system,
                    "pos_external_id": row.note_pos_ext,
                    "pos_card_found": bool(row.pos_found),
                    "pos_linked_to": None if row.pos_card_id is None else str(row.pos_card_id),
                    "problem": "giftsync created this Shopify card for a POS card; no card links it",
                },
            )

    async def _unlinked_pos(self, conn: AsyncConnection) -> None:
        """POS cards giftsync exported from Shopify (derived serial), linked nowhere."""
        rows = (
            await conn.execute(
                text(
                    """
                    SELECT p.external_id, p.last4, p.balance_minor, p.enabled,
                           s.id AS shopify_id, sl.card_id AS shopify_card_id
                    FROM rc_pos p
                    JOIN rc_shopify s ON s.serial_hash = p.serial_hash
                    LEFT JOIN card_links sl ON sl.system = 'shopify' AND sl.external_id = s.id
                    WHERE NOT EXISTS (SELECT 1 FROM card_links l
                                      WHERE l.system = :pos AND l.external_id = p.external_id)
                      AND NOT (sl.card_id IS NOT NULL
                               AND NOT EXISTS (SELECT 1 FROM card_links o
                                               WHERE o.card_id = sl.card_id AND o.system = :pos))
                    ORDER BY p.external_id
                    """
                ),
                {"pos": self.pos_system},
            )
        ).all()
        for row in rows:
            await self._finding(
                "missing_link",
                f"unlinked:{self.pos_system}:{row.external_id}",
                None,
                {
                    "pos_system": self.pos_system,
                    "pos_external_id": row.external_id,
                    "serial_last4": row.last4,
                    "pos_balance_minor": row.balance_minor,
                    "pos_status": _state(row.enabled),
                    "shopify_id": row.shopify_id,
                    "shopify_linked_to": None
                    if row.shopify_card_id is None
                    else str(row.shopify_card_id),
                    "problem": "giftsync exported this POS card from Shopify; no card links it",
                },
            )

    # --- 6. findings this run no longer sees -------------------------------------------------

    async def _resolve(self) -> None:
        unchecked = sorted(set(self.tally.unchecked))
        async with transaction(self.r.sessions) as session:
            if unchecked:
                # Not looked at this time (moves in flight, upstream error): still open.
                await session.execute(
                    text(
                        """
                        UPDATE findings SET last_run_id = :run
                        WHERE resolved_at IS NULL AND card_id = ANY(CAST(:cards AS uuid[]))
                          AND subject LIKE 'card:%'
                        """
                    ),
                    {"run": self.run_id, "cards": unchecked},
                )
            card_types = SHADOW_FINDINGS + (OMNI_FINDINGS if self.omni is not None else ())
            resolved = await resolve_findings_not_seen(
                session,
                self.run_id,
                finding_types=card_types,
                card_ids=self.params.card_ids,
                subject_prefix="card:",
            )
            if self.full:
                unlinked_types = ("orphan_shadow_card",) + (
                    ("missing_link",) if self.omni is not None else ()
                )
                resolved += await resolve_findings_not_seen(
                    session,
                    self.run_id,
                    finding_types=unlinked_types,
                    subject_prefix="unlinked:",
                )
        if resolved:
            log.info("reconcile_findings_resolved", run_id=str(self.run_id), count=resolved)
        await self._checkpoint(resolved=resolved)

    # --- bookkeeping ----------------------------------------------------------------------------

    def _count(self, name: str, by: int = 1) -> None:
        self.reporter.count(name, by)

    def _repaired_with(self, finding_type: str) -> None:
        """A repair that is also reported: staff should know it happened."""
        self.tally.findings_by_type[finding_type] += 1
        self._count("findings")
        self._count("repaired")

    def _would_be(
        self, finding_type: str, subject: str, card_id: uuid.UUID | None, evidence: dict[str, Any]
    ) -> None:
        if len(self.tally.would_be) < FINDINGS_IN_PROGRESS:
            self.tally.would_be.append(
                {
                    "type": finding_type,
                    "subject": subject,
                    "card_id": None if card_id is None else str(card_id),
                    "evidence": evidence,
                }
            )

    def _noted_finding(
        self, finding_type: str, subject: str, card_id: uuid.UUID, evidence: dict[str, Any]
    ) -> None:
        """A finding omni sync already recorded (or, in a dry run, would have)."""
        self.tally.findings_by_type[finding_type] += 1
        self._count("findings")
        if self.dry_run:
            self._would_be(finding_type, subject, card_id, evidence)

    async def _finding(
        self,
        finding_type: str,
        subject: str,
        card_id: uuid.UUID | None,
        evidence: dict[str, Any],
    ) -> None:
        self.tally.findings_by_type[finding_type] += 1
        self._count("findings")
        if self.dry_run:
            self._would_be(finding_type, subject, card_id, evidence)
            return
        await self.reporter.finding(
            finding_type=finding_type, subject=subject, card_id=card_id, evidence=evidence
        )


# --- CLI ---------------------------------------------------------------------------------------


async def _claim_run_job(
    sessions: SessionFactory, run_id: uuid.UUID, worker_id: str, lease: timedelta
) -> jobs.ClaimedJob | None:
    """Take this run's job for ourselves unless a worker already holds it."""
    async with transaction(sessions) as session:
        row = (
            await session.execute(
                text(
                    """
                    UPDATE jobs SET state = 'running', attempts = attempts + 1,
                           locked_by = :worker, locked_until = now() + :lease, updated_at = now()
                    WHERE idempotency_key = :key
                      AND (state = 'queued' OR (state = 'running' AND locked_until < now()))
                    RETURNING id, kind, payload, idempotency_key, attempts, max_attempts
                    """
                ),
                {"worker": worker_id, "lease": lease, "key": runs.run_job_key(run_id)},
            )
        ).first()
    return None if row is None else jobs.ClaimedJob(*row)


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
    claimed = await _claim_run_job(sessions, run_id, worker_id, lease)
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


__all__ = [
    "DEACTIVATE_SHADOW_JOB",
    "PERIODIC_NAME",
    "Progress",
    "ReconcileShopify",
    "Reconciler",
    "execute_here",
    "schedule_run",
]
