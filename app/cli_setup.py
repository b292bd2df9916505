"""`giftsync keys`, `giftsync operators add`, `giftsync shopify app-config`: setting up."""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from app.cli_common import settings_or_exit

out = Console()
err = Console(stderr=True)

operators = typer.Typer(help="Operator tokens for /internal and the console.", no_args_is_help=True)
shopify = typer.Typer(
    help="The Shopify app (shopify/) and its subscriptions.", no_args_is_help=True
)

_OPERATOR_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def keys() -> None:
    """Print fresh ADMIN_TOKEN, CARD_HASH_KEY and PIN_ENCRYPTION_KEY lines for `.env`."""
    from app.keys import generate_keys

    for name, value in generate_keys().items():
        out.print(f"{name}={value}", highlight=False, soft_wrap=True)


@operators.command("add")
def operators_add(
    name: Annotated[str, typer.Argument(help="Who this token is for (a-z, 0-9, . _ -).")],
) -> None:
    """Make a named operator token; it is printed once and only its hash is stored."""
    from app.db import operators as operators_db
    from app.db.engine import create_engine, resolve_database_url, session_factory

    if not _OPERATOR_NAME.fullmatch(name) or name == "admin":
        err.print("[bold red]bad name[/] use a-z, 0-9, '.', '_' or '-' (and not 'admin')")
        raise typer.Exit(2)
    settings = settings_or_exit()
    token = secrets.token_urlsafe(32)

    async def main() -> None:
        url = await asyncio.to_thread(resolve_database_url, settings)
        engine = create_engine(url, pool_size=1)
        try:
            async with session_factory(engine)() as session, session.begin():
                await operators_db.add(session, name, token)
        finally:
            await engine.dispose()

    try:
        asyncio.run(main())
    except Exception as exc:  # a duplicate name is the usual cause
        err.print(f"[bold red]not added[/] {type(exc).__name__}: is '{name}' taken?")
        raise typer.Exit(1) from None
    err.print(f"Operator [bold]{name}[/] added. Its token (shown once, keep it safe):")
    out.print(token, highlight=False, soft_wrap=True)


@shopify.command("app-config")
def shopify_app_config(
    path: Annotated[Path, typer.Option(help="Where to write it.")] = Path(
        "shopify/shopify.app.toml"
    ),
) -> None:
    """Write shopify.app.toml from SHOPIFY_CLIENT_ID and PUBLIC_URL, for `shopify app deploy`."""
    from app.shopify_app_config import render_app_toml

    settings = settings_or_exit()
    missing = [
        name
        for name, value in (
            ("SHOPIFY_CLIENT_ID", settings.shopify_client_id),
            ("PUBLIC_URL", settings.public_url),
        )
        if not value
    ]
    if missing:
        err.print(f"[bold red]config error[/] {', '.join(missing)}: needed for the app config")
        raise typer.Exit(2)
    try:
        text = render_app_toml(
            str(settings.shopify_client_id), str(settings.public_url), settings.shopify_api_version
        )
    except ValueError as exc:
        err.print(f"[bold red]config error[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    path.write_text(text)
    err.print(f"wrote {path}; next: `shopify app deploy` in {path.parent}")
