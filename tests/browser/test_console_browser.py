"""The operator console in a real browser (issue 17): Debian's Chromium, giftsync on uvicorn, a
Shopify and a Lightspeed R-Series simulator behind it, a worker for the runs it starts.

One walk through what staff do: sign in (a wrong token first), find a drift with a dry run and
then a real one, resolve the finding with a note, look a card up, change a setting and see it
in force, export the liability CSV and check it against the simulators, be refused without the
CSRF token, sign out; and the API docs with no internet. Each page's screenshot is written to
the folder GIFTSYNC_SCREENSHOTS names (the committed ones: `GIFTSYNC_SCREENSHOTS=docs/screenshots`,
listed in the README there), else to a temporary folder.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Browser, Page, expect

from app.main import create_app
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import ROOT, make_settings
from tests.console.conftest import ADMIN_TOKEN
from tests.console.store import Sold, Store, store, worker_running

TIMEOUT_MS = 15_000
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        pos_kind="retail",
        create_update_shopify_gift_cards=True,
        download_shopify_gift_cards=True,
        shopify_admin_token="shpat_sandbox_token",
    )


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    async with asyncio.timeout(10):
        while not server.started:
            assert not task.done(), "uvicorn stopped while starting"
            await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        listener.close()


class Walk:
    """One browser page, with the CSP violations it meets and its screenshots."""

    def __init__(self, page: Page, base: str, shots: Path) -> None:
        self.page = page
        self.base = base
        self.shots = shots
        self.violations: list[str] = []
        page.on("console", self._console)
        shots.mkdir(parents=True, exist_ok=True)

    def _console(self, message: Any) -> None:
        # Redoc's attribution logo is hard-coded to its CDN: the policy blocks it (no request
        # leaves the browser) and Redoc hides the image when it fails to load.
        if "Content Security Policy" in message.text and REDOC_LOGO not in message.text:
            self.violations.append(f"{self.page.url}: {message.text}")

    async def go(self, path: str) -> None:
        await self.page.goto(self.base + path)

    async def shot(self, name: str, *, full_page: bool = True) -> Path:
        path = self.shots / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=full_page)
        return path


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    chosen = os.environ.get("GIFTSYNC_SCREENSHOTS")
    return ROOT / chosen if chosen else tmp_path / "screenshots"


@pytest.fixture
async def walk(
    runtime: Runtime, browser: Browser, shots: Path
) -> AsyncIterator[tuple[Walk, Store]]:
    async with store(runtime) as shop:
        app = create_app(runtime, run_worker=False)
        async with serving(app) as base:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(TIMEOUT_MS)
            page = await context.new_page()
            try:
                yield Walk(page, base, shots), shop
            finally:
                await context.close()


async def sign_in(walk: Walk) -> None:
    page = walk.page
    await walk.go("/console")
    await expect(page).to_have_url(walk.base + "/console/sign-in?next=/console")
    await walk.shot("01-sign-in")
    await page.fill("#token", "not-an-operator-token")
    await page.click("button[type=submit]")
    await expect(page.locator("#sign-in-error")).to_have_text(
        "That token is not an operator token."
    )
    await walk.shot("02-sign-in-wrong-token")
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(walk.base + "/console")
    await expect(page.locator(".who")).to_contain_text("admin")


async def find_the_drift(
    walk: Walk, shop: Store, drifted: Sold, start_worker: Callable[[], Awaitable[None]]
) -> None:
    """A dry run, watched live, reports the drift; a real run records it as a finding."""
    page = walk.page
    await walk.go("/console/runs")
    await expect(page.locator("#dry-run")).to_be_checked()
    await page.click("#start-reconcile")
    await expect(page.locator("h1")).to_have_text("Reconcile run (dry run)")
    await expect(page.locator('[data-field="status"]')).to_have_text("queued")
    await walk.shot("04-run-queued")
    # The worker starts only now: the page follows the run without being reloaded by hand.
    await start_worker()
    await expect(page.locator('[data-field="status"]')).to_have_text("succeeded")
    await expect(page.locator("#would-be")).to_contain_text("status_conflict")
    await expect(page.locator('[data-field="done"]')).to_have_text("2")
    await expect(page.locator('[data-field="percent"]')).to_have_text("100")
    await walk.shot("05-run-dry-run-report")
    await walk.go("/console/findings")
    await expect(page.locator("#no-findings")).to_be_visible()

    await walk.go("/console/runs")
    await page.uncheck("#dry-run")
    await page.click("#start-reconcile")
    await expect(page.locator("h1")).to_have_text("Reconcile run (repair)")
    await expect(page.locator('[data-field="status"]')).to_have_text("succeeded")
    await expect(page.locator("#run-findings")).to_contain_text("status_conflict")
    await walk.go("/console/runs")
    await expect(page.locator("#runs tbody tr")).to_have_count(2)
    await walk.shot("20-runs")
    await walk.go("/console")
    await expect(page.locator("#open-findings")).to_have_text("1")
    await walk.shot("03-overview")
    await walk.go("/console/findings")
    await expect(page.locator("#findings")).to_contain_text("status_conflict")
    await walk.shot("06-findings")
    await page.click("#findings a[href^='/console/findings/']")
    await expect(page.locator("#finding-state")).to_contain_text("open")
    await expect(page.locator(f'a[href="/console/cards/{drifted.card_id}"]')).to_be_visible()
    await walk.shot("07-finding")
    await page.fill("#note", "Shopify card disabled by mistake; card archived in store by Sam")
    await page.click("#resolve")
    await expect(page.locator(".notice.ok")).to_have_text("Finding resolved.")
    await expect(page.locator("#finding-state")).to_contain_text("by admin")
    await expect(page.locator("#finding-note")).to_contain_text("archived in store by Sam")
    await walk.shot("08-finding-resolved")


async def look_up_a_card(walk: Walk, card: Sold) -> None:
    page = walk.page
    await walk.go("/console/cards")
    await page.fill("input[name=last4]", card.serial[-4:])
    await page.click("#find")
    await expect(page.locator("#card-results")).to_contain_text(str(card.card_id))
    await walk.shot("09-cards")
    await page.click(f'a[href="/console/cards/{card.card_id}"]')
    await expect(page.locator("#balances .balance")).to_have_count(3)
    await expect(page.locator("#ledger")).to_contain_text("card_created")
    await walk.shot("10-card")


async def change_a_setting(walk: Walk, shop: Store) -> None:
    page = walk.page
    await walk.go("/console/settings")
    await expect(page.locator("#download_shopify_gift_cards")).to_be_checked()
    await page.uncheck("#download_shopify_gift_cards")
    await page.click("#save-settings")
    await expect(page.locator("#settings-message")).to_have_text("Saved. It is in force now.")
    await expect(page.locator("#setting-download_shopify_gift_cards .source")).to_contain_text(
        "console admin"
    )
    await walk.shot("11-settings-saved")
    assert shop.runtime.settings.download_shopify_gift_cards is False
    assert shop.flow.omni.to_pos is False
    await walk.go("/console")
    await expect(page.locator("#directions tbody tr").nth(1)).to_contain_text("off")
    await walk.shot("12-overview-direction-off")
    await walk.go("/console/runs")
    await page.select_option("select[name=direction]", "to_pos")
    await page.click("#start-backfill")
    await expect(page.locator("#run-error")).to_have_text(
        "Switched off in Settings: to_pos (DOWNLOAD_SHOPIFY_GIFT_CARDS)."
    )
    await walk.shot("13-backfill-refused-by-setting")


async def export_liability(walk: Walk, shop: Store, cards: list[Sold]) -> None:
    page = walk.page
    await walk.go("/console/liability")
    await expect(page.locator("#liability-flag")).to_be_visible()  # the drifted card
    await walk.shot("14-liability")
    async with page.expect_download() as download_info:
        await page.click("#liability-csv")
    download = await download_info.value
    body = await asyncio.to_thread(Path(await download.path()).read_text)
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == len(cards)

    def outstanding(column: str) -> Decimal:
        return sum(
            (
                Decimal(r[column])
                for r in rows
                if r["state"] == "active" and r[f"{column}_status"] != "disabled"
            ),
            Decimal("0.00"),
        )

    assert outstanding("shopify") == shop.shopify_total()
    assert outstanding("pos") == shop.pos_total(cards)
    assert await page.locator('[data-total="shopify"]').text_content() == str(shop.shopify_total())
    assert await page.locator('[data-total="pos"]').text_content() == str(shop.pos_total(cards))


async def refused_without_csrf(walk: Walk, shop: Store) -> None:
    page = walk.page
    await walk.go("/console/lockouts")
    await walk.shot("15-lockouts")
    await walk.go("/console/settings")
    await page.evaluate("document.querySelector('#settings-form input[name=csrf]').remove()")
    await page.check("#download_shopify_gift_cards")
    await page.click("#save-settings")
    await expect(page.locator("h1")).to_have_text("Refused")
    await walk.shot("16-csrf-refused")
    assert shop.runtime.settings.download_shopify_gift_cards is False


async def sign_out(walk: Walk) -> None:
    page = walk.page
    await walk.go("/console")
    await page.click(".sign-out button")
    await expect(page.locator(".notice.ok")).to_have_text("You are signed out.")
    await walk.shot("17-signed-out")
    await walk.go("/console/findings")
    await expect(page).to_have_url(walk.base + "/console/sign-in?next=/console/findings")


async def offline_docs(walk: Walk) -> None:
    page = walk.page
    # No internet: everything the pages load comes from giftsync, and nothing else loads.
    loaded: list[str] = []
    page.on("requestfinished", lambda request: loaded.append(request.url))
    await walk.go("/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("giftsync")
    await expect(
        page.locator("#operations-internal-findings_page_internal_findings_get")
    ).to_be_visible()
    await walk.shot("18-docs", full_page=False)
    await walk.go("/redoc")
    await expect(page.locator("h1").first).to_contain_text("giftsync")
    await expect(page.get_by_text("/internal/findings").first).to_be_attached()
    await walk.shot("19-redoc", full_page=False)
    assert [url for url in loaded if not url.startswith((walk.base, "data:", "blob:"))] == []
    assert walk.base + "/docs/assets/swagger-ui-bundle.js" in loaded
    assert walk.base + "/docs/assets/redoc.standalone.js" in loaded


async def test_staff_find_understand_and_fix_a_drift(walk: tuple[Walk, Store]) -> None:
    browser_walk, shop = walk
    await shop.flow.pollers.poll_shopify()  # the Shopify poller's first look sets its cursor
    cards = [
        await shop.sell("gc2026walk0001", "50.00"),
        await shop.sell("gc2026walk0002", "35.00"),
    ]
    shop.status_conflict(cards[0])  # behind giftsync's back: only a reconcile sees it

    await sign_in(browser_walk)
    async with AsyncExitStack() as stack:

        async def start_worker() -> None:
            await stack.enter_async_context(worker_running(shop.runtime))

        await find_the_drift(browser_walk, shop, cards[0], start_worker)
        await look_up_a_card(browser_walk, cards[1])
        await change_a_setting(browser_walk, shop)
        await export_liability(browser_walk, shop, cards)
        await refused_without_csrf(browser_walk, shop)
        await sign_out(browser_walk)
    await offline_docs(browser_walk)
    assert browser_walk.violations == []
