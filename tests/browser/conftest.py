"""Headless Chromium from Debian, driven by Playwright; installed here when missing.

Playwright's own browser download is never used (`playwright install` cannot reach its
host from CI): the test drives the distribution's Chromium through `executable_path`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
APT_GET = "/usr/bin/apt-get"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    """Debian's `chromium`, installed with apt when this machine lacks it (we are root)."""
    if not CHROMIUM.exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([APT_GET, "update"], check=True, env=env)  # noqa: S603 - fixed argv
        subprocess.run([APT_GET, "install", "-y", "chromium"], check=True, env=env)  # noqa: S603
    assert CHROMIUM.exists(), "apt-get did not install /usr/bin/chromium"
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium_executable: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium_executable), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()
