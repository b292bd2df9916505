"""`giftsync shopify webhooks`: the shop-scoped webhook subscriptions of a legacy app.

Registered on the `giftsync shopify` group of `cli_setup` by being imported (`app.cli` does).
A legacy admin-created app (SHOPIFY_ADMIN_TOKEN, no TOML) has only the subscriptions made through
the API: this lists them, creates what is missing for `{PUBLIC_URL}/webhooks/shopify`, removes
our stale ones and shows what it did. A Dev Dashboard app (client credentials) declares app-scoped
subscriptions in `shopify/shopify.app.toml`, which the API neither lists nor should change.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import httpx
import typer
from rich.table import Table

from app.cli_setup import err, out, shopify
from app.logging import configure_logging
from app.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from app.clients.shopify.webhooks import SubscriptionAction

_STYLE = {
    "kept": "green",
    "created": "bold green",
    "removed": "yellow",
    "missing": "bold red",
    "stale": "yellow",
}


def _settings() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:
        for problem in exc.problems:
            err.print(f"[bold red]config error[/] {problem}", highlight=False)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, json=settings.log_json)
    return settings


def _transport() -> httpx.AsyncBaseTransport | None:
    """httpx's own transport; tests put the simulator here."""
    return None


async def run_webhooks(
    settings: Settings, *, apply: bool, transport: httpx.AsyncBaseTransport | None = None
) -> list[SubscriptionAction]:
    from app.clients.shopify import ShopifyClient, sync_subscriptions

    assert settings.public_url is not None
    client = ShopifyClient.from_settings(settings, transport=transport)
    try:
        return await sync_subscriptions(client, settings.public_url, apply=apply)
    finally:
        await client.aclose()


def actions_table(actions: list[SubscriptionAction]) -> Table:
    table = Table(title="Shopify webhook subscriptions (shop-scoped)")
    for column in ("action", "topic", "address", "id"):
        table.add_column(column)
    for action in actions:
        style = _STYLE.get(action.action, "")
        table.add_row(
            f"[{style}]{action.action}[/]" if style else action.action,
            action.topic,
            action.uri,
            action.id or "",
        )
    return table


@shopify.command("webhooks")
def shopify_webhooks(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list and compare; change nothing.")
    ] = False,
) -> None:
    """List the webhook subscriptions; create the missing, remove our stale ones (legacy app)."""
    settings = _settings()
    if settings.shopify_admin_token is None:
        if settings.shopify_client_id:
            err.print(
                "Dev Dashboard app (client credentials): its webhook subscriptions are app-scoped, "
                "declared in shopify/shopify.app.toml. Write it with `giftsync shopify app-config` "
                "and deploy it with `shopify app deploy`; nothing to do here.",
                highlight=False,
            )
            return
        err.print("[bold red]config error[/] SHOPIFY_ADMIN_TOKEN: needed for shop-scoped webhooks")
        raise typer.Exit(2)
    if not settings.public_url:
        err.print("[bold red]config error[/] PUBLIC_URL: needed for the webhook address")
        raise typer.Exit(2)
    try:
        actions = asyncio.run(run_webhooks(settings, apply=not dry_run, transport=_transport()))
    except Exception as exc:  # an upstream refusal or outage: say which, never a token
        err.print(f"[bold red]failed[/] {type(exc).__name__}: {exc}", highlight=False)
        raise typer.Exit(1) from None
    out.print(actions_table(actions))
    changed = sum(a.action in ("created", "removed") for a in actions)
    pending = sum(a.action in ("missing", "stale") for a in actions)
    if dry_run and pending:
        err.print(f"{pending} to change; run without --dry-run to apply")
        raise typer.Exit(1)
    err.print(f"{changed} changed; subscriptions match {settings.public_url}/webhooks/shopify")
