"""`giftsync pos check`: the POS set-up read back from the POS, one row per check (DESIGN 5).

Exits 1 when an `error` check fails (the same checks that make `/readyz` answer 503 and keep
POS writes from being sent), 0 otherwise; warnings are shown and do not fail.
"""

from __future__ import annotations

import asyncio

import typer
from rich.table import Table

from app.cli_common import console, settings_or_exit

pos = typer.Typer(help="The point of sale giftsync writes to.", no_args_is_help=True)


@pos.command("check")
def pos_check() -> None:
    """Read the POS settings back from the POS and name each problem."""
    from app.runtime import build_runtime
    from app.settings import PosKind
    from app.sync.pos.setup import failed_errors, pos_setup_checks

    settings = settings_or_exit()
    if settings.pos_kind is PosKind.NONE:
        console.print("POS_KIND is none: there is no POS to check.")
        raise typer.Exit(0)

    async def main() -> dict[str, dict[str, object]]:
        runtime = await build_runtime(settings)
        try:
            client = runtime.clients.pos if runtime.clients is not None else None
            return await pos_setup_checks(runtime.settings, client)
        finally:
            await runtime.close()

    checks = asyncio.run(main())
    table = Table(title=f"POS set-up ({settings.pos_kind.value})")
    for column in ("check", "result", "severity", "setting", "value", "detail"):
        table.add_column(column)
    for name, check in checks.items():
        result = "[green]ok[/]" if check["ok"] else (
            "[red]FAIL[/]" if check["severity"] == "error" else "[yellow]WARN[/]"
        )  # fmt: skip
        table.add_row(
            name,
            result,
            str(check["severity"]),
            str(check.get("setting") or ""),
            str(check.get("value") or ""),
            str(check.get("detail") or ""),
        )
    console.print(table)
    failed = failed_errors(checks)
    if failed:
        console.print(f"[bold red]{len(failed)} error(s)[/]: {', '.join(failed)}")
        raise typer.Exit(1)
