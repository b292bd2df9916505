"""The sandbox across a restart: simulators and database stay in step (issue: a restart found
the database's links to simulator cards while the simulators started empty, and the first
checkout answered 500 and left a Vii hold behind)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.clients.factory import build_clients
from app.db.engine import SessionFactory
from app.main import create_app
from app.runtime import assemble
from app.sandbox.runner import point_settings_at, sandbox_defaults, start_sandbox
from app.settings import PosKind, Settings
from tests.conftest import make_settings

CARD, PIN = "6280002345678901", "2345"


async def checkout_once(
    settings: Settings, engine: AsyncEngine, sessions: SessionFactory, state: Path, token: str
) -> tuple[httpx.Response, dict[str, Decimal]]:
    sandbox = await start_sandbox(settings, state_path=state)
    if not sandbox.restored:
        sandbox.simulators["vii"].seed_demo()
    pointed = point_settings_at(settings, sandbox)
    runtime = assemble(
        pointed, "unused", engine, sessions, build_clients(pointed, sessions), sandbox
    )
    try:
        transport = httpx.ASGITransport(app=create_app(runtime, run_worker=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as http:
            answer = await http.post(
                "/check-balance",
                json={
                    "viiCardNumber": CARD,
                    "viiCardPin": PIN,
                    "cartTotal": "30.00",
                    "checkoutToken": token,
                },
            )
        holds = dict(sandbox.simulators["vii"].open_holds(CARD))
    finally:
        if runtime.clients is not None:
            await runtime.clients.aclose()
        await sandbox.stop()  # what Ctrl-C does: the simulators' state is saved
    return answer, holds


async def test_a_checkout_after_a_restart_is_no_500_and_leaves_no_orphan_hold(
    engine: AsyncEngine, sessions: SessionFactory, tmp_path: Path
) -> None:
    state = tmp_path / "sandbox-simulators.pickle"
    settings = make_settings()
    first, holds = await checkout_once(settings, engine, sessions, state, "before-restart")
    assert first.status_code == 200, first.text
    assert list(holds.values()) == [Decimal("30.00")]
    second, holds = await checkout_once(settings, engine, sessions, state, "after-restart")
    assert second.status_code == 200, second.text
    # Both checkouts' holds, and nothing else: the first survived the restart with its card.
    assert sorted(holds.values()) == [Decimal("30.00"), Decimal("30.00")]
    async with engine.connect() as connection:
        states = (await connection.execute(text("SELECT state FROM shadow_cards"))).scalars()
        assert sorted(states) == ["applied", "applied"]


def test_the_sandbox_shows_every_flow_unless_told_otherwise() -> None:
    shown = sandbox_defaults(make_settings())
    assert shown.pos_kind is PosKind.RETAIL
    assert shown.create_update_shopify_gift_cards and shown.download_shopify_gift_cards
    kept = sandbox_defaults(make_settings(pos_kind="none", download_shopify_gift_cards=False))
    assert kept.pos_kind is PosKind.NONE and not kept.download_shopify_gift_cards


@pytest.mark.parametrize(
    "command", [["reconcile", "--dry-run"], ["backfill", "--direction", "both"]]
)
def test_cli_runs_in_sandbox_mode_refuse_clearly_without_the_service(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, command: list[str]
) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    clean_env.setenv("GIFTSYNC_URL", "http://127.0.0.1:9")  # nothing listens there
    clean_env.setenv("DATA_DIR", str(tmp_path))
    clean_env.setenv("ADMIN_TOKEN", "S3cure-operator-token-for-tests-0123456789abc")
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 2
    assert "make run" in result.output
