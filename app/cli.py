"""`giftsync`: the command line (typer + rich)."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Annotated

import typer
from rich.console import Console

from app.logging import configure_logging
from app.settings import Settings, SettingsError, load_settings

cli = typer.Typer(
    help="giftsync: one gift card across Shopify, Lightspeed and Vii.", no_args_is_help=True
)
console = Console(stderr=True)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:
        for problem in exc.problems:
            console.print(f"[bold red]config error[/] {problem}", highlight=False)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, json=settings.log_json)
    return settings


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    worker: Annotated[bool, typer.Option(help="Run the worker in this process too.")] = True,
) -> None:
    """Run the HTTP API and (by default) the worker."""
    import uvicorn

    from app.main import create_app

    _settings()
    uvicorn.run(create_app(run_worker=worker), host=host, port=port, log_config=None)


@cli.command()
def worker() -> None:
    """Run only the worker: jobs, webhook inbox, pollers, expiry, scheduled reconcile."""
    from app.runtime import build_runtime

    settings = _settings()

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

    settings = _settings()

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

    settings = _settings()
    asyncio.run(run_forever(settings))


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
