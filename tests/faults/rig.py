"""Fault injection at the HTTP boundary, and the real flows wired to it with short timeouts.

The simulators' own switches (`Faults`: latency, 503s, forced throttling, lost answers) cover
most faults; `Wire` adds what they lack, per request: a refused connection, an answer that is
not what the protocol promises (HTML, cut short, wrong types), and a lost answer to one named
operation only. Every client gets short timeouts and no backoff, so a fault costs a fraction of
a second, and every wait a client computes (Shopify's cost bucket, Lightspeed's 429s) goes to a
`VirtualSleep`, so the tests measure how long the service *would* wait without waiting for it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.clients.factory import Clients
from app.clients.lightspeed import LightspeedClient, SaleSetup
from app.clients.onsite import OnSiteClient
from app.clients.shopify import ShopifyClient
from app.clients.throttle import CostBucket
from app.clients.vii import ViiClient
from app.main import create_app
from app.money import from_minor
from app.runtime import Runtime, install_features
from app.sandbox.faults import Faults
from app.sandbox.lightspeed import LightspeedSimulator
from app.sandbox.onsite import OnSiteSimulator
from app.sandbox.shopify import ShopifySimulator
from app.sandbox.vii import DEMO_PASSWORD, DEMO_STORE_ID, DEMO_USERNAME, ViiSimulator
from app.settings import BalanceSign, PosKind
from app.sync.omni import OmniSync
from app.sync.pos.factory import build_pos
from app.sync.shadow import ShadowDeps
from app.sync.shadow.gate import CardGate
from app.worker import Worker
from tests.memory_tokens import MemoryTokenStore
from tests.omni_wiring import Omni

# Short enough that a test with a dozen timed-out calls stays around a second; long enough
# that an in-process simulator (GraphQL validation included) always answers in time.
CLIENT_TIMEOUT = 0.3
# A fault's latency: far beyond every client timeout (the client gives up long before).
SLOW_MS = 30_000.0
WEBHOOK_SECRET = "shpss_test_7204f8ff39c46c2d"  # conftest make_settings

Match = Callable[[httpx.Request], bool]


# --- request matchers ------------------------------------------------------------------------


def any_request(_request: httpx.Request) -> bool:
    return True


def vii_type(*request_types: str) -> Match:
    """A Vii XML request of one of these `RequestType`s."""
    wanted = {t.encode() for t in request_types}

    def match(request: httpx.Request) -> bool:
        found = re.search(rb"<RequestType>([^<]*)</RequestType>", request.content)
        return found is not None and found.group(1) in wanted

    return match


def shopify_op(*operations: str) -> Match:
    """A Shopify GraphQL request whose `operationName` is one of these."""

    def match(request: httpx.Request) -> bool:
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            return False
        return isinstance(body, dict) and body.get("operationName") in operations

    return match


def http(method: str | None = None, path: str = "") -> Match:
    """By method and a fragment of the path (Lightspeed REST, OnSite XML)."""

    def match(request: httpx.Request) -> bool:
        return (method is None or request.method == method) and path in request.url.path

    return match


# --- the wire --------------------------------------------------------------------------------


@dataclass
class Rule:
    match: Match
    action: str
    """`refuse`, `stall` (never sent on: the client times out, nothing applied), `answer`
    (instead of the upstream), `rewrite` (the upstream's answer, after it applied the request)
    or `hang` (applied, the answer never comes)."""
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html"
    rewrite: Callable[[bytes], bytes] | None = None
    times: int | None = None
    """Applies to this many requests, then lets the rest through (None: until cleared)."""
    skip: int = 0
    """Lets this many matching requests through before it applies."""
    hits: int = 0
    passed: int = 0

    @property
    def active(self) -> bool:
        return self.times is None or self.hits < self.times


class Wire(httpx.AsyncBaseTransport):
    """A client's transport to its simulator, with per-request faults on top."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.rules: list[Rule] = []

    def refuse(self, match: Match = any_request, *, skip: int = 0) -> Rule:
        """Connection refused: nothing reaches the upstream."""
        return self._add(Rule(match, "refuse", skip=skip))

    def stall(self, match: Match = any_request) -> Rule:
        """Slow beyond any timeout before the upstream: the request is never applied."""
        return self._add(Rule(match, "stall"))

    def answer(
        self,
        body: bytes,
        *,
        match: Match = any_request,
        status: int = 200,
        content_type: str = "text/html",
        times: int | None = None,
    ) -> Rule:
        """Something else answers (a proxy's error page): the upstream never sees the request."""
        return self._add(Rule(match, "answer", status, body, content_type, times=times))

    def garble(self, rewrite: Callable[[bytes], bytes], *, match: Match = any_request) -> Rule:
        """The upstream applies the request; its answer arrives mangled by `rewrite`."""
        return self._add(Rule(match, "rewrite", rewrite=rewrite))

    def lose(self, match: Match) -> Rule:
        """The upstream applies the request; its answer never arrives (the client times out)."""
        return self._add(Rule(match, "hang"))

    def clear(self) -> None:
        """Remove every fault, first checking each one fired (one that did not proves nothing)."""
        idle = [rule.action for rule in self.rules if not rule.hits]
        self.rules.clear()
        assert not idle, f"faults that never fired: {idle}"

    def _add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        rule = next((r for r in self.rules if r.active and r.match(request)), None)
        if rule is not None and rule.passed < rule.skip:
            rule.passed += 1
            rule = None
        if rule is None:
            return await self._inner.handle_async_request(request)
        rule.hits += 1
        if rule.action == "refuse":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if rule.action == "stall":
            await asyncio.sleep(3600)
        if rule.action == "answer":
            return httpx.Response(
                rule.status, content=rule.body, headers={"Content-Type": rule.content_type}
            )
        response = await self._inner.handle_async_request(request)
        content = await response.aread()
        if rule.action == "hang":
            await asyncio.sleep(3600)
        assert rule.rewrite is not None
        headers = {"Content-Type": response.headers.get("content-type", "text/plain")}
        return httpx.Response(response.status_code, content=rule.rewrite(content), headers=headers)

    async def aclose(self) -> None:
        await self._inner.aclose()


def cut_short(content: bytes) -> bytes:
    """The first half of an answer, as when a connection drops mid-body."""
    return content[: max(1, len(content) // 2)]


def replace_json_values(key: str, value: Any) -> Callable[[bytes], bytes]:
    """Every `key` member in a JSON answer set to `value` (a wrong type: "abc" for money)."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: value if k == key else walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    def rewrite(content: bytes) -> bytes:
        return json.dumps(walk(json.loads(content))).encode()

    return rewrite


def replace_xml_values(value: str, *elements: str) -> Callable[[bytes], bytes]:
    """The text of every one of these XML elements set to `value` (a wrong type)."""
    names = b"|".join(re.escape(e.encode()) for e in elements)
    pattern = re.compile(rb"(<(" + names + rb")>)[^<]*(</\2>)")

    def rewrite(content: bytes) -> bytes:
        return pattern.sub(rb"\g<1>" + value.encode() + rb"\g<3>", content)

    return rewrite


HTML_ERROR_PAGE = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>Bad Gateway</h1><p>The proxy received an invalid response.</p></body></html>"
)


class VirtualSleep:
    """Stands in for `asyncio.sleep` in a client's pacing: records the wait, returns at once.

    `clock` is the monotonic clock moved on by every virtual wait, for pacing that reads the
    time after sleeping (a bucket that refills with time).
    """

    def __init__(self) -> None:
        self.waited = 0.0

    async def __call__(self, seconds: float) -> None:
        self.waited += max(0.0, seconds)
        await asyncio.sleep(0)

    def clock(self) -> float:
        return time.monotonic() + self.waited


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


async def run_jobs(runtime: Runtime, engine: AsyncEngine, *, rounds: int = 25) -> int:
    """Run every job until none is left, making each retry due at once instead of sleeping
    through its backoff (bounded, so a job that never stops failing cannot loop forever)."""
    worker = Worker(runtime.sessions, runtime.handlers)
    total = 0
    for _ in range(rounds):
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE jobs SET run_at = now() WHERE state = 'queued'"))
        ran = await worker.run_once()
        total += ran
        if not ran:
            break
    return total


async def end_search_grace(engine: AsyncEngine) -> None:
    """The recovery of an apply whose Shopify card is not known keeps the hold while Shopify's
    search may lag a create (2 minutes after the intent was written); end that grace now
    rather than wait for it."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE shadow_cards SET created_at = created_at - interval '1 hour' "
                "WHERE shopify_gift_card_id IS NULL AND settled_at IS NULL"
            )
        )
        await connection.execute(text("UPDATE jobs SET run_at = now() WHERE state = 'queued'"))


async def unfinished_jobs(engine: AsyncEngine) -> list[tuple[str, str, str | None]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT kind, state, last_error FROM jobs WHERE state <> 'done' ORDER BY id")
        )
        return [(r.kind, r.state, r.last_error) for r in rows]


# --- shadow cards (checkout, release, capture) ---------------------------------------------


@dataclass(repr=False)
class ShadowRig:
    runtime: Runtime
    engine: AsyncEngine
    http: httpx.AsyncClient
    vii_sim: ViiSimulator
    shop_sim: ShopifySimulator
    vii_wire: Wire
    shop_wire: Wire
    shop_waits: VirtualSleep
    shop: ShopifyClient
    vii_cards: dict[str, Decimal] = field(default_factory=dict)
    """Every Vii card the test made, with its starting balance."""

    def add_vii_card(self, number: str, pin: str, balance: str) -> None:
        self.vii_sim.add_card(number, pin, Decimal(balance))
        self.vii_cards[number] = Decimal(balance)

    apply_tokens: dict[str, str] = field(default_factory=dict)
    """checkoutToken -> the `applyToken` the last successful answer for it gave."""

    async def apply(
        self,
        cart: str,
        *,
        card: str,
        pin: str | None,
        token: str = "c-1",
        apply_token: str | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {"viiCardNumber": card, "cartTotal": cart, "checkoutToken": token}
        if pin is not None:
            body["viiCardPin"] = pin
        if apply_token is not None:
            body["applyToken"] = apply_token
        response = await self.http.post("/check-balance", json=body)
        if response.status_code == 200:
            self.apply_tokens[token] = response.json()["applyToken"]
        return response

    async def resize(self, cart: str, *, card: str, token: str = "c-1") -> httpx.Response:
        """A re-size as the checkout makes it: no PIN, the apply token it was given."""
        return await self.apply(
            cart, card=card, pin=None, token=token, apply_token=self.apply_tokens[token]
        )

    async def release(self, code: str, *, token: str = "c-1") -> httpx.Response:
        return await self.http.post(
            "/check-balance/release", json={"checkoutToken": token, "shopifyGiftCardCode": code}
        )

    async def webhook(self, topic: str, payload: dict[str, Any]) -> httpx.Response:
        body = json.dumps(payload).encode()
        return await self.http.post(
            "/webhooks/shopify",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Shopify-Topic": topic,
                "X-Shopify-Webhook-Id": uuid.uuid4().hex,
                "X-Shopify-Shop-Domain": "giftsync-sandbox.myshopify.com",
                "X-Shopify-Hmac-Sha256": sign(body),
            },
        )

    async def run_jobs(self, *, rounds: int = 25) -> int:
        return await run_jobs(self.runtime, self.engine, rounds=rounds)

    async def scalar(self, sql: str) -> Any:
        async with self.engine.connect() as connection:
            return await connection.scalar(text(sql))

    def clear_faults(self) -> None:
        for sim in (self.vii_sim, self.shop_sim):
            sim.faults.update(
                {
                    "latency_ms": 0.0,
                    "error_rate": 0.0,
                    "lose_answer_rate": 0.0,
                    "force_throttle": False,
                }
            )
        self.vii_sim.garbage_body = None
        self.vii_wire.clear()
        self.shop_wire.clear()

    def card_by_code(self, code: str) -> dict[str, Any]:
        for card_id in self.shop_sim.shop.gift_cards:
            card = self.shop_sim.card(card_id)
            if card["code"].lower() == code.lower():
                return card
        raise AssertionError(f"no Shopify card ends {code[-4:]}")

    def live_shopify_cards(self) -> dict[str, Decimal]:
        cards = (self.shop_sim.card(card_id) for card_id in self.shop_sim.shop.gift_cards)
        return {c["id"]: Decimal(str(c["balance"])) for c in cards if c["enabled"]}

    def open_holds(self) -> dict[str, Decimal]:
        holds: dict[str, Decimal] = {}
        for number in self.vii_cards:
            holds.update(self.vii_sim.open_holds(number))
        return holds

    async def shadow_rows(self) -> list[Any]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT id, state, vii_last4, hold_code, hold_amount_minor, "
                    "applied_amount_minor, loaded_minor, captured_amount_minor, "
                    "shopify_gift_card_id, applied_unconfirmed, unconfirmed_move_minor, "
                    "settled_at, pin_ciphertext, card_number_ciphertext "
                    "FROM shadow_cards ORDER BY created_at"
                )
            )
            return list(rows.all())

    def spent_on_shopify(self, gid: str) -> Decimal:
        """What orders took from a Shopify card: every move on it not made by giftsync."""
        moves = self.shop_sim.card(gid)["transactions"]
        return -sum(
            (Decimal(t["amount"]) for t in moves if "[giftsync:" not in (t["note"] or "")),
            Decimal(0),
        )

    async def assert_consistent(self) -> None:
        """No hold without a live shadow card, no live card without its hold, money exact.

        Each open Vii hold is the hold of an `applied` shadow card, at that card's hold amount;
        each enabled Shopify card is the card of an `applied` shadow card, at its applied
        amount (nothing at all while no hold backs it, as after a re-hold Vii failed), and what
        giftsync put on it minus its balance is what orders spent (no move left unconfirmed);
        every other shadow card is settled: Vii captured exactly what its Shopify card spent,
        and it keeps no PIN and no card number; each Vii card's balance is its start minus
        what was captured from it, whatever closed the card; nothing is left in the job queue.
        """
        rows = await self.shadow_rows()
        applied = [r for r in rows if r.state == "applied"]
        assert self.open_holds() == {
            r.hold_code: from_minor(r.hold_amount_minor) for r in applied if r.hold_code
        }
        assert self.live_shopify_cards() == {
            r.shopify_gift_card_id: from_minor(r.applied_amount_minor if r.hold_code else 0)
            for r in applied
        }
        for row in applied:
            balance = self.shop_sim.card(row.shopify_gift_card_id)["balance"]
            spent = from_minor(row.loaded_minor) - Decimal(str(balance))
            assert (spent, row.applied_unconfirmed) == (
                self.spent_on_shopify(row.shopify_gift_card_id),
                False,
            )
        for row in rows:
            if row.state == "applied":
                continue
            assert row.settled_at is not None, row.state
            assert row.pin_ciphertext is None and row.card_number_ciphertext is None
            if row.shopify_gift_card_id is not None:
                spent = self.spent_on_shopify(row.shopify_gift_card_id)
                assert from_minor(row.captured_amount_minor) == spent, row.state
        for number, start in self.vii_cards.items():
            captured = sum(r.captured_amount_minor for r in rows if r.vii_last4 == number[-4:])
            assert self.vii_sim.balance(number) == start - from_minor(captured), number[-4:]
        assert await unfinished_jobs(self.engine) == []


