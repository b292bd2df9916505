"""`giftsync`: the command line (typer + rich)."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from app import cli_pos, cli_setup, cli_shopify  # noqa: F401 - cli_shopify adds to `shopify`
from app.cli_common import console, settings_or_exit
from app.settings import Settings

if TYPE_CHECKING:
    from app.sync.lookup import CardDetail

cli = typer.Typer(
    help="giftsync: one gift card across Shopify, Lightspeed and Vii.", no_args_is_help=True
)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    worker: Annotated[bool, typer.Option(help="Run the worker in this process too.")] = True,
) -> None:
    """Run the HTTP API and (by default) the worker."""
    import uvicorn

    from app.main import create_app

    settings_or_exit()
    # proxy_headers=False: who the client is (PIN limits) is decided by TRUSTED_PROXIES alone
    # (app/routers/client.py), never by uvicorn trusting X-Forwarded-For from localhost.
    uvicorn.run(
        create_app(run_worker=worker),
        host=host,
        port=port,
        log_config=None,
        proxy_headers=False,
    )


@cli.command()
def worker() -> None:
    """Run only the worker: jobs, webhook inbox, pollers, expiry, scheduled reconcile."""
    from app.runtime import build_runtime

    settings = settings_or_exit()

    async def main() -> None:
        runtime = await build_runtime(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await runtime.start_worker()
        await stop.wait()
        await runtime.close()

    asyncio.run(main())


@cli.command()
def migrate() -> None:
    """Upgrade the database schema to the latest revision."""
    from app.db.engine import create_engine, resolve_database_url
    from app.db.migrate import current_revision, upgrade_to_head

    settings = settings_or_exit()

    async def main() -> str | None:
        url = resolve_database_url(settings)
        engine = create_engine(url, pool_size=1)
        try:
            await upgrade_to_head(engine, url)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    revision = asyncio.run(main())
    console.print(f"[green]database at revision {revision}[/]")


@cli.command()
def sandbox() -> None:
    """Run the upstream simulators alone."""
    from app.sandbox.runner import run_forever

    settings = settings_or_exit()
    asyncio.run(run_forever(settings))


class Direction(StrEnum):
    TO_POS = "to_pos"
    TO_SHOPIFY = "to_shopify"
    BOTH = "both"


@cli.command()
def backfill(
    direction: Annotated[
        Direction, typer.Option(help="to_pos: Shopify cards to the POS; to_shopify: the reverse.")
    ],
) -> None:
    """Move every existing card across (resumable); ends with a report of what was skipped."""
    from app.cli_runs import backfill_command
    from app.runtime import build_runtime
    from app.sync.backfill import BackfillFailed
    from app.sync.runs import DirectionDisabled, NoPos

    settings = settings_or_exit()
    if settings.sandbox_enabled:
        _in_service(settings, "/internal/backfill", {"direction": direction.value})
        return

    async def main() -> None:
        runtime = await build_runtime(settings)
        try:
            await backfill_command(runtime, direction.value, console)
        finally:
            await runtime.close()

    try:
        asyncio.run(main())
    except (NoPos, DirectionDisabled) as exc:
        console.print(f"[bold red]cannot backfill[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except BackfillFailed as exc:
        console.print(f"[bold red]backfill failed[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


@cli.command()
def reconcile(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Compute the same plan and change nothing.")
    ] = False,
) -> None:
    """Compare every card across systems, repair drift by the three-way merge, report the rest."""
    from app.cli_runs import reconcile_command
    from app.runtime import build_runtime

    settings = settings_or_exit()
    if settings.sandbox_enabled:
        _in_service(settings, "/internal/reconcile", {"dryRun": dry_run})
        return

    async def main() -> None:
        runtime = await build_runtime(settings)
        try:
            await reconcile_command(runtime, dry_run, console)
        finally:
            await runtime.close()

    try:
        asyncio.run(main())
    except RuntimeError as exc:
        console.print(f"[bold red]cannot reconcile[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _in_service(settings: Settings, path: str, body: dict[str, Any]) -> None:
    """Sandbox mode: the run happens in the running service, whose simulators hold the data."""
    from app.cli_service import NoService, run_in_service

    try:
        view = asyncio.run(run_in_service(settings, path, body, console))
    except NoService as exc:
        console.print(f"[bold red]cannot run here[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if view["status"] == "failed":
        raise typer.Exit(1)


cli.command()(cli_setup.keys)
cli.add_typer(cli_setup.operators, name="operators")
cli.add_typer(cli_setup.shopify, name="shopify")
cli.add_typer(cli_pos.pos, name="pos")

cards = typer.Typer(help="Look at gift cards as giftsync holds them.", no_args_is_help=True)
cli.add_typer(cards, name="cards")


@cards.command("show")
def cards_show(
    card_id: Annotated[str, typer.Argument(metavar="ID", help="The giftsync card id (a UUID).")],
) -> None:
    """One card: what each system last reported, the agreed base, and its ledger."""
    import uuid

    from app.db.engine import create_engine, resolve_database_url, session_factory
    from app.sync.lookup import card_detail

    try:
        wanted = uuid.UUID(card_id)
    except ValueError:
        console.print(f"[bold red]not a card id[/] {card_id!r}: expected a UUID", highlight=False)
        raise typer.Exit(2) from None
    settings = settings_or_exit()

    async def main() -> CardDetail | None:
        # Only the database is needed: no simulators, clients or worker.
        url = await asyncio.to_thread(resolve_database_url, settings)
        engine = create_engine(url, pool_size=1)
        try:
            return await card_detail(session_factory(engine), wanted)
        finally:
            await engine.dispose()

    card = asyncio.run(main())
    if card is None:
        console.print(f"[bold red]no card[/] {wanted}", highlight=False)
        raise typer.Exit(1)
    _print_card(card)


def _print_card(card: CardDetail) -> None:
    from rich.table import Table

    from app.money import format_minor

    def money(minor: int | None) -> str:
        return "-" if minor is None else f"{format_minor(minor)} {card.currency}"

    def when(moment: datetime | None) -> str:
        return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    out = Console()
    summary = Table(title="card", show_header=False)
    summary.add_column("field", style="bold")
    summary.add_column("value", no_wrap=True)
    summary.add_row("id", str(card.id))
    summary.add_row("kind", card.kind)
    summary.add_row("state", card.state)
    summary.add_row("currency", card.currency)
    if card.sync_base is not None:
        summary.add_row(
            "agreed balance", f"{money(card.sync_base.balance_minor)} (v{card.sync_base.version})"
        )
    else:
        summary.add_row("agreed balance", "- (never agreed)")
    if card.shadow is not None:
        summary.add_row(
            "vii shadow",
            f"{card.shadow.state}, Vii ••••{card.shadow.vii_last4}, "
            f"hold {money(card.shadow.hold_amount_minor)}, "
            f"applied {money(card.shadow.applied_amount_minor)}, "
            f"captured {money(card.shadow.captured_amount_minor)}",
        )
    out.print(summary)

    links = Table(title="balance in each system (as last seen)")
    for column in ("system", "external id", "last 4", "balance", "status", "seen at"):
        links.add_column(column, justify="right" if column == "balance" else "left")
    for link in card.links:
        links.add_row(
            link.system,
            link.external_id,
            link.code_last4 or "-",
            money(link.last_seen_balance_minor),
            link.last_seen_status or "-",
            when(link.last_seen_at),
        )
    out.print(links)

    ledger = Table(title=f"ledger (newest first, {len(card.ledger)} shown)")
    for column in ("at", "system", "amount", "cause", "key"):
        ledger.add_column(column, justify="right" if column == "amount" else "left")
    for entry in card.ledger:
        ledger.add_row(
            when(entry.created_at),
            entry.system,
            money(entry.amount_minor),
            entry.cause,
            entry.idempotency_key,
        )
    out.print(ledger)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
