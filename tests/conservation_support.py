"""One whole giftsync for the money-conservation machine: every feature on one runtime.

Shadow cards, omni sync, pollers and reconcile share one Shopify simulator (one shop), as in
production; the Vii and Lightspeed R-Series simulators sit beside it. The database engine and
the event loop live as long as the test: each example only empties the tables and builds fresh
simulators, clients and app (about a tenth of a second), so a run can afford many examples.

Faults a test pulls, none of which waits on a clock:
- `LossyTransport.lose_writes`: a write reaches the simulator and is applied, then its answer is
  lost (the client sees `httpx.ReadTimeout` at once, as after its deadline);
- `faults.error_rate` on a simulator: answered 503 before anything is applied;
- `FaultyVii.explode_after` / `FaultyShopify.explode_after`: the named call succeeds upstream,
  then giftsync sees an unexpected exception (a bug or a crash at that point);
- `World.crash_one_job`: a worker dies mid-job and its lease runs out.
Time passes only when the test says so (`World.let_time_pass`).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

import httpx
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.clients.factory import Clients
from app.clients.lightspeed import LightspeedClient, SaleSetup
from app.clients.shopify import CreatedGiftCard, ShopifyClient
from app.clients.vii import ViiClient, ViiPreAuth
from app.db.engine import session_factory, transaction
from app.main import create_app
from app.runtime import Runtime, install_features
from app.sandbox.faults import Faults
from app.sandbox.lightspeed import LightspeedSimulator
from app.sandbox.shopify import ShopifySimulator
from app.sandbox.vii import DEMO_PASSWORD, DEMO_STORE_ID, DEMO_USERNAME, ViiSimulator
from app.settings import BalanceSign, Settings
from app.sync import runs, shadow
from app.sync.inbox import store_delivery
from app.sync.omni import OmniPollers, OmniSync
from app.sync.pos.factory import build_pos
from app.sync.reconcile import Reconciler, execute_here
from app.sync.shadow import ShadowDeps
from app.sync.shadow.gate import CardGate
from app.worker import Worker
from tests.conftest import make_settings
from tests.memory_tokens import MemoryTokenStore

UPSTREAM_TIMEOUT_S = 2.0
"""Never reached by a lost answer (the transport reports it at once); only a stuck simulator
would, and under a loaded machine a short deadline would invent lost answers of its own."""
CRASHED_WORKER = "crashed-worker"
VII_WRITES = frozenset({"PreAuthRequest", "Redemption", "PreAuthCancellation", "Undo"})

FINGERPRINT = {
    "ledger": "SELECT id, idempotency_key FROM ledger ORDER BY id",
    "jobs": "SELECT id, state, run_at FROM jobs WHERE kind <> 'reconcile.run' ORDER BY id",
    "findings": "SELECT id, evidence::text, resolved_at FROM findings ORDER BY id",
    "sync_base": "SELECT card_id, balance_minor, version FROM sync_base ORDER BY 1",
    "card_links": "SELECT id, card_id, external_id, last_seen_at FROM card_links ORDER BY id",
    "gift_cards": "SELECT id, state, updated_at FROM gift_cards ORDER BY id",
    "shadow_cards": "SELECT id, state, updated_at FROM shadow_cards ORDER BY id",
}


class InjectedFault(RuntimeError):
    """An exception no giftsync code expects, raised where a test asks for one."""


class LossyTransport(httpx.AsyncBaseTransport):
    """An in-process transport that can lose the answers of writes after they were applied."""

    def __init__(self, app: Any, is_write: Callable[[httpx.Request], bool]) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._is_write = is_write
        self.lose_writes = False
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if self.lose_writes and self._is_write(request):
            await response.aread()
            self.lost += 1
            raise httpx.ReadTimeout("the answer was lost (test fault)", request=request)
        return response


def vii_write(request: httpx.Request) -> bool:
    body = request.content.decode(errors="replace")
    return any(f"<RequestType>{kind}</RequestType>" in body for kind in VII_WRITES)


def shopify_write(request: httpx.Request) -> bool:
    try:
        query = json.loads(request.content)["query"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(query, str) and query.lstrip().startswith("mutation")


def lightspeed_write(request: httpx.Request) -> bool:
    # Never the token refresh: a lost refresh burns the token, which is another test's subject.
    return request.method != "GET" and "/API/" in request.url.path


class FaultyVii(ViiClient):
    explode_after: str | None = None

    async def pre_auth(self, *args: Any, **kwargs: Any) -> ViiPreAuth:
        hold = await super().pre_auth(*args, **kwargs)
        if self.explode_after == "pre_auth":
            raise InjectedFault("after the hold was placed")
        return hold


class FaultyShopify(ShopifyClient):
    explode_after: str | None = None

    async def create_gift_card(self, *args: Any, **kwargs: Any) -> CreatedGiftCard:
        created = await super().create_gift_card(*args, **kwargs)
        if self.explode_after == "create_gift_card":
            raise InjectedFault("after the Shopify card was created")
        return created


class QuickLightspeedClient(LightspeedClient):
    # The simulator's 1 request/s code lookup limit is switched off below; the client's own
    # pacing of it would otherwise add a second to every export.
    CODE_LOOKUP_INTERVAL_S = 0.0


@cache
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
    transports: dict[str, LossyTransport]
    vii: FaultyVii
    shopify: FaultyShopify
    clients: list[Any]
    http: httpx.AsyncClient
    omni: OmniSync
    pollers: OmniPollers
    reconciler: Reconciler
    worker: Worker

    @property
    def shadow(self) -> ShadowDeps:
        assert self.runtime.shadow is not None
        return self.runtime.shadow

    # --- checkout ---------------------------------------------------------------------------

    async def apply(
        self,
        card: str,
        pin: str | None,
        cart_minor: int,
        token: str | None,
        apply_token: str | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "viiCardNumber": card,
            "cartTotal": f"{Decimal(cart_minor) / 100:.2f}",
        }
        if token is not None:
            body["checkoutToken"] = token
        if pin is not None:
            body["viiCardPin"] = pin
        if apply_token is not None:
            body["applyToken"] = apply_token
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
        return await shadow.expire_due(self.shadow)

    # --- faults -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def answers_lost(self, upstream: str) -> Any:
        """While inside, every write to `upstream` is applied and its answer lost."""
        transport = self.transports[upstream]
        transport.lose_writes = True
        try:
            yield transport
        finally:
            transport.lose_writes = False

    @contextlib.contextmanager
    def failing(self, upstream: str) -> Any:
        """While inside, `upstream` answers 503 to everything, applying nothing."""
        sim = {"vii": self.vii_sim, "shopify": self.shop_sim, "lightspeed": self.ls_sim}[upstream]
        sim.faults.error_rate = 1.0
        try:
            yield
        finally:
            sim.faults.error_rate = 0.0

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

    async def let_time_pass(self) -> None:
        """Every wait giftsync scheduled is over: job backoffs and armed undos are due (in the
        order the jobs were queued), and a card an unfinished apply may have made is past
        Shopify's search lag.

        A test does not wait these out, and what runs next must not depend on how long the
        steps before it took.
        """
        async with self.engine.begin() as connection:
            # All at one moment, so the worker takes them in the order they were queued: which
            # backoff had run out by the wall clock must not change what runs first.
            await connection.execute(
                text(
                    "UPDATE jobs SET run_at = 'epoch' WHERE state = 'queued' AND run_at <> 'epoch'"
                )
            )
            await connection.execute(
                text(
                    "UPDATE shadow_cards SET created_at = created_at - interval '1 hour' "
                    "WHERE settled_at IS NULL AND state IN ('pending', 'abandoned') "
                    "AND created_at > now() - interval '1 hour'"
                )
            )

    async def run_due(self, *, limit: int = 100) -> int:
        """One worker pass over every queued job (waits skipped: see `let_time_pass`)."""
        await self.let_time_pass()
        return await self.worker.run_once(limit=limit)

    async def drain(self, *, rounds: int = 60) -> None:
        """Run every job, retries included, until the queue is empty (bounded)."""
        for _ in range(rounds):
            await self.let_time_pass()
            if not await self.worker.run_once():
                return
        raise AssertionError(f"jobs still coming after {rounds} rounds: {await self.queue()}")

    async def crash_one_job(self, pick: int, *, run_handler: bool) -> str | None:
        """A worker claims a job, maybe runs it, and dies before marking it done.

        `pick` chooses among the jobs not done (oldest first, wrapping around). The job's lease
        is then made to run out, so the next worker claims and runs it again.
        """
        await self.let_time_pass()
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
        return [
            (r.kind, r.state, r.attempts, r.last_error)
            for r in await self.rows(
                "SELECT kind, state, attempts, last_error FROM jobs "
                "WHERE state <> 'done' ORDER BY id"
            )
        ]

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

    async def settle(self, *, rounds: int = 5) -> list[dict[str, int]]:
        """Jobs, pollers and reconcile until a reconcile repairs nothing and nothing is queued.

        Returns the counts of every reconcile it ran, the quiet one last.
        """
        seen: list[dict[str, int]] = []
        for _ in range(rounds):
            await self.drain()
            await self.poll()
            await self.drain()
            seen.append(await self.reconcile())
            await self.drain()
            if seen[-1].get("repaired", 0) == 0 and not await self.queue():
                return seen
        raise AssertionError(f"no quiet reconcile after {rounds} rounds: {seen}")

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as connection:
            return list((await connection.execute(text(sql), params)).all())

    async def close(self) -> None:
        """The clients and app of this example; the engine outlives it."""
        await self.http.aclose()
        for client in self.clients:
            await client.aclose()


def no_flush_wait(engine: AsyncEngine) -> None:
    """Every connection of `engine` commits without waiting for the WAL flush."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connected(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET synchronous_commit = off")
        cursor.close()