@asynccontextmanager
async def shadow_rig(runtime: Runtime, engine: AsyncEngine) -> AsyncIterator[ShadowRig]:
    """`tests/wiring.py shadow_upstreams`, with fault wires and short timeouts."""
    vii_sim = ViiSimulator(Faults(lost_answer_hang_s=3600.0))
    shop_sim = ShopifySimulator(Faults(lost_answer_hang_s=3600.0))
    vii_wire = Wire(httpx.ASGITransport(app=vii_sim.app))
    shop_wire = Wire(httpx.ASGITransport(app=shop_sim.app))
    shop_waits = VirtualSleep()
    vii = ViiClient(
        "http://vii.sim/",
        DEMO_USERNAME,
        DEMO_PASSWORD,
        DEMO_STORE_ID,
        timeout=CLIENT_TIMEOUT,
        backoff=0.0,
        transport=vii_wire,
    )
    shop = ShopifyClient(
        "http://shop.sim",
        "shpat_sandbox_token",
        "2026-07",
        timeout=CLIENT_TIMEOUT,
        transport=shop_wire,
        bucket=CostBucket(clock=shop_waits.clock, sleep=shop_waits),
        retry_backoff=0.0,
    )
    runtime.shadow = ShadowDeps.build(
        runtime.sessions, CardGate(runtime.engine), runtime.settings, vii, shop
    )
    install_features(runtime)
    app = create_app(runtime, run_worker=False)
    # An unhandled error must show as the 500 a shopper would get, not as a test crash.
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 5000), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://giftsync.test") as web:
            yield ShadowRig(
                runtime, engine, web, vii_sim, shop_sim, vii_wire, shop_wire, shop_waits, shop
            )
    finally:
        await vii.aclose()
        await shop.aclose()


