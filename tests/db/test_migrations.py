from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text

from app.db.engine import create_engine
from app.db.migrate import alembic_config, current_revision, head_revision, upgrade_to_head
from tests.conftest import _recreate_database


async def _tables(url: str) -> set[str]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
            return {row[0] for row in rows}
    finally:
        await engine.dispose()


async def test_upgrade_head_then_downgrade_base_on_an_empty_database(server_url: str) -> None:
    url = await _recreate_database(server_url, f"giftsync_migrations_probe_{os.getpid()}")
    engine = create_engine(url, pool_size=1)
    try:
        await upgrade_to_head(engine, url)
        assert await current_revision(engine) == head_revision(url)
        tables = await _tables(url)
        assert {
            "gift_cards",
            "card_links",
            "ledger",
            "sync_base",
            "shadow_cards",
            "webhook_inbox",
            "jobs",
            "sync_cursors",
            "oauth_tokens",
            "runs",
            "findings",
            "pin_failures",
            "worker_heartbeats",
        } <= tables
        await upgrade_to_head(engine, url)  # a second upgrade is a no-op
        await asyncio.to_thread(command.downgrade, alembic_config(url), "base")
        assert await _tables(url) == {"alembic_version"}
        await upgrade_to_head(engine, url)
        assert await current_revision(engine) == head_revision(url)
    finally:
        await engine.dispose()


async def test_two_replicas_migrating_at_once_take_turns(server_url: str) -> None:
    url = await _recreate_database(server_url, f"giftsync_migrations_race_{os.getpid()}")
    engines = [create_engine(url, pool_size=1) for _ in range(2)]
    try:
        await asyncio.gather(*(upgrade_to_head(e, url) for e in engines))
        assert await current_revision(engines[0]) == head_revision(url)
    finally:
        for engine in engines:
            await engine.dispose()


async def test_pin_can_only_be_stored_while_the_hold_is_open(engine) -> None:  # type: ignore[no-untyped-def]
    """`pin_only_until_settled`: a closed card keeps its PIN until capture and cancel are
    confirmed (the close needs it to capture); once `settled_at` is set the PIN must be gone."""
    import pytest
    from sqlalchemy.exc import IntegrityError

    insert = text(
        "INSERT INTO shadow_cards (id, card_id, checkout_token, vii_card_hash, vii_last4, "
        "pin_ciphertext, state, expires_at, settled_at) VALUES (:id, :c, 't', 'h', '7890', "
        ":pin, :state, now(), :settled) RETURNING id"
    )

    async def card() -> object:
        async with engine.begin() as connection:
            return await connection.scalar(
                text(
                    "INSERT INTO gift_cards (id, kind, currency) "
                    "VALUES (gen_random_uuid(), 'vii_shadow', 'AUD') RETURNING id"
                )
            )

    def row(card_id: object, *, pin: bytes | None, state: str, settled: bool) -> dict[str, object]:
        return {
            "id": uuid.uuid4(),
            "c": card_id,
            "pin": pin,
            "state": state,
            "settled": datetime.now(UTC) if settled else None,
        }

    # Closed but not settled yet: the close still needs the PIN to capture.
    async with engine.begin() as connection:
        closed = await connection.scalar(
            insert, row(await card(), pin=b"\x00", state="captured", settled=False)
        )
    # Settled with the PIN still there: refused.
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(
                insert, row(await card(), pin=b"\x00", state="captured", settled=True)
            )
    # Settling the closed card without erasing its PIN: refused; erasing it with it: fine.
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE shadow_cards SET settled_at = now() WHERE id = :id"), {"id": closed}
            )
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE shadow_cards SET settled_at = now(), pin_ciphertext = NULL WHERE id = :id"
            ),
            {"id": closed},
        )
        erased = await connection.scalar(
            text("SELECT pin_ciphertext IS NULL FROM shadow_cards WHERE id = :id"), {"id": closed}
        )
    assert erased is True
    # An abandoned intent is settled and PIN-less like any closed card.
    async with engine.begin() as connection:
        await connection.execute(
            insert, row(await card(), pin=None, state="abandoned", settled=True)
        )
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(
                insert, row(await card(), pin=b"\x00", state="abandoned", settled=True)
            )
    # States outside the design are refused.
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(
                insert, row(await card(), pin=None, state="settled", settled=False)
            )
