"""What every `giftsync` command shares: the terminal and the settings, or a clear refusal."""

from __future__ import annotations

import typer
from rich.console import Console

from app.logging import configure_logging
from app.settings import Settings, SettingsError, load_settings

console = Console(stderr=True)


def settings_or_exit() -> Settings:
    """The settings; or one line per problem, naming the setting, and exit code 2."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        for problem in exc.problems:
            console.print(f"[bold red]config error[/] {problem}", highlight=False)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, json=settings.log_json)
    return settings
