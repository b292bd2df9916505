"""`giftsync reconcile` and `giftsync backfill`: progress bars and summary tables.

The flows (`app/sync/reconcile/`, `app/sync/backfill/`) report progress through callbacks;
everything drawn on the terminal is drawn here.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from app.money import format_minor
from app.runtime import Runtime
from app.sync import runs
from app.sync.backfill import BackfillFailed, BackfillProgress, BackfillReport, run_or_follow
from app.sync.reconcile import Progress as ReconcileProgress
from app.sync.reconcile import execute_here
from app.sync.runs import BackfillDirection, BackfillRequest, NoPos, backfill_plan

_RECONCILE_PHASES = {
    "shopify": "reading Shopify",
    "pos": "reading the POS",
    "cards": "checking cards",
    "shadow": "checking shadow cards",
}
_DIRECTIONS: dict[BackfillDirection, str] = {
    "to_pos": "Shopify -> POS",
    "to_shopify": "POS -> Shopify",
}


async def reconcile_command(runtime: Runtime, dry_run: bool, console: Console) -> dict[str, int]:
    """A run executed here (resumed by a worker if this process dies), then its summary."""
    if runtime.reconciler is None:
        raise RuntimeError("reconcile needs Shopify configured (SHOPIFY_SHOP_DOMAIN and a token)")
    run_id = await runs.start_reconcile(runtime.sessions, dry_run=dry_run)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as bar:
        tasks: dict[str, Any] = {}

        def on_progress(step: ReconcileProgress) -> None:
            if step.phase not in _RECONCILE_PHASES:
                return
            if step.phase not in tasks:
                tasks[step.phase] = bar.add_task(_RECONCILE_PHASES[step.phase], total=step.total)
            bar.update(tasks[step.phase], completed=step.done, total=step.total)

        counts = await execute_here(runtime.sessions, runtime.reconciler, run_id, on_progress)
    view = await runs.get_run(runtime.sessions, run_id)
    assert view is not None
    table = Table(title=f"reconcile {'(dry run) ' if dry_run else ''}{run_id}")
    table.add_column("")
    table.add_column("cards", justify="right")
    for name in ("checked", "in_sync", "repaired", "pending", "findings"):
        table.add_row(name.replace("_", " "), str(counts.get(name, 0)))
    drift = int(view.progress.get("drift_minor") or 0)
    table.add_row("drift", f"{format_minor(drift)} {runtime.settings.currency}")
    for finding_type, count in sorted((view.progress.get("findings_by_type") or {}).items()):
        table.add_row(f"  {finding_type}", str(count))
    console.print(table)
    return counts


async def backfill_command(
    runtime: Runtime, direction: BackfillRequest, console: Console
) -> dict[str, int]:
    """Start a run and run it here with a progress bar (or follow the worker running it).

    Raises NoPos or DirectionDisabled before starting anything, BackfillFailed when the run
    ends failed; any other error leaves the run to be resumed by a worker.
    """
    plan = backfill_plan(runtime.settings, direction)
    if runtime.backfill is None:
        raise NoPos("backfill needs Shopify and a POS configured")
    run_id = await runs.start_run(runtime.sessions, "backfill", plan.to_json())
    console.print(f"backfill run [bold]{run_id}[/]", highlight=False)
    for name in plan.disabled:
        console.print(
            f"[yellow]skipping {_DIRECTIONS[name]}[/]: its setting is off", highlight=False
        )
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<15}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("moved {task.fields[moved]} linked {task.fields[linked]} "),
        TextColumn("skipped {task.fields[skipped]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        tasks = {
            name: bar.add_task(_DIRECTIONS[name], total=None, moved=0, linked=0, skipped=0)
            for name in plan.directions
        }

        def show(step: BackfillProgress) -> None:
            bar.update(
                tasks[step.direction],
                completed=step.processed,
                total=step.processed if step.finished else step.total,
                moved=step.moved,
                linked=step.already_linked,
                skipped=step.skipped,
            )

        report = await run_or_follow(
            runtime.backfill,
            runtime.sessions,
            run_id,
            show,
            on_waiting=lambda: console.print(
                "another backfill is running: following this run until it ends"
            ),
        )
    print_backfill_report(console, report)
    if report.status == "failed":
        raise BackfillFailed(report.error or "the backfill failed")
    return report.counts


def print_backfill_report(console: Console, report: BackfillReport) -> None:
    """Moved, already linked and skipped (by reason) per direction."""
    summary = Table(title=f"backfill {report.run_id} ({report.status})")
    for column in ("direction", "cards", "moved", "already linked", "skipped"):
        summary.add_column(column, justify="left" if column == "direction" else "right")
    for name, state in report.passes.items():
        summary.add_row(
            _DIRECTIONS[name],
            str(state.processed),
            str(state.moved),
            str(state.already_linked),
            str(state.skipped),
        )
    for name in report.disabled:
        summary.add_row(_DIRECTIONS[name], "-", "-", "-", "-", style="dim")
    summary.add_row(
        "total",
        str(sum(state.processed for state in report.passes.values())),
        str(report.counts["moved"]),
        str(report.counts["already_linked"]),
        str(report.counts["skipped"]),
        style="bold",
    )
    console.print(summary)
    reasons = Table(title="skipped, by reason")
    reasons.add_column("direction")
    reasons.add_column("reason")
    reasons.add_column("cards", justify="right")
    for name, state in report.passes.items():
        for reason, count in sorted(state.skipped_by_reason.items(), key=lambda kv: -kv[1]):
            reasons.add_row(_DIRECTIONS[name], reason, str(count))
    if reasons.row_count:
        console.print(reasons)
    if report.disabled:
        names = ", ".join(_DIRECTIONS[name] for name in report.disabled)
        console.print("not run (setting off): " + names)
    if report.error:
        console.print(f"[bold red]error[/] {report.error}", highlight=False)
