"""`giftsync cards show ID` through typer's CliRunner against the test database."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner, Result

from app.cli import cli


def _invoke(database_url: str, *args: str) -> Result:
    env = {
        "DATABASE_URL": database_url,
        "SANDBOX": "true",
        "LOG_JSON": "true",
        "LOG_LEVEL": "WARNING",
        # Wide enough that rich never wraps an id across lines.
        "COLUMNS": "220",
    }
    return CliRunner().invoke(cli, list(args), env=env)


async def _run(database_url: str, *args: str) -> Result:
    # The command runs its own event loop (asyncio.run), so it cannot share the test's.
    return await asyncio.to_thread(_invoke, database_url, *args)


async def test_cards_show_prints_card_links_and_ledger(
    engine: AsyncEngine, database_url: str, clean_env: pytest.MonkeyPatch
) -> None:
    card_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO gift_cards (id, kind, currency) VALUES (:id, 'omni', 'AUD')"),
            {"id": card_id},
        )
        await connection.execute(
            text(
                "INSERT INTO card_links (card_id, system, external_id, code_last4, code_hash, "
                "last_seen_balance_minor, last_seen_status, last_seen_at) VALUES "
                "(:id, 'shopify', 'gid://shopify/GiftCard/42', 'ab12', :hash, 2500, 'enabled', "
                "now()), (:id, 'lightspeed', '4411', 'AB12', :hash, 1875, 'enabled', now())"
            ),
            {"id": card_id, "hash": "e" * 64},
        )
        await connection.execute(
            text("INSERT INTO sync_base (card_id, balance_minor, version) VALUES (:id, 2500, 4)"),
            {"id": card_id},
        )
        await connection.execute(
            text(
                "INSERT INTO ledger (card_id, system, amount_minor, idempotency_key, cause) VALUES "
                "(:id, 'lightspeed', -625, 'sale:991', 'pos_sale')"
            ),
            {"id": card_id},
        )

    result = await _run(database_url, "cards", "show", str(card_id))

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert str(card_id) in out
    assert "omni" in out
    assert "25.00 AUD (v4)" in out
    for expected in ("gid://shopify/GiftCard/42", "25.00 AUD", "4411", "18.75 AUD", "AB12"):
        assert expected in out
    assert "-6.25 AUD" in out
    assert "sale:991" in out
    assert "e" * 64 not in out


async def test_cards_show_unknown_card_exits_1(
    engine: AsyncEngine, database_url: str, clean_env: pytest.MonkeyPatch
) -> None:
    missing = uuid.uuid4()
    result = await _run(database_url, "cards", "show", str(missing))
    assert result.exit_code == 1
    assert "no card" in result.stderr
    assert str(missing) in result.stderr


async def test_cards_show_bad_id_exits_2(database_url: str, clean_env: pytest.MonkeyPatch) -> None:
    result = await _run(database_url, "cards", "show", "not-a-uuid")
    assert result.exit_code == 2
    assert "not a card id" in result.stderr
