"""What each webhook topic, each job kind and each schedule runs: the one table to read.

Every entry names the flow it belongs to (a field of the runtime: `shadow`, `pollers`, `omni`,
`reconciler`, `backfill`, `inbox`) and the function that handles it, called with that flow
first. A flow that is not configured (no POS, no Vii) simply has no handler: its topics are
acknowledged and stored, its job kinds are never enqueued. The README's map of what happens is
checked against these tables by a test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from app.alerts import Alerts
from app.settings import Settings
from app.sync import inbox, runs
from app.sync.backfill import Backfill
from app.sync.omni import moves as omni_moves
from app.sync.omni.common import DEACTIVATE_JOB, MOVE_JOB, NOTIFY_JOB, SYNC_JOB
from app.sync.omni.triggers import POS_POLLER, SHOPIFY_POLLER, OmniPollers
from app.sync.reconcile import DEACTIVATE_SHADOW_JOB, PERIODIC_NAME, Reconciler
from app.sync.shadow import close as shadow_close
from app.sync.shadow import lifecycle as shadow_lifecycle
from app.sync.shadow import orders as shadow_orders
from app.sync.shadow import vii_hold as shadow_vii
from app.worker import JobHandler, Periodic


@dataclass(frozen=True)
class On:
    """`call(flow, ...)` where `flow` is the runtime's field named `flow`."""

    flow: str
    call: Callable[..., Awaitable[None]]
    doc: str


TOPICS: Mapping[str, tuple[On, ...]] = {
    inbox.TOPIC_PAID: (
        On("shadow", shadow_orders.on_order_paid, "close the shadow cards it paid with"),
        On("pollers", OmniPollers.on_order_paid, "poll Shopify for gift cards it bought"),
    ),
    inbox.TOPIC_TRANSACTION: (
        On("shadow", shadow_orders.on_transaction, "a charge closes its shadow card"),
        On("pollers", OmniPollers.on_transaction, "merge the omni card it moved"),
    ),
    inbox.TOPIC_REFUND: (
        On("shadow", shadow_orders.on_refund, "note a refund to a shadow card"),
        On("pollers", OmniPollers.on_refund, "merge the omni card it credited"),
    ),
    inbox.TOPIC_CANCELLED: (
        On("shadow", shadow_orders.on_order_cancelled, "close the shadow cards it paid with"),
    ),
    "gift_cards/create": (On("pollers", OmniPollers.on_gift_card, "re-read that card"),),
    "gift_cards/update": (On("pollers", OmniPollers.on_gift_card, "re-read that card"),),
}

JOBS: Mapping[str, On] = {
    inbox.PROCESS_JOB: On("inbox", inbox.Inbox.process, "run the topic's handlers"),
    shadow_lifecycle.CLOSE_JOB: On("shadow", shadow_close.close_job, "settle a closed card"),
    shadow_lifecycle.RECOVER_JOB: On(
        "shadow", shadow_close.recover_job, "reverse an apply that never finished"
    ),
    shadow_vii.UNDO_JOB: On(
        "shadow", shadow_vii.undo_job, "undo a Vii write whose answer was lost"
    ),
    SYNC_JOB: On("omni", omni_moves.run_sync, "three-way merge of one omni card"),
    MOVE_JOB: On("omni", omni_moves.run_move, "one planned debit or credit on one side"),
    DEACTIVATE_JOB: On("omni", omni_moves.run_deactivate, "deactivate one side of a card"),
    NOTIFY_JOB: On("omni", omni_moves.run_notify, "Shopify emails the card's customer"),
    runs.RECONCILE_JOB: On("reconciler", Reconciler.run_job, "one reconcile run"),
    DEACTIVATE_SHADOW_JOB: On(
        "reconciler", Reconciler.run_deactivate, "deactivate an orphaned shadow card"
    ),
    runs.BACKFILL_JOB: On("backfill", Backfill.run_job, "one backfill run"),
}


@dataclass(frozen=True)
class Every:
    name: str
    interval: Callable[[Settings], timedelta]
    run: On


def _poll_interval(settings: Settings) -> timedelta:
    return max(settings.poll_interval, timedelta(seconds=1))


def _reconcile_look(settings: Settings) -> timedelta:
    """Look often, start rarely: the runs table decides when RECONCILE_INTERVAL has passed."""
    return min(max(settings.reconcile_interval / 10, timedelta(seconds=1)), timedelta(minutes=1))


SCHEDULES: tuple[Every, ...] = (
    Every(
        "shadow-expiry",
        lambda _: timedelta(seconds=30),
        On("shadow", shadow_close.expire_all, "close shadow cards past their TTL"),
    ),
    Every(POS_POLLER, _poll_interval, On("pollers", OmniPollers.run_pos_poll, "POS changes")),
    Every(
        SHOPIFY_POLLER,
        _poll_interval,
        On("pollers", OmniPollers.run_shopify_poll, "Shopify gift card changes"),
    ),
    Every(
        PERIODIC_NAME,
        _reconcile_look,
        On("reconciler", Reconciler.schedule, "start a reconcile when one is due"),
    ),
    Every(
        "alert-digest",
        lambda s: min(s.alert_interval, timedelta(minutes=1)),
        On("alerts", Alerts.run, "post new findings and dead jobs, one digest per ALERT_INTERVAL"),
    ),
)


def _bound(flows: Any, on: On) -> Callable[..., Awaitable[None]] | None:
    flow = getattr(flows, on.flow)
    return None if flow is None else partial(on.call, flow)


def job_handlers(flows: Any) -> dict[str, JobHandler]:
    bound = {kind: _bound(flows, on) for kind, on in JOBS.items()}
    return {kind: handler for kind, handler in bound.items() if handler is not None}


def topic_handlers(flows: Any) -> dict[str, tuple[inbox.TopicHandler, ...]]:
    table: dict[str, tuple[inbox.TopicHandler, ...]] = {}
    for topic, entries in TOPICS.items():
        handlers = tuple(h for h in (_bound(flows, on) for on in entries) if h is not None)
        if handlers:
            table[topic] = handlers
    return table


def schedules(flows: Any, settings: Settings) -> list[Periodic]:
    found: list[Periodic] = []
    for every in SCHEDULES:
        handler = _bound(flows, every.run)
        if handler is not None:
            found.append(Periodic(every.name, every.interval(settings), handler))
    return found


def describe() -> str:
    """The README's map of what each topic, job and schedule does (a test keeps them equal)."""
    lines = ["| webhook topic | what happens |", "|---|---|"]
    for topic, entries in TOPICS.items():
        lines.append(f"| `{topic}` | {'; '.join(f'{on.flow}: {on.doc}' for on in entries)} |")
    lines += ["", "| job kind | what it does |", "|---|---|"]
    lines += [f"| `{kind}` | {on.flow}: {on.doc} |" for kind, on in JOBS.items()]
    lines += ["", "| schedule | what it does |", "|---|---|"]
    lines += [f"| `{e.name}` | {e.run.flow}: {e.run.doc} |" for e in SCHEDULES]
    return "\n".join(lines)
