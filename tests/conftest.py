"""Test fixtures: a real PostgreSQL (embedded, or TEST_DATABASE_URL), clean state per test."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.embedded import start_embedded
from app.db.engine import SessionFactory, asyncpg_url, create_engine, session_factory
from app.db.migrate import upgrade_to_head
from app.main import create_app
from app.runtime import Runtime, install_features
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
# Rich sizes the CLI's consoles when they are made, from COLUMNS (80 without a terminal, as
# under xdist): wide enough that no table cell the tests read is cut.
os.environ["COLUMNS"] = "200"
PIN_KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def _worker_suffix() -> str:
    """Unique per test process, so parallel runs on one server never share a database."""
    return f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"


async def _recreate_database(server_url: str, name: str) -> str:
    """Drop and create `name` on the server of `server_url`; return the URL to it."""
    url = make_url(asyncpg_url(server_url))
    admin = url.set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def _drop_database(server_url: str, name: str) -> None:
    admin = make_url(asyncpg_url(server_url)).set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def server_url() -> str:
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        return asyncpg_url(given)
    return start_embedded(ROOT / ".data" / "test", database="postgres")


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    name = f"giftsync_test_{_worker_suffix()}"
    yield await _recreate_database(server_url, name)
    await _drop_database(server_url, name)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await upgrade_to_head(engine, database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def table_names(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            )
        )
        return [row[0] for row in rows]


@pytest.fixture(autouse=True)
async def clean_database(engine: AsyncEngine, table_names: list[str]) -> None:
    """Every test starts from empty tables (migrations stay applied)."""
    async with engine.begin() as connection:
        await connection.execute(
            text(f"TRUNCATE {', '.join(table_names)} RESTART IDENTITY CASCADE")
        )


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return session_factory(engine)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "sandbox": True,
        "admin_token": SecretStr("test-admin-oua6Df4cIZNy6hMFDLFrsQyJmY2nJnF3"),
        "card_hash_key": SecretStr(
            "57f387c85fb633f1851f213a74ab906eebf2e168fc78961d7bcd89af05c70e04"
        ),
        "pin_encryption_key": SecretStr(PIN_KEY_HEX),
        "shopify_api_secret": SecretStr("shpss_test_7204f8ff39c46c2d"),
        "log_json": True,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def runtime(
    settings: Settings, engine: AsyncEngine, sessions: SessionFactory, database_url: str
) -> AsyncIterator[Runtime]:
    runtime = Runtime(
        settings=settings, database_url=database_url, engine=engine, sessions=sessions
    )
    install_features(runtime)
    yield runtime
    runtime._stop.set()
    if runtime._tasks:
        await asyncio.gather(*runtime._tasks, return_exceptions=True)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as client:
        yield client


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """An environment with no giftsync settings, so tests set exactly what they mean.

    Variables under giftsync's prefixes go too: load_settings refuses unknown ones.
    """
    own = {field.upper() for field in Settings.model_fields}
    for name in list(os.environ):
        upper = name.upper()
        if upper in own or upper.startswith(("SHOPIFY_", "LIGHTSPEED_", "ONSITE_", "VII_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(ROOT / "tests")
    yield monkeypatch


# The shop fixtures (tests/shop.py) serve tests in several folders.
from tests.shop import capture_frees_rest, shop, undo_restores_hold  # noqa: E402, F401
