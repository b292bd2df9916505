"""How fast a balance move on one side reaches the other (issue 5, DESIGN 1.A "within seconds").

Two figures, each over `--samples` linked cards:
- POS -> Shopify: a redemption at the Lightspeed till (simulator) until the Shopify card's
  balance changes. Lightspeed pushes nothing, so this is bounded by the POS poller:
  target p99 <= POLL_INTERVAL + 2 s.
- Shopify -> POS: an online order paid with the card, its signed `order_transactions/create`
  webhook posted to `/webhooks/shopify`, until the POS balance changes: target p99 <= 2 s.

Everything runs in this process as `giftsync serve` would: the ASGI app, the worker with its
pollers and job loop, and the simulators (0 ms added latency) behind in-process transports.
Spends are spread at random over the poll cycle (both directions: back-to-back mirrored sales
would measure Lightspeed's drip instead, about 8 bucket units per sale at 1 unit/s).
`--ls-drip` scales the Lightspeed refill (real: 1/s). Nothing is asserted: it prints.

PostgreSQL: DATABASE_URL when set, else an embedded server under .data/bench; the database
`giftsync_bench_mirror` is dropped, created and migrated at the start.

    python bench/mirror_latency.py [--samples 30] [--poll-interval 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # type: ignore[import-untyped]  # noqa: E402
import httpx  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.clients.factory import Clients  # noqa: E402
from app.clients.lightspeed import LightspeedClient, SaleSetup  # noqa: E402
from app.clients.shopify import ShopifyClient  # noqa: E402
from app.db.embedded import start_embedded  # noqa: E402
from app.db.engine import asyncpg_url, create_engine, session_factory  # noqa: E402
from app.db.migrate import upgrade_to_head  # noqa: E402
from app.logging import configure_logging  # noqa: E402
from app.main import create_app  # noqa: E402
from app.runtime import Runtime, install_features  # noqa: E402
from app.sandbox.faults import Faults  # noqa: E402
from app.sandbox.lightspeed import LightspeedSimulator  # noqa: E402
from app.sandbox.shopify import ShopifySimulator  # noqa: E402
from app.settings import BalanceSign, PosKind, Settings  # noqa: E402
from app.sync.omni import OmniSync  # noqa: E402
from app.sync.pos.factory import build_pos  # noqa: E402
from tests.memory_tokens import MemoryTokenStore  # noqa: E402

DATABASE = "giftsync_bench_mirror"
SECRET = "bench-webhook-secret"
SHOPIFY_TO_POS_TARGET_S = 2.0


async def fresh_database() -> str:
    server = os.environ.get("DATABASE_URL") or start_embedded(ROOT / ".data" / "bench", "postgres")
    url = make_url(asyncpg_url(server))
    admin = url.set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await connection.close()
    return url.set(database=DATABASE).render_as_string(hide_password=False)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def wait_for(changed: Callable[[], bool], within_s: float) -> float | None:
    started = time.perf_counter()
    while time.perf_counter() - started < within_s:
        if changed():
            return time.perf_counter() - started
        await asyncio.sleep(0.005)
    return None


def signed(body: bytes) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()


async def main(samples: int, poll_interval: float, ls_drip: float) -> None:
    configure_logging("WARNING")
    database_url = await fresh_database()
    engine = create_engine(database_url)
    await upgrade_to_head(engine, database_url)
    sessions = session_factory(engine)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        sandbox=True,
        admin_token=SecretStr("bench-admin-Xw4Tq9Lm2Rv7Kc5Np8Jz3Hb6"),
        card_hash_key=SecretStr("5d0e8b3a7c14f92e6a08d5b1c73f49e2a6d8b05c1e97f34a2b6c80d5e1f9a374"),
        pin_encryption_key=SecretStr(
            "e83a1f5c09b74d26a1e8f3c57b90d42e6f1a8c35d7b09e24f6a3c81d5e07b92f"
        ),
        shopify_api_secret=SecretStr(SECRET),
        pos_kind=PosKind.NONE,
        poll_interval=timedelta(seconds=poll_interval),
    ).model_copy(
        update={
            "pos_kind": PosKind.RETAIL,
            "create_update_shopify_gift_cards": True,
            "download_shopify_gift_cards": True,
        }
    )
    shop_sim = ShopifySimulator(Faults())
    ls_sim = LightspeedSimulator(
        balance_sign=BalanceSign.NEGATIVE, faults=Faults(), drip_rate=ls_drip
    )
    shop = ShopifyClient(
        "http://shop.sim",
        "shpat_sandbox_token",
        "2025-01",
        transport=httpx.ASGITransport(shop_sim.app),
    )
    lightspeed = LightspeedClient(
        ls_sim.account_id,
        ls_sim.client_id,
        ls_sim.client_secret,
        MemoryTokenStore(),
        initial_refresh_token=ls_sim.issue_refresh_token(),
        base_url="https://ls.sim",
        token_url="https://ls.sim/auth/oauth/token",
        balance_sign=BalanceSign.NEGATIVE,
        sale_setup=SaleSetup(**ls_sim.correct_set_up()),
        transport=httpx.ASGITransport(ls_sim.app),
    )
    pos = build_pos(settings, Clients(shopify=shop, pos=lightspeed), sessions)
    assert pos is not None
    runtime = Runtime(
        settings=settings, database_url=database_url, engine=engine, sessions=sessions
    )
    runtime.omni = OmniSync(sessions, settings, shop, pos)
    install_features(runtime)
    app = create_app(runtime, run_worker=False)
    await runtime.start_worker()

    cards = [ls_sim.add_gift_card(f"mirror{n:06d}x", Decimal("500.00")) for n in range(samples)]
    print(
        f"linking {samples} cards sold in store (POLL_INTERVAL={poll_interval:g} s, "
        f"Lightspeed bucket 90, drip {ls_drip:g}/s)..."
    )
    links: dict[str, str] = {}
    deadline = time.perf_counter() + 60 + 5 * poll_interval
    while len(links) < samples:
        if time.perf_counter() > deadline:
            raise SystemExit(f"only {len(links)} of {samples} cards were linked in time")
        await asyncio.sleep(0.2)
        for card in cards:
            found = await runtime.omni.linked_card("lightspeed", card)
            if found is not None and card not in links:
                async with sessions() as session:
                    from sqlalchemy import text

                    links[card] = str(
                        await session.scalar(
                            text(
                                "SELECT external_id FROM card_links "
                                "WHERE card_id = :c AND system = 'shopify'"
                            ),
                            {"c": found},
                        )
                    )

    pos_to_shopify: list[float] = []
    for card in cards:
        await asyncio.sleep(random.uniform(0, poll_interval))
        before = shop_sim.card(links[card])["balance"]
        ls_sim.spend_in_store(card, Decimal("1.00"))
        took = await wait_for(
            lambda c=card, b=before: shop_sim.card(links[c])["balance"] != b,
            poll_interval + 30,
        )
        if took is not None:
            pos_to_shopify.append(took)

    shopify_to_pos: list[float] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://bench"
    ) as http:
        for n, card in enumerate(cards):
            # Spaced like the POS samples: a burst would measure Lightspeed's drip (one
            # mirrored sale costs about 8 of the 90-unit bucket, refilled at 1 unit/s).
            await asyncio.sleep(random.uniform(0, poll_interval))
            before_money = ls_sim.money_on(card)
            order = shop_sim.create_order([(links[card], Decimal("2.00"))])
            started = time.perf_counter()
            for m, payload in enumerate(order["webhooks"]["order_transactions/create"]):
                body = json.dumps(payload).encode()
                await http.post(
                    "/webhooks/shopify",
                    content=body,
                    headers={
                        "X-Shopify-Topic": "order_transactions/create",
                        "X-Shopify-Hmac-Sha256": signed(body),
                        "X-Shopify-Webhook-Id": f"bench-{n}-{m}",
                        "X-Shopify-Shop-Domain": "bench.myshopify.com",
                        "Content-Type": "application/json",
                    },
                )
            took = await wait_for(lambda c=card, b=before_money: ls_sim.money_on(c) != b, 30)
            if took is not None:
                shopify_to_pos.append(time.perf_counter() - started)

    await runtime.close()
    await shop.aclose()
    await lightspeed.aclose()

    def line(name: str, values: list[float], target: float) -> None:
        if not values:
            print(f"{name:16} no sample arrived")
            return
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        verdict = "meets" if p99 <= target else "MISSES"
        print(
            f"{name:16} n={len(values):3}/{samples}  p50 {p50 * 1000:7.0f} ms  "
            f"p99 {p99 * 1000:7.0f} ms  target p99 <= {target * 1000:.0f} ms: {verdict}"
        )

    line("POS -> Shopify", pos_to_shopify, poll_interval + 2.0)
    line("Shopify -> POS", shopify_to_pos, SHOPIFY_TO_POS_TARGET_S)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument(
        "--ls-drip", type=float, default=1.0, help="Lightspeed drip rate (real: 1/s)"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    random.seed(args.seed)
    asyncio.run(main(args.samples, args.poll_interval, args.ls_drip))
