"""Run alembic from code, serialised across replicas by an advisory lock."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.locks import lock_key


def _project_root() -> Path:
    """The checkout in development; the working directory when installed (Docker image)."""
    source = Path(__file__).resolve().parents[2]
    return source if (source / "alembic.ini").exists() else Path.cwd()


_ROOT = _project_root()


def alembic_config(url: str) -> Config:
    config = Config(str(_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(_ROOT / "migrations"))
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    return config


def head_revision(url: str = "") -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        exists = await connection.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not exists:
            return None
        revision: str | None = await connection.scalar(
            text("SELECT version_num FROM alembic_version")
        )
        return revision


async def upgrade_to_head(engine: AsyncEngine, url: str) -> None:
    """Upgrade while holding a session advisory lock so two starting replicas take turns."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key("migrate")})
        try:
            # alembic's env.py runs its own event loop, so it goes to a thread.
            await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
        finally:
            await connection.execute(
                text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key("migrate")}
            )