# --- omni (POS <-> Shopify mirror) -----------------------------------------------------------


@dataclass(repr=False)
class OmniRig:
    flow: Omni
    engine: AsyncEngine
    shop_wire: Wire
    pos_wire: Wire
    waits: VirtualSleep

    @property
    def pos_faults(self) -> Faults:
        sim = self.flow.ls_sim or self.flow.onsite_sim
        assert sim is not None
        return sim.faults

    def clear_faults(self) -> None:
        for faults in (self.flow.shop_sim.faults, self.pos_faults):
            faults.update(
                {
                    "latency_ms": 0.0,
                    "error_rate": 0.0,
                    "lose_answer_rate": 0.0,
                    "force_throttle": False,
                }
            )
        self.shop_wire.clear()
        self.pos_wire.clear()

    async def run_jobs(self, *, rounds: int = 25) -> int:
        return await run_jobs(self.flow.runtime, self.engine, rounds=rounds)

    async def base(self, card_id: uuid.UUID) -> int:
        async with self.engine.connect() as connection:
            value = await connection.scalar(
                text("SELECT balance_minor FROM sync_base WHERE card_id = :c"), {"c": card_id}
            )
        assert value is not None
        return int(value)

    async def shopify_id(self, card_id: uuid.UUID) -> str:
        async with self.engine.connect() as connection:
            value = await connection.scalar(
                text(
                    "SELECT external_id FROM card_links WHERE card_id = :c AND system = 'shopify'"
                ),
                {"c": card_id},
            )
        assert value is not None
        return str(value)


