"""One whole giftsync for the money-conservation machine: every feature on one runtime.

Shadow cards, capture, omni sync, pollers and reconcile share one Shopify simulator (one shop),
as in production; the Vii and Lightspeed R-Series simulators sit beside it. Rate limits are
opened up and timeouts kept short, so a lost answer costs a fraction of a second and a
hundred-step run stays quick. Everything here is async and runs on the machine's own loop.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.clients.factory import Clients
from app.clients.lightspeed import LightspeedClient, SaleSetup
from app.clients.shopify import ShopifyClient
from app.clients.vii import ViiClient
from app.db.engine import create_engine, session_factory, transaction
from app.main import create_app
from app.runtime import Runtime, install_features
from app.sandbox.faults import Faults
from app.sandbox.lightspeed import LightspeedSimulator
from app.sandbox.shopify import ShopifySimulator
from app.sandbox.vii import DEMO_PASSWORD, DEMO_STORE_ID, DEMO_USERNAME, ViiSimulator
from app.settings import BalanceSign, Settings
from app.sync import runs, shadow
from app.sync.inbox import store_delivery
from app.sync.omni import OmniSync
from app.sync.omni_polling import OmniPollers
from app.sync.pos_factory import build_pos
from app.sync.reconcile import Reconciler, execute_here, install_reconcile
from app.sync.shadow import ShadowDeps
from app.sync.shadow.gate import CardGate
from app.worker import Worker
from tests.conftest import make_settings
from tests.memory_tokens import MemoryTokenStore

UPSTREAM_TIMEOUT_S = 0.75
"""Client deadline: far above an in-process answer, and what a lost answer costs."""
LOST_ANSWER_HANG_S = 5.0
CRASHED_WORKER = "crashed-worker"


FINGERPRINT = {
    "ledger": "SELECT id, idempotency_key FROM ledger ORDER BY id",
    "jobs": "SELECT id, state, run_at FROM jobs WHERE kind <> 'reconcile.run' ORDER BY id",
    "findings": "SELECT id, evidence::text, resolved_at FROM findings ORDER BY id",
    "sync_base": "SELECT card_id, balance_minor, version FROM sync_base ORDER BY 1",
    "card_links": "SELECT id, card_id, external_id, last_seen_at FROM card_links ORDER BY id",
    "gift_cards": "SELECT id, state, updated_at FROM gift_cards ORDER BY id",
    "shadow_cards": "SELECT id, state, updated_at FROM shadow_cards ORDER BY id",
}


class QuickLightspeedClient(LightspeedClient):
    # The simulator's 1 request/s code lookup limit is switched off below; the client's own
    # pacing of it would otherwise add a second to every export.
    CODE_LOOKUP_INTERVAL_S = 0.0


def conservation_settings() -> Settings:
    return make_settings(
        create_update_shopify_gift_cards=True,
        download_shopify_gift_cards=True,
        send_gift_card_notifications=False,
        shopify_serial_prefix="7000",
        pos_kind="retail",
        lightspeed_balance_sign="negative",
    )


@dataclass
class World:
    """The service and the upstreams it talks to, plus the levers a test pulls."""

    engine: AsyncEngine
    runtime: Runtime
    shop_sim: ShopifySimulator
    vii_sim: ViiSimulator
    ls_sim: LightspeedSimulator
    clients: list[Any]
    http: httpx.AsyncClient
    omni: OmniSync
    pollers: OmniPollers
    reconciler: Reconciler
    worker: Worker
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # --- checkout ---------------------------------------------------------------------------

    async def apply(
        self, card: str, pin: str | None, cart_minor: int, token: str
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "viiCardNumber": card,
            "cartTotal": f"{Decimal(cart_minor) / 100:.2f}",
            "checkoutToken": token,
        }
        if pin is not None:
            body["viiCardPin"] = pin
        return await self.http.post("/check-balance", json=body)

    async def release(self, token: str, code: str) -> httpx.Response:
        return await self.http.post(
            "/check-balance/release", json={"checkoutToken": token, "shopifyGiftCardCode": code}
        )

    async def expire(self, shadow_id: str) -> int:
        async with self.engine.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE shadow_cards SET expires_at = now() - interval '1 second' "
                    "WHERE id = :id"
                ),
                {"id": shadow_id},
            )
        assert self.runtime.shadow is not None
        return await shadow.expire_due(self.runtime.shadow)

    # --- webhooks and the worker ------------------------------------------------------------

    async def deliver(
        self,
        topic: str,
        payload: dict[str, Any],
        *,
        webhook_id: str | None = None,
        event_id: str | None = None,
    ) -> bool:
        return await store_delivery(
            self.runtime.sessions,
            webhook_id=webhook_id or uuid.uuid4().hex,
            event_id=event_id,
            topic=topic,
            shop_domain=self.shop_sim.shop_domain,
            triggered_at=None,
            payload=payload,
        )

    async def make_due(self) -> None:
        """Backoffs and armed undos are wall-clock waits: a test does not wait them out, and
        what runs next must not depend on how long the steps before it took."""
        async with self.engine.begin() as connection:
            await connection.execute(
                text("UPDATE jobs SET run_at = now() WHERE state = 'queued' AND run_at > now()")
            )

    async def run_due(self, *, limit: int = 100) -> int:
        """One worker pass over every queued job (backoffs skipped: see `make_due`)."""
        await self.make_due()
        return await self.worker.run_once(limit=limit)

    async def drain(self, *, rounds: int = 60) -> None:
        """Run every job, retries included, until the queue is empty (bounded)."""
        for _ in range(rounds):
            await self.make_due()
            if not await self.worker.run_once():
                return
        raise AssertionError(f"jobs still coming after {rounds} rounds: {await self.queue()}")

    async def crash_one_job(self, pick: int, *, run_handler: bool) -> str | None:
        """A worker claims a job, maybe runs it, and dies before marking it done.

        `pick` chooses among the jobs not done (oldest first, wrapping around). The job's lease
        is then made to run out, so the next worker claims and runs it again.
        """
        await self.make_due()
        async with transaction(self.runtime.sessions) as session:
            ids = [
                row[0]
                for row in await session.execute(
                    text("SELECT id FROM jobs WHERE state IN ('queued', 'running') ORDER BY id")
                )
            ]
            if not ids:
                return None
            # As `jobs.claim` does, for one chosen job.
            claimed = (
                await session.execute(
                    text(
                        """
                        UPDATE jobs SET state = 'running', attempts = attempts + 1,
                               locked_by = :worker, locked_until = now() + interval '5 minutes',
                               updated_at = now()
                        WHERE id = :id
                        RETURNING kind, payload
                        """
                    ),
                    {"id": ids[pick % len(ids)], "worker": CRASHED_WORKER},
                )
            ).one()
        if run_handler:
            handler = self.runtime.handlers[claimed.kind]
            # The worker died: whatever the handler raised is lost with it.
            with contextlib.suppress(Exception):
                await handler(claimed.payload)
        async with self.engine.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE jobs SET locked_until = now() - interval '1 second' "
                    "WHERE id = :id AND state = 'running' AND locked_by = :worker"
                ),
                {"id": ids[pick % len(ids)], "worker": CRASHED_WORKER},
            )
        return str(claimed.kind)

    async def queue(self) -> list[tuple[str, str, int, str | None]]:
        """Jobs not done: (kind, state, attempts, last error)."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT kind, state, attempts, last_error FROM jobs "
                    "WHERE state <> 'done' ORDER BY id"
                )
            )
            return [(r.kind, r.state, r.attempts, r.last_error) for r in rows]

    # --- pollers, reconcile, settling -------------------------------------------------------

    async def poll(self) -> None:
        await self.pollers.poll_pos()
        await self.pollers.poll_shopify()

    async def reconcile(self, *, dry_run: bool = False) -> dict[str, int]:
        run_id = await runs.start_reconcile(self.runtime.sessions, dry_run=dry_run)
        return await execute_here(self.runtime.sessions, self.reconciler, run_id)

    async def fingerprint(self) -> dict[str, list[Any]]:
        """Everything a reconcile could change, in giftsync and upstream, but its own run."""
        found: dict[str, list[Any]] = {}
        for name, sql in FINGERPRINT.items():
            found[name] = [tuple(row) for row in await self.rows(sql)]
        found["shopify"] = [
            (card.id, card.balance, card.enabled, len(card.transactions))
            for card in self.shop_sim.shop.gift_cards.values()
        ]
        found["lightspeed"] = [
            (card_id, card.money, card.archived) for card_id, card in self.ls_sim.cards.items()
        ]
        found["vii"] = sorted(
            (code, hold.state, hold.amount) for code, hold in self.vii_sim._holds.items()
        )
        return found

    async def settle(self, *, rounds: int = 5) -> dict[str, int]:
        """Jobs, pollers and reconcile until a reconcile repairs nothing and nothing is queued.

        Returns the counts of that last, quiet reconcile.
        """
        counts: dict[str, int] = {}
        for _ in range(rounds):
            await self.drain()
            await self.poll()
            await self.drain()
            counts = await self.reconcile()
            await self.drain()
            if counts.get("repaired", 0) == 0 and not await self.queue():
                return counts
        raise AssertionError(f"no quiet reconcile after {rounds} rounds: {counts}")

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as connection:
            return list((await connection.execute(text(sql), params)).all())

    async def close(self) -> None:
        await self.http.aclose()
        for client in self.clients:
            await client.aclose()
        await self.engine.dispose()


