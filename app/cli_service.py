"""In sandbox mode the simulators live inside the running service (`make run`): a CLI run
started in another process would meet fresh, empty simulators and report drift that does not
exist. So `giftsync reconcile` and `giftsync backfill` ask the running service to do the run
(through `/internal`, with the sandbox's admin token) and follow it, or refuse clearly.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from app.settings import Settings

SERVICE_URL_ENV = "GIFTSYNC_URL"
DEFAULT_SERVICE_URL = "http://127.0.0.1:8000"
POLL_S = 1.0


class NoService(Exception):
    """No running sandbox service to run it in."""


def _admin_token(settings: Settings) -> str:
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    path = Path(settings.data_dir) / "sandbox-secrets.json"
    try:
        return str(json.loads(path.read_text())["admin_token"])
    except (OSError, ValueError, KeyError):
        raise NoService(
            f"no admin token: set ADMIN_TOKEN or start `make run` once ({path})"
        ) from None


async def run_in_service(
    settings: Settings, path: str, body: dict[str, Any], console: Console
) -> dict[str, Any]:
    """Start a run in the running service and follow it to its end; its final view."""
    base = os.environ.get(SERVICE_URL_ENV, DEFAULT_SERVICE_URL)
    headers = {"Authorization": f"Bearer {_admin_token(settings)}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
        try:
            started = await http.post(path, json=body)
        except httpx.TransportError:
            raise NoService(
                f"sandbox mode: the simulators live inside the running service, and none "
                f"answers at {base}. Start it with `make run` (or set {SERVICE_URL_ENV})."
            ) from None
        if started.status_code != 202:
            raise NoService(f"the service refused: {started.status_code} {started.text[:300]}")
        run_id = started.json()["runId"]
        console.print(f"run [bold]{run_id}[/] started in the service at {base}", highlight=False)
        while True:
            view = (await http.get(f"/internal/runs/{run_id}")).json()
            if view["status"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(POLL_S)
    table = Table(title=f"{view.get('kind', 'run')} {run_id} ({view['status']})")
    table.add_column("")
    table.add_column("cards", justify="right")
    for name, count in (view.get("counts") or {}).items():
        table.add_row(name.replace("_", " "), str(count))
    console.print(table)
    return dict(view)