@asynccontextmanager
async def omni_rig(
    runtime: Runtime,
    engine: AsyncEngine,
    pos_kind: str,
    sign_: str = "negative",
    *,
    beside: ShadowRig | None = None,
) -> AsyncIterator[OmniRig]:
    """`tests/omni_wiring.py omni_upstreams`, with fault wires, short timeouts, virtual waits.

    `beside`: a shadow card rig already on `runtime`, whose Shopify (one shop, as in
    production) omni shares.
    """
    settings = runtime.settings.model_copy(
        update={
            "pos_kind": PosKind(pos_kind),
            "lightspeed_balance_sign": BalanceSign(sign_),
            "create_update_shopify_gift_cards": True,
            "download_shopify_gift_cards": True,
            "send_gift_card_notifications": False,
            "shopify_serial_prefix": "7000",
        }
    )
    runtime.settings = settings
    if beside is not None:
        waits, shop_sim, shop_wire, shop = (
            beside.shop_waits,
            beside.shop_sim,
            beside.shop_wire,
            beside.shop,
        )
    else:
        waits = VirtualSleep()
        shop_sim = ShopifySimulator(Faults(lost_answer_hang_s=3600.0))
        shop_wire = Wire(httpx.ASGITransport(app=shop_sim.app))
        shop = ShopifyClient(
            "http://shop.sim",
            "shpat_sandbox_token",
            "2026-07",
            timeout=CLIENT_TIMEOUT,
            transport=shop_wire,
            bucket=CostBucket(clock=waits.clock, sleep=waits),
            retry_backoff=0.0,
        )
    ls_sim: LightspeedSimulator | None = None
    onsite_sim: OnSiteSimulator | None = None
    pos_client: LightspeedClient | OnSiteClient
    if pos_kind == "retail":
        # A bucket that refills fast: only a forced throttle throttles here.
        ls_sim = LightspeedSimulator(
            drip_rate=1000,
            balance_sign=BalanceSign(sign_),
            faults=Faults(lost_answer_hang_s=3600.0),
            code_lookup_interval_s=0,
        )
        pos_wire = Wire(httpx.ASGITransport(app=ls_sim.app))
        pos_client = LightspeedClient(
            ls_sim.account_id,
            ls_sim.client_id,
            ls_sim.client_secret,
            MemoryTokenStore(),
            initial_refresh_token=ls_sim.issue_refresh_token(),
            base_url="https://ls.sim",
            token_url="https://ls.sim/auth/oauth/token",
            balance_sign=BalanceSign(sign_),
            sale_setup=SaleSetup(**ls_sim.correct_set_up()),
            timeout=CLIENT_TIMEOUT,
            transport=pos_wire,
        )
        pos_client._sleep = waits
    else:
        onsite_sim = OnSiteSimulator(Faults(lost_answer_hang_s=3600.0))
        pos_wire = Wire(httpx.ASGITransport(app=onsite_sim.app))
        pos_client = OnSiteClient(
            "https://onsite.sim:9630",
            "onsite",
            "onsite-sandbox",
            "com.example.giftsync",
            "giftsync-sandbox-pappid",
            timeout=CLIENT_TIMEOUT,
            retry_base_delay=0.0,
            transport=pos_wire,
            **onsite_sim.correct_set_up(),
        )
    pos = build_pos(settings, Clients(shopify=shop, pos=pos_client), runtime.sessions)
    assert pos is not None
    omni = OmniSync(runtime.sessions, settings, shop, pos)
    runtime.omni = omni
    install_features(runtime)
    pollers = runtime.pollers
    assert pollers is not None
    flow = Omni(
        runtime, shop_sim, shop, pos_kind, ls_sim, onsite_sim, pos_client, pos, omni, pollers
    )
    try:
        yield OmniRig(flow, engine, shop_wire, pos_wire, waits)
    finally:
        if beside is None:
            await shop.aclose()
        await pos_client.aclose()