async def empty_tables(engine: AsyncEngine) -> None:
    """Every table emptied (migrations kept). Row deletes: on small tables far quicker than
    TRUNCATE, which rewrites every table's files."""
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
        # Foreign keys are not checked while the rows go: the order of the deletes is free.
        # One round trip for all of them.
        raw = await connection.get_raw_connection()
        await raw.driver_connection.execute(  # asyncpg's simple protocol: many statements
            "SET LOCAL session_replication_role = replica; "
            + " ".join(f'DELETE FROM "{name}";' for name in names)
        )


async def build_world(engine: AsyncEngine, database_url: str) -> World:
    """Empty tables, fresh simulators, and the service wired to them, on a kept engine."""
    await empty_tables(engine)
    sessions = session_factory(engine)
    settings = conservation_settings()
    runtime = Runtime(
        settings=settings, database_url=database_url, engine=engine, sessions=sessions
    )
    shop_sim = ShopifySimulator(Faults(), bucket_size=1_000_000, restore_rate=1_000_000)
    vii_sim = ViiSimulator(Faults())
    ls_sim = LightspeedSimulator(
        bucket_size=1_000_000,
        drip_rate=1_000_000,
        balance_sign=BalanceSign.NEGATIVE,
        faults=Faults(),
        code_lookup_interval_s=0.0,
    )
    transports = {
        "shopify": LossyTransport(shop_sim.app, shopify_write),
        "vii": LossyTransport(vii_sim.app, vii_write),
        "lightspeed": LossyTransport(ls_sim.app, lightspeed_write),
    }
    shop = FaultyShopify(
        "http://shop.sim",
        "shpat_sandbox_token",
        "2026-07",
        timeout=UPSTREAM_TIMEOUT_S,
        transport=transports["shopify"],
        retry_backoff=0.0,
    )
    vii = FaultyVii(
        "http://vii.sim/",
        DEMO_USERNAME,
        DEMO_PASSWORD,
        DEMO_STORE_ID,
        timeout=UPSTREAM_TIMEOUT_S,
        backoff=0.0,
        transport=transports["vii"],
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
        transport=transports["lightspeed"],
    )
    pos = build_pos(settings, Clients(shopify=shop, pos=ls), sessions)
    assert pos is not None
    omni = OmniSync(sessions, settings, shop, pos)
    runtime.shadow = ShadowDeps.build(sessions, CardGate(engine), settings, vii, shop)
    runtime.omni = omni
    # Registers shadow cards, omni (jobs, pollers, topics) and reconcile on the one runtime.
    install_features(runtime)
    reconciler = runtime.reconciler
    assert reconciler is not None
    reconciler.bulk_poll_interval = 0.0
    pollers = OmniPollers(sessions, omni, shop)
    # The first Shopify poll only sets the cursor ("live sync starts now").
    await pollers.poll_shopify()
    app = create_app(runtime, run_worker=False)
    http = httpx.AsyncClient(
        # A 500 is an answer the shopper gets, not an exception in the test.
        transport=httpx.ASGITransport(
            app=app, client=("10.0.0.1", 5000), raise_app_exceptions=False
        ),
        base_url="http://giftsync.test",
    )
    return World(
        engine=engine,
        runtime=runtime,
        shop_sim=shop_sim,
        vii_sim=vii_sim,
        ls_sim=ls_sim,
        transports=transports,
        vii=vii,
        shopify=shop,
        clients=[shop, vii, ls],
        http=http,
        omni=omni,
        pollers=pollers,
        reconciler=reconciler,
        worker=Worker(sessions, runtime.handlers),
    )