async def truncate_everything(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        names = [
            row[0]
            for row in await connection.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'"
                )
            )
        ]
        await connection.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))


async def build_world(database_url: str) -> World:
    """A fresh database state, fresh simulators, and the service wired to them."""
    engine = create_engine(database_url)
    await truncate_everything(engine)
    sessions = session_factory(engine)
    settings = conservation_settings()
    runtime = Runtime(
        settings=settings, database_url=database_url, engine=engine, sessions=sessions
    )

    def faults() -> Faults:
        return Faults(lost_answer_hang_s=LOST_ANSWER_HANG_S)

    shop_sim = ShopifySimulator(faults(), bucket_size=1_000_000, restore_rate=1_000_000)
    vii_sim = ViiSimulator(faults())
    ls_sim = LightspeedSimulator(
        bucket_size=1_000_000,
        drip_rate=1_000_000,
        balance_sign=BalanceSign.NEGATIVE,
        faults=faults(),
        code_lookup_interval_s=0.0,
    )
    shop = ShopifyClient(
        "http://shop.sim",
        "shpat_sandbox_token",
        "2026-07",
        timeout=UPSTREAM_TIMEOUT_S,
        transport=httpx.ASGITransport(app=shop_sim.app),
    )
    vii = ViiClient(
        "http://vii.sim/",
        DEMO_USERNAME,
        DEMO_PASSWORD,
        DEMO_STORE_ID,
        timeout=UPSTREAM_TIMEOUT_S,
        backoff=0.0,
        transport=httpx.ASGITransport(app=vii_sim.app),
    )
    ls = QuickLightspeedClient(
        ls_sim.account_id,
        ls_sim.client_id,
        ls_sim.client_secret,
        MemoryTokenStore(),
        initial_refresh_token=ls_sim.issue_refresh_token(),
        base_url="https://ls.sim",
        token_url="https://ls.sim/auth/oauth/token",
        balance_sign=BalanceSign.NEGATIVE,
        sale_setup=SaleSetup(**ls_sim.correct_set_up()),
        timeout=UPSTREAM_TIMEOUT_S,
        transport=httpx.ASGITransport(app=ls_sim.app),
    )
    pos = build_pos(settings, Clients(shopify=shop, pos=ls), sessions)
    assert pos is not None
    omni = OmniSync(sessions, settings, shop, pos)
    runtime.shadow = ShadowDeps.build(sessions, CardGate(runtime.engine), settings, vii, shop)
    runtime.omni = omni
    # Registers shadow cards, capture, omni (jobs, pollers, topics) on the one runtime.
    install_features(runtime)
    reconciler = install_reconcile(runtime)
    assert reconciler is not None
    reconciler.bulk_poll_interval = 0.0
    pollers = OmniPollers(sessions, omni, shop)
    # The first Shopify poll only sets the cursor ("live sync starts now").
    await pollers.poll_shopify()
    app = create_app(runtime, run_worker=False)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("10.0.0.1", 5000)),
        base_url="http://giftsync.test",
    )
    return World(
        engine=engine,
        runtime=runtime,
        shop_sim=shop_sim,
        vii_sim=vii_sim,
        ls_sim=ls_sim,
        clients=[shop, vii, ls],
        http=http,
        omni=omni,
        pollers=pollers,
        reconciler=reconciler,
        worker=Worker(sessions, runtime.handlers),
    )
