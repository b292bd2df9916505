"""Fixtures for tests that run giftsync and the simulators as separate processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.scale.processes import Processes


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


async def truncate(engine: AsyncEngine, table_names: list[str]) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(f"TRUNCATE {', '.join(table_names)} RESTART IDENTITY CASCADE")
        )


@pytest.fixture
async def processes(
    tmp_path: Path, engine: AsyncEngine, request: pytest.FixtureRequest
) -> AsyncIterator[Processes]:
    """A process group for one test; every process it started is stopped afterwards."""
    async with Processes(tmp_path / "processes", engine) as group:
        yield group
        if request.node.stash.get(_FAILED, False):
            # Shown under the failing test's captured output.
            print(group.describe())
