"""Money conservation, property-based (issue 7): random histories never create or lose a cent.

A hypothesis state machine drives one whole giftsync (real PostgreSQL; the Shopify, Vii and
Lightspeed R-Series simulators sharing one shop) through random sequences of what shoppers,
shop staff, Shopify and the worker do: Vii cards applied, re-sized, released, expired, paid
with, refunded and cancelled; Vii spent elsewhere; omni cards sold in store and online, spent
and reloaded on either side, overdrawn on both at once; webhooks duplicated and reordered;
jobs run, crashed mid-way and re-run after their lease, upstream answers lost after the write
applied; pollers and reconciles at any moment.

The machine keeps its own model of where the money should be. After "settling" (every webhook
delivered, every job run, pollers and a reconcile until one repairs nothing) the simulators
must agree with it to the cent:
- each Vii card: balance = initial - captured - spent elsewhere; open holds exactly those of
  the shadow cards still applied, each at least what its Shopify card can spend;
- each shadow card: captured exactly what Shopify charged; its Shopify card live only while
  applied, at exactly the applied amount; refunds after capture are findings for staff;
- each omni card: Shopify balance = POS balance = initial - spends + reloads on either side
  (0, with an overdraft finding, when both sides spent more than there was);
- every upstream move giftsync made is one ledger entry with the same key and amount, and
  every ledger move reached its upstream exactly once (or was refused and recorded so);
- no open finding the model does not expect, and no job left queued, running or dead.
At every step, settled or not: money spendable on a shadow card's Shopify card is held on Vii.

Each example runs on its own event loop (the rules are synchronous), with its own engine.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from functools import wraps
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from app.clients.shopify import idempotency_key_from_note
from app.money import from_minor, to_minor
from tests.conservation_support import World, build_world

T = TypeVar("T")

VII_CARDS = (
    ("6280001111110001", "1111", 8_000),
    ("6280002222220002", "2222", 15_000),
    ("6280003333330003", "3333", 4_000),
)
MAX_LOST_ANSWER_STEPS = 2
"""Each lost answer costs a client timeout; a couple per history is plenty."""
STEPS_BETWEEN_SETTLES = 5
"""Settling is the slow step (a full reconcile); most steps should act, not wait."""
PERCENT = st.integers(min_value=1, max_value=100)
VII_INDEX = st.integers(min_value=0, max_value=len(VII_CARDS) - 1)
CART = st.integers(min_value=100, max_value=20_000)
REPEATS = ("once", "same_id", "same_event", "again")


# --- the model ----------------------------------------------------------------------------------


@dataclass
class ViiCard:
    number: str
    pin: str
    initial_minor: int
    spent_elsewhere_minor: int = 0
    captured_minor: int = 0


@dataclass
class Shadow:
    token: str
    vii: int
    code: str
    gid: str
    shadow_id: str
    card_id: str
    applied_minor: int
    state: str = "applied"
    """applied | released | expired | paid | cancelled (model words; see DB_STATE)."""
    charged_minor: int = 0


DB_STATE = {
    "applied": "applied",
    "released": "released",
    "expired": "expired",
    "paid": "captured",
    "cancelled": "released",
}


@dataclass
class OmniCard:
    total_minor: int
    serial: str | None = None
    pos_id: str | None = None
    gid: str | None = None
    overdrawn: bool = False


@dataclass
class Payment:
    kind: str  # "shadow" | "omni"
    index: int
    amount_minor: int
    sale: dict[str, Any]
    refunds: list[tuple[str, int]] = field(default_factory=list)
    """(refund transaction id, amount)."""

    @property
    def refundable_minor(self) -> int:
        return self.amount_minor - sum(amount for _, amount in self.refunds)


@dataclass
class Order:
    gid: str
    legacy_id: int
    paid_payload: dict[str, Any]
    payments: list[Payment]
    charge_delivered: bool = False
    may_have_captured: bool = False
    cancelled: bool = False


@dataclass
class Webhook:
    topic: str
    payload: dict[str, Any]
    order: int | None


def minor(text: str | Decimal) -> int:
    return to_minor(Decimal(str(text)))


def money(amount_minor: int) -> Decimal:
    return from_minor(amount_minor)


def step(method: Callable[..., T]) -> Callable[..., T]:
    """A rule: afterwards, learn the links giftsync made; remember failure for teardown."""

    @wraps(method)
    def wrapper(self: ConservationMachine, *args: Any, **kwargs: Any) -> T:
        self.steps_since_settle += 1
        try:
            result = method(self, *args, **kwargs)
            self.run(self._resolve_links())
            return result
        except BaseException:
            self.broken = True
            raise

    return wrapper


class ConservationMachine(RuleBasedStateMachine):
    database_url: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        self.world: World = self.run(build_world(self.database_url))
        self.vii = [ViiCard(number, pin, initial) for number, pin, initial in VII_CARDS]
        for card in self.vii:
            self.world.vii_sim.add_card(card.number, card.pin, money(card.initial_minor))
        self.shadows: list[Shadow] = []
        self.omni: list[OmniCard] = []
        self.orders: list[Order] = []
        self.pending: list[Webhook] = []
        self.completed_tokens: set[str] = set()
        self.tokens: list[str] = []
        self.lost_answer_steps = 0
        self.steps_since_settle = 0
        self.serials = 0

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)

    def teardown(self) -> None:
        try:
            if not self.broken:
                self.run(self._settle_and_check())
        finally:
            try:
                self.run(self.world.close())
            finally:
                self.runner.close()

    # --- helpers --------------------------------------------------------------------------

    def live_shadows(self) -> list[Shadow]:
        return [s for s in self.shadows if s.state == "applied"]

    def open_tokens(self) -> list[str]:
        return [t for t in self.tokens if t not in self.completed_tokens]

    def jobs_ran(self) -> None:
        """Any job may have been a capture of an order whose charge was delivered."""
        for order in self.orders:
            if order.charge_delivered:
                order.may_have_captured = True

    def shopify_balance_minor(self, gid: str) -> int:
        return minor(self.world.shop_sim.card(gid)["balance"])

    async def _shadow_row(self, gid: str) -> Any:
        [row] = await self.world.rows(
            "SELECT id, card_id, state FROM shadow_cards WHERE shopify_gift_card_id = :gid",
            gid=gid,
        )
        return row

    async def _resolve_omni(self, card: OmniCard) -> None:
        """Fill in the side giftsync created, from its links (None until it has linked)."""
        if card.gid is not None and card.pos_id is not None:
            return
        known, wanted = ("lightspeed", "shopify") if card.gid is None else ("shopify", "lightspeed")
        external = card.pos_id if card.gid is None else card.gid
        found = await self.world.rows(
            """
            SELECT other.external_id FROM card_links mine
            JOIN card_links other ON other.card_id = mine.card_id AND other.system = :wanted
            WHERE mine.system = :known AND mine.external_id = :external
            """,
            known=known,
            wanted=wanted,
            external=external,
        )
        if found:
            if card.gid is None:
                card.gid = found[0].external_id
            else:
                card.pos_id = found[0].external_id

    async def _resolve_links(self) -> None:
        for card in self.omni:
            await self._resolve_omni(card)

    def omni_on(self, side: str) -> list[int]:
        """Omni cards that exist on `side` ("shopify" or "pos") as far as the model knows."""
        return [n for n, c in enumerate(self.omni) if (c.gid if side == "shopify" else c.pos_id)]

    def payable_tokens(self) -> list[str]:
        return sorted(
            {s.token for s in self.live_shadows() if s.applied_minor > 0} - self.completed_tokens
        )

    def resizable(self) -> list[Shadow]:
        return [s for s in self.live_shadows() if s.token not in self.completed_tokens]

    def jobs_due(self) -> bool:
        return bool(
            self.run(
                self.world.rows("SELECT 1 FROM jobs WHERE state IN ('queued', 'running') LIMIT 1")
            )
        )

    # --- the shop on opening: so that every history has cards to work with -----------------

    @initialize(
        in_store=st.lists(st.integers(100, 10_000), min_size=1, max_size=2),
        online=st.lists(st.integers(100, 10_000), max_size=1),
    )
    @step
    def open_the_shop(self, in_store: list[int], online: list[int]) -> None:
        """Omni cards sold before the first step, linked by the pollers as usual."""
        for amount in in_store:
            self._sell_in_store(amount)
        for amount in online:
            self._buy_online(amount)
        while self.pending:
            self.run(self._deliver(self.pending.pop(0), "once"))
        self.run(self.world.poll())
        self.run(self.world.drain())

    @initialize(index=VII_INDEX, cart=CART)
    @step
    def first_checkout(self, index: int, cart: int) -> None:
        token = f"co-{len(self.tokens) + 1}"
        self.tokens.append(token)
        self._apply(index, token, cart, pin=True)

    # --- Vii and checkout -----------------------------------------------------------------

    @rule(data=st.data())
    @step
    def vii_spent_elsewhere(self, data: st.DataObject) -> None:
        card = self.vii[data.draw(VII_INDEX, label="Vii card")]
        amount = minor(self.world.vii_sim.available(card.number)) * data.draw(PERCENT) // 100
        if amount > 0:
            self.world.vii_sim.spend(card.number, money(amount))
            card.spent_elsewhere_minor += amount

    @rule(data=st.data())
    @step
    def apply_card(self, data: st.DataObject) -> None:
        """A shopper applies a Vii card (with its PIN) at a checkout, new or already open."""
        index = data.draw(VII_INDEX, label="Vii card")
        reuse = data.draw(st.integers(0, 3), label="checkout (past the open ones: a new one)")
        cart = data.draw(CART, label="cart total (minor units)")
        open_tokens = self.open_tokens()
        if reuse < len(open_tokens):
            token = open_tokens[reuse]
        else:
            token = f"co-{len(self.tokens) + 1}"
            self.tokens.append(token)
        self._apply(index, token, cart, pin=True)

    @precondition(lambda self: bool(self.resizable()))
    @rule(data=st.data())
    @step
    def change_cart(self, data: st.DataObject) -> None:
        """The cart total changed: the checkout calls again with the same token and card."""
        shadow = data.draw(st.sampled_from(self.resizable()), label="shadow card")
        cart = data.draw(CART, label="cart total (minor units)")
        with_pin = data.draw(st.booleans(), label="with the PIN")
        self._apply(shadow.vii, shadow.token, cart, pin=with_pin)

    def _apply(self, index: int, token: str, cart: int, *, pin: bool) -> None:
        card = self.vii[index]
        live = next((s for s in self.live_shadows() if s.token == token and s.vii == index), None)
        available_before = minor(self.world.vii_sim.available(card.number))
        response = self.run(self.world.apply(card.number, card.pin if pin else None, cart, token))
        body = response.json()
        event(f"apply ({'same checkout and card' if live else 'new'}): {response.status_code}")
        if live is not None:
            if response.status_code == 409:
                assert not pin and body["code"] == "pin_required", body
                assert self.shopify_balance_minor(live.gid) == live.applied_minor
                return
            assert response.status_code == 200, body
            assert body["shopifyGiftCardCode"] == live.code
            live.applied_minor = minor(body["amountApplied"])
            assert 0 < live.applied_minor <= cart
            assert self.shopify_balance_minor(live.gid) == live.applied_minor
            return
        if not pin:
            assert response.status_code == 409 and body["code"] == "pin_required", body
            return
        if available_before == 0:
            assert response.status_code == 402 and body["code"] == "card_empty", body
            return
        assert response.status_code == 200, body
        assert minor(body["viiBalance"]) == available_before
        applied = minor(body["amountApplied"])
        assert applied == min(available_before, cart)
        self._new_shadow(index, token, body)

    def _new_shadow(self, index: int, token: str, body: dict[str, Any]) -> None:
        code = body["shopifyGiftCardCode"]
        gid = next(
            self.world.shop_sim.card(card_id)["id"]
            for card_id in self.world.shop_sim.shop.gift_cards
            if self.world.shop_sim.card(card_id)["code"].lower() == code.lower()
        )
        row = self.run(self._shadow_row(gid))
        applied = minor(body["amountApplied"])
        assert self.shopify_balance_minor(gid) == applied
        self.shadows.append(Shadow(token, index, code, gid, str(row.id), str(row.card_id), applied))

    @precondition(lambda self: self.lost_answer_steps < MAX_LOST_ANSWER_STEPS)
    @rule(index=VII_INDEX, cart=CART, upstream=st.sampled_from(["vii", "shopify"]))
    @step
    def apply_losing_an_answer(self, index: int, cart: int, upstream: str) -> None:
        """Apply while an upstream applies the write and loses its answer.

        Vii's lost hold makes a 503 whose Undo job frees the hold; Shopify's lost create is
        found again by its code, so the shopper still gets the card.
        """
        self.lost_answer_steps += 1
        card = self.vii[index]
        token = f"co-{len(self.tokens) + 1}"
        self.tokens.append(token)
        available_before = minor(self.world.vii_sim.available(card.number))
        sim = self.world.vii_sim if upstream == "vii" else self.world.shop_sim
        sim.faults.lose_answer_rate = 1.0
        try:
            response = self.run(self.world.apply(card.number, card.pin, cart, token))
        finally:
            sim.faults.lose_answer_rate = 0.0
        body = response.json()
        if available_before == 0:
            assert response.status_code == 402, body
        elif upstream == "vii":
            assert response.status_code == 503 and body["code"] == "vii_unavailable", body
        else:
            assert response.status_code == 200, body
            self._new_shadow(index, token, body)

    @precondition(lambda self: any(s.state in ("applied", "released") for s in self.shadows))
    @rule(data=st.data())
    @step
    def abandon(self, data: st.DataObject) -> None:
        """The shopper removes the card (maybe again: release is idempotent), or it expires."""
        live = self.live_shadows()
        if live and not data.draw(st.booleans(), label="a released card again"):
            shadow = data.draw(st.sampled_from(live), label="shadow card")
        else:
            released = [s for s in self.shadows if s.state == "released"]
            shadow = data.draw(st.sampled_from(released or live), label="shadow card")
        if shadow.state == "applied" and data.draw(st.booleans(), label="expires"):
            assert self.run(self.world.expire(shadow.shadow_id)) == 1
            shadow.state = "expired"
            return
        response = self.run(self.world.release(shadow.token, shadow.code))
        assert response.status_code == 200 and response.json() == {"released": True}
        shadow.state = "released"

    # --- orders -----------------------------------------------------------------------------

    @precondition(
        lambda self: (
            bool(self.payable_tokens())
            or any(self.omni[n].total_minor > 0 for n in self.omni_on("shopify"))
        )
    )
    @rule(data=st.data())
    @step
    def checkout_order(self, data: st.DataObject) -> None:
        """An order paid with the checkout's shadow cards and/or an omni card."""
        payments: list[tuple[str, int, int]] = []
        tokens = self.payable_tokens()
        if tokens and not data.draw(st.booleans(), label="no shadow cards"):
            token = data.draw(st.sampled_from(tokens), label="checkout")
            for n, shadow in enumerate(self.shadows):
                if shadow.token == token and shadow.state == "applied":
                    amount = shadow.applied_minor
                    if data.draw(st.booleans(), label="not all of it"):
                        amount = amount * data.draw(st.integers(1, 99), label="percent") // 100
                    if amount > 0:
                        payments.append(("shadow", n, amount))
        online = [n for n in self.omni_on("shopify") if self.omni[n].total_minor > 0]
        if online and not data.draw(st.booleans(), label="no omni card"):
            n = data.draw(st.sampled_from(online), label="omni card")
            card = self.omni[n]
            assert card.gid is not None
            spendable = min(self.shopify_balance_minor(card.gid), card.total_minor)
            amount = spendable * data.draw(PERCENT) // 100
            if amount > 0:
                payments.append(("omni", n, amount))
        event(f"order paid with: {', '.join(sorted({k for k, _, _ in payments})) or 'nothing'}")
        if not payments:
            return
        gids = [
            self.shadows[n].gid if kind == "shadow" else self.omni[n].gid for kind, n, _ in payments
        ]
        order = self.world.shop_sim.create_order(
            [(str(gid), money(amount)) for gid, (_, _, amount) in zip(gids, payments, strict=True)]
        )
        sales = order["webhooks"]["order_transactions/create"]
        model = Order(
            order["id"],
            order["legacy_id"],
            order["webhooks"]["orders/paid"],
            [
                Payment(kind, n, amount, sale)
                for (kind, n, amount), sale in zip(payments, sales, strict=True)
            ],
        )
        self.orders.append(model)
        number = len(self.orders) - 1
        for kind, n, amount in payments:
            if kind == "shadow":
                shadow = self.shadows[n]
                shadow.state, shadow.charged_minor = "paid", amount
                self.completed_tokens.add(shadow.token)
            else:
                self.omni[n].total_minor -= amount
        self.pending.append(Webhook("orders/paid", model.paid_payload, number))
        self.pending.extend(Webhook("order_transactions/create", s, number) for s in sales)

    @precondition(
        lambda self: any(
            p.refundable_minor > 0 for o in self.orders if not o.cancelled for p in o.payments
        )
    )
    @rule(data=st.data())
    @step
    def refund(self, data: st.DataObject) -> None:
        """Part of a paid order goes back onto the gift card it was paid with."""
        choices = [
            (o, p)
            for o in self.orders
            if not o.cancelled
            for p in o.payments
            if p.refundable_minor > 0
        ]
        order, payment = data.draw(st.sampled_from(choices), label="payment")
        amount = max(1, payment.refundable_minor * data.draw(PERCENT, label="percent") // 100)
        self._refund(order, payment, amount)

    def _refund(self, order: Order, payment: Payment, amount: int) -> None:
        number = self.orders.index(order)
        gid = (
            self.shadows[payment.index].gid
            if payment.kind == "shadow"
            else self.omni[payment.index].gid
        )
        assert gid is not None
        enabled = bool(self.world.shop_sim.card(gid)["enabled"])
        if enabled:
            refund = self.world.shop_sim.refund_to_gift_card(order.gid, gid, money(amount))
            txn_id = refund["transaction_id"].rsplit("/", 1)[-1]
            hooks = refund["webhooks"]
            self.pending.append(Webhook("refunds/create", hooks["refunds/create"], number))
            self.pending.extend(
                Webhook("order_transactions/create", p, number)
                for p in hooks["order_transactions/create"]
            )
        else:
            # Shopify refuses a refund onto a deactivated card; the shop's tooling may still
            # report one, so the webhooks are built from the sale, as Shopify would send them.
            txn = self.world.shop_sim.shop.new_id()
            txn_id = str(txn)
            refund_txn = {
                **payment.sale,
                "id": txn,
                "kind": "refund",
                "amount": f"{money(amount):.2f}",
                "parent_id": payment.sale["id"],
            }
            refund_body = {
                "id": self.world.shop_sim.shop.new_id(),
                "order_id": order.legacy_id,
                "transactions": [refund_txn],
            }
            self.pending.append(Webhook("refunds/create", refund_body, number))
            self.pending.append(Webhook("order_transactions/create", refund_txn, number))
        payment.refunds.append((txn_id, amount))
        event(f"refund to {payment.kind} card ({'enabled' if enabled else 'deactivated'})")
        if payment.kind == "omni":
            self.omni[payment.index].total_minor += amount

    @precondition(
        lambda self: any(
            not o.cancelled
            and not o.may_have_captured
            and any(p.kind == "shadow" for p in o.payments)
            for o in self.orders
        )
    )
    @rule(data=st.data())
    @step
    def cancel_order(self, data: st.DataObject) -> None:
        """Cancelled before any capture could run: everything is refunded, the holds freed."""
        choices = [
            o
            for o in self.orders
            if not o.cancelled
            and not o.may_have_captured
            and any(p.kind == "shadow" for p in o.payments)
        ]
        order = data.draw(st.sampled_from(choices))
        for payment in order.payments:
            if payment.refundable_minor > 0:
                self._refund(order, payment, payment.refundable_minor)
        order.cancelled = True
        event("order cancelled before capture")
        for payment in order.payments:
            if payment.kind == "shadow":
                self.shadows[payment.index].state = "cancelled"
        self.pending.append(
            Webhook("orders/cancelled", order.paid_payload, self.orders.index(order))
        )

    # --- webhooks and the worker --------------------------------------------------------------

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    @step
    def deliver_webhook(self, data: st.DataObject) -> None:
        """Any pending webhook (so out of order), sometimes delivered twice."""
        pick = data.draw(st.integers(0, len(self.pending) - 1), label="pending webhook")
        repeat = data.draw(st.sampled_from(REPEATS), label="duplicate")
        event(f"webhook delivered out of a queue of {min(len(self.pending), 3)}+: {repeat}")
        self.run(self._deliver(self.pending.pop(pick), repeat))

    async def _deliver(self, hook: Webhook, repeat: str) -> None:
        webhook_id, event_id = uuid.uuid4().hex, uuid.uuid4().hex
        world = self.world
        assert await world.deliver(
            hook.topic, hook.payload, webhook_id=webhook_id, event_id=event_id
        )
        if repeat == "same_id":  # Shopify's retry of the same delivery
            assert not await world.deliver(hook.topic, hook.payload, webhook_id=webhook_id)
        elif repeat == "same_event":  # the same event under another delivery id
            assert not await world.deliver(
                hook.topic, hook.payload, webhook_id=uuid.uuid4().hex, event_id=event_id
            )
        elif repeat == "again":  # a duplicate the inbox cannot tell apart: handlers must
            assert await world.deliver(hook.topic, hook.payload)
        if hook.order is not None and hook.topic in ("orders/paid", "order_transactions/create"):
            self.orders[hook.order].charge_delivered = True

    @rule(one=st.booleans())
    @step
    def run_due_jobs(self, one: bool) -> None:
        """The worker runs its next job, or one pass over all of them."""
        self.run(self.world.run_due(limit=1 if one else 100))
        self.jobs_ran()

    @precondition(lambda self: self.jobs_due())
    @rule(data=st.data())
    @step
    def worker_crashes_mid_job(self, data: st.DataObject) -> None:
        """A worker claims a job, does all its work (or none), and dies before marking it done.

        Its lease runs out; another worker takes the job over now or at some later step.
        """
        pick = data.draw(st.integers(0, 5), label="which job (oldest first)")
        before_doing_it = data.draw(st.booleans(), label="dies before doing it")
        taken_over_now = data.draw(st.booleans(), label="taken over at once")
        kind = self.run(self.world.crash_one_job(pick, run_handler=not before_doing_it))
        event(f"crash {'before' if before_doing_it else 'after'} doing {kind}")
        if taken_over_now:
            self.run(self.world.run_due())
        self.jobs_ran()

    @precondition(lambda self: self.lost_answer_steps < MAX_LOST_ANSWER_STEPS and self.jobs_due())
    @rule(upstream=st.sampled_from(["vii", "shopify", "lightspeed"]), then_the_rest=st.booleans())
    @step
    def job_loses_an_upstream_answer(self, upstream: str, then_the_rest: bool) -> None:
        """The next job's writes to one upstream apply, but their answers never come back."""
        self.lost_answer_steps += 1
        world = self.world
        sim = {"vii": world.vii_sim, "shopify": world.shop_sim, "lightspeed": world.ls_sim}[
            upstream
        ]
        sim.faults.lose_answer_rate = 1.0
        try:
            queue = self.run(world.queue())
            event(f"{upstream} answer lost during {queue[0][0] if queue else 'no job'}")
            self.run(world.run_due(limit=1))
        finally:
            sim.faults.lose_answer_rate = 0.0
        if then_the_rest:
            self.run(world.run_due())
        self.jobs_ran()

    @rule(pos=st.booleans(), shopify=st.booleans())
    @step
    def poll(self, pos: bool, shopify: bool) -> None:
        pollers = self.world.pollers
        if pos:
            self.run(pollers.poll_pos())
        if shopify or not pos:
            self.run(pollers.poll_shopify())

    @precondition(lambda self: self.steps_since_settle >= 2)
    @rule(dry_run=st.booleans(), then_jobs=st.booleans())
    @step
    def reconcile(self, dry_run: bool, then_jobs: bool) -> None:
        """A reconcile at any moment, events still in flight; a dry run writes nothing."""
        if dry_run:
            before = self.run(self.world.fingerprint())
            self.run(self.world.reconcile(dry_run=True))
            assert self.run(self.world.fingerprint()) == before, "a dry run wrote"
            return
        self.run(self.world.reconcile())
        if then_jobs:
            self.run(self.world.run_due())
            self.jobs_ran()

    @precondition(lambda self: self.steps_since_settle >= STEPS_BETWEEN_SETTLES)
    @rule(reconcile_first=st.booleans(), newest_webhooks_first=st.booleans())
    @step
    def settle_and_check(self, reconcile_first: bool, newest_webhooks_first: bool) -> None:
        """Let everything land (reconcile may race the events), then compare with the model."""
        if reconcile_first:
            self.run(self.world.reconcile())
        if newest_webhooks_first:
            self.pending.reverse()
        self.run(self._settle_and_check())

    # --- omni cards ---------------------------------------------------------------------------

    @rule(online=st.booleans(), amount=st.integers(100, 10_000))
    @step
    def new_omni_card(self, online: bool, amount: int) -> None:
        """A gift card sold at the till, or bought in a Shopify order."""
        if online:
            self._buy_online(amount)
        else:
            self._sell_in_store(amount)

    def _sell_in_store(self, amount: int) -> None:
        self.serials += 1
        serial = f"gc{self.serials:06d}{uuid.uuid4().hex[:4]}"
        pos_id = self.world.ls_sim.add_gift_card(serial, money(amount))
        self.omni.append(OmniCard(amount, serial=serial, pos_id=pos_id))

    def _buy_online(self, amount: int) -> None:
        order = self.world.shop_sim.create_order([], [money(amount)])
        self.omni.append(OmniCard(amount, gid=order["purchased_gift_cards"][0]["id"]))
        hooks = order["webhooks"]
        self.pending.append(Webhook("orders/paid", hooks["orders/paid"], None))
        self.pending.extend(
            Webhook("order_transactions/create", p, None)
            for p in hooks["order_transactions/create"]
        )

    @precondition(lambda self: bool(self.omni_on("pos")))
    @rule(data=st.data())
    @step
    def in_store(self, data: st.DataObject) -> None:
        """A POS sale paid with the card, or a top-up paid in cash."""
        card = self.omni[data.draw(st.sampled_from(self.omni_on("pos")), label="omni card")]
        assert card.pos_id is not None
        if data.draw(st.booleans(), label="reload"):
            amount = data.draw(st.integers(100, 5_000), label="amount (minor units)")
            self.world.ls_sim.reload_in_store(card.pos_id, money(amount))
            card.total_minor += amount
            return
        on_pos = minor(self.world.ls_sim.money_on(card.pos_id))
        # Never more than the card holds in all: overdrafts have their own rule.
        amount = min(on_pos, card.total_minor) * data.draw(PERCENT, label="percent") // 100
        if amount > 0:
            self.world.ls_sim.spend_in_store(card.pos_id, money(amount))
            card.total_minor -= amount

    @precondition(lambda self: bool(self.omni_on("shopify")))
    @rule(data=st.data())
    @step
    def adjust_in_shopify(self, data: st.DataObject) -> None:
        """Spent or credited in Shopify with no webhook (admin adjustment, another app)."""
        cards = self.omni_on("shopify")
        card = self.omni[data.draw(st.sampled_from(cards), label="omni card")]
        credit = data.draw(st.booleans(), label="credit")
        percent = data.draw(PERCENT, label="percent")
        assert card.gid is not None
        if credit:
            amount = max(1, 5_000 * percent // 100)
            state = self.world.shop_sim.shop.card(card.gid)
            self.world.shop_sim.shop.move(
                state.id, "credit", money(amount), state.currency, note="manual adjustment"
            )
            card.total_minor += amount
            return
        amount = min(self.shopify_balance_minor(card.gid), card.total_minor) * percent // 100
        if amount > 0:
            self.world.shop_sim.spend(card.gid, money(amount))
            card.total_minor -= amount

    @precondition(
        lambda self: (
            self.steps_since_settle >= STEPS_BETWEEN_SETTLES
            and any(c.gid and c.pos_id for c in self.omni)
        )
    )
    @rule(data=st.data(), first=PERCENT, second=PERCENT, poll_between=st.booleans())
    @step
    def overdraw_on_both_sides(
        self, data: st.DataObject, first: int, second: int, poll_between: bool
    ) -> None:
        """Both sides spend more than the card holds before a merge sees it: both end at 0.

        Each side spends at most what it shows, but together more than the card's total. With
        a poll in between, the first spend's mirror move is then refused by the second. The
        settle right after pins down when the merge sees the shortfall.
        """
        cards = [n for n in self.omni_on("shopify") if self.omni[n].pos_id is not None]
        shown = {
            n: (
                minor(self.world.ls_sim.money_on(str(self.omni[n].pos_id))),
                self.shopify_balance_minor(str(self.omni[n].gid)),
            )
            for n in cards
        }
        # The POS side must hold at least a cent: a card the POS shows at 0 cannot be spent
        # in store, so only Shopify could overdraw it, which is another rule's case.
        cards = [n for n in cards if sum(shown[n]) > self.omni[n].total_minor and shown[n][0] >= 1]
        if not cards:
            return
        number = data.draw(st.sampled_from(cards))
        card = self.omni[number]
        assert card.gid is not None and card.pos_id is not None
        on_pos, on_shopify = shown[number]
        total = card.total_minor
        # The smallest sum that overdraws is total + 1; both shares within what each side shows.
        in_store = max(1, min(on_pos, on_pos * first // 100))
        least_online = max(total + 1 - in_store, 1)
        if least_online > on_shopify:
            in_store = total + 1 - on_shopify
            least_online = on_shopify
        online = least_online + (on_shopify - least_online) * second // 100
        self.world.ls_sim.spend_in_store(card.pos_id, money(in_store))
        if poll_between:
            self.run(self.world.pollers.poll_pos())
        if online > 0:
            self.world.shop_sim.spend(card.gid, money(online))
        assert in_store + online > total
        card.total_minor, card.overdrawn = 0, True
        event(f"overdrawn {'with a refused move' if poll_between else 'between merges'}")
        self.run(self._settle_and_check())

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def spendable_shadow_money_is_held_on_vii(self) -> None:
        """Never free Vii funds while the Shopify card can still be spent (DESIGN 1.B)."""
        try:
            self._check_holds_back_shadow_cards()
        except BaseException:
            self.broken = True
            raise

    def _check_holds_back_shadow_cards(self) -> None:
        rows = self.run(
            self.world.rows(
                "SELECT id, state, hold_code, shopify_gift_card_id FROM shadow_cards "
                "WHERE state <> 'captured'"
            )
        )
        numbers = {s.shadow_id: self.vii[s.vii].number for s in self.shadows}
        for row in rows:
            card = self.world.shop_sim.card(row.shopify_gift_card_id)
            if not card["enabled"] or card["balance"] <= 0:
                continue
            holds = self.world.vii_sim.open_holds(numbers[str(row.id)])
            assert row.hold_code in holds, (
                f"shadow card {row.id} ({row.state}) can spend {card['balance']} in Shopify "
                "but its Vii hold is closed"
            )
            assert holds[row.hold_code] >= card["balance"], (
                f"shadow card {row.id} can spend {card['balance']}, Vii holds "
                f"{holds[row.hold_code]}"
            )

    async def _settle_and_check(self) -> None:
        self.steps_since_settle = 0
        world = self.world
        while self.pending:
            hook = self.pending.pop(0)
            await self._deliver(hook, "once")
        # Ends with a reconcile that repaired nothing and left nothing queued.
        quiet = await world.settle()
        self.jobs_ran()
        assert quiet["findings"] == 0, quiet
        for card in self.vii:
            card.captured_minor = 0
        for shadow in self.shadows:
            if shadow.state == "paid":
                self.vii[shadow.vii].captured_minor += shadow.charged_minor
        await self._check_vii()
        await self._check_shadow_cards()
        await self._check_omni()
        await self._check_findings()
        await self._check_ledger_against_upstreams()

    async def _check_vii(self) -> None:
        sim = self.world.vii_sim
        rows = await self.world.rows(
            "SELECT id, hold_code FROM shadow_cards WHERE state = 'applied'"
        )
        holds_of = {str(r.id): r.hold_code for r in rows}
        for index, card in enumerate(self.vii):
            expected = card.initial_minor - card.captured_minor - card.spent_elsewhere_minor
            assert minor(sim.balance(card.number)) == expected, (
                f"Vii card {index}: balance {sim.balance(card.number)}, expected "
                f"{money(expected)} (initial {money(card.initial_minor)}, captured "
                f"{money(card.captured_minor)}, spent elsewhere "
                f"{money(card.spent_elsewhere_minor)})"
            )
            live = [s for s in self.live_shadows() if s.vii == index]
            open_holds = sim.open_holds(card.number)
            assert set(open_holds) == {holds_of[s.shadow_id] for s in live}, (
                f"Vii card {index}: open holds {open_holds}, live shadow cards "
                f"{[(s.shadow_id, s.applied_minor) for s in live]}"
            )
            for shadow in live:
                assert minor(open_holds[holds_of[shadow.shadow_id]]) >= shadow.applied_minor

    async def _check_shadow_cards(self) -> None:
        rows = {
            str(r.id): r
            for r in await self.world.rows(
                "SELECT id, state, captured_amount_minor, pin_ciphertext IS NULL AS no_pin, "
                "card_number_ciphertext IS NULL AS no_number FROM shadow_cards"
            )
        }
        assert set(rows) == {s.shadow_id for s in self.shadows}, "shadow cards the model never saw"
        for shadow in self.shadows:
            row = rows[shadow.shadow_id]
            card = self.world.shop_sim.card(shadow.gid)
            live = shadow.state == "applied"
            assert row.state == DB_STATE[shadow.state], (shadow, row.state)
            assert card["enabled"] is live, (shadow, card["enabled"])
            assert row.no_pin is not live and row.no_number is not live, shadow
            captured = shadow.charged_minor if shadow.state == "paid" else 0
            assert row.captured_amount_minor == captured, (shadow, row.captured_amount_minor)
            if live:
                assert minor(card["balance"]) == shadow.applied_minor, (shadow, card["balance"])
        known = {s.gid for s in self.shadows}
        for card_id in self.world.shop_sim.shop.gift_cards:
            card = self.world.shop_sim.card(card_id)
            if (card["note"] or "").startswith("shadow:") and card["id"] not in known:
                assert not card["enabled"], f"a live shadow card no checkout has: {card['id']}"

    async def _check_omni(self) -> None:
        for number, card in enumerate(self.omni):
            await self._resolve_omni(card)
            if card.gid is None or card.pos_id is None:
                # Never linked: only an empty card is left alone (there is nothing to sync).
                assert card.total_minor == 0, f"omni card {number} never linked: {card}"
                continue
            shopify = self.world.shop_sim.card(card.gid)
            pos = minor(self.world.ls_sim.money_on(card.pos_id))
            assert shopify["enabled"] and not self.world.ls_sim.cards[card.pos_id].archived
            assert (minor(shopify["balance"]), pos) == (card.total_minor, card.total_minor), (
                f"omni card {number}: Shopify {shopify['balance']}, POS {money(pos)}, "
                f"expected {money(card.total_minor)} ({card})"
            )

    async def _check_findings(self) -> None:
        expected: set[tuple[str, str]] = set()
        for order in self.orders:
            if order.cancelled:
                continue
            for payment in order.payments:
                if payment.kind == "shadow":
                    expected |= {
                        ("refund_needs_staff", f"order:{order.legacy_id}:txn:{txn}")
                        for txn, _ in payment.refunds
                    }
        links = await self.world.rows(
            "SELECT card_id, external_id FROM card_links WHERE system = 'shopify'"
        )
        card_of = {r.external_id: str(r.card_id) for r in links}
        expected |= {
            ("overdraft", f"card:{card_of[c.gid]}") for c in self.omni if c.overdrawn and c.gid
        }
        found = await self.world.rows(
            "SELECT type, subject, evidence, resolved_at FROM findings ORDER BY id"
        )
        open_found = {(f.type, f.subject) for f in found if f.resolved_at is None}
        assert open_found == expected, (
            f"unexpected findings {open_found - expected}, missing {expected - open_found}: "
            f"{[(f.type, f.subject, f.evidence) for f in found]}"
        )
        refunds = {
            f"order:{order.legacy_id}:txn:{txn}": amount
            for order in self.orders
            for payment in order.payments
            for txn, amount in payment.refunds
        }
        for finding in found:
            if finding.type == "refund_needs_staff":
                assert minor(finding.evidence["amount"]) == refunds[finding.subject]

    async def _check_ledger_against_upstreams(self) -> None:
        """Each upstream move giftsync made is one ledger entry, and each ledger move landed once."""
        world = self.world
        ledger = {
            r.idempotency_key: r
            for r in await world.rows(
                "SELECT idempotency_key, system, amount_minor, cause, card_id FROM ledger"
            )
        }
        # Shopify: credits and debits carry the key in their note.
        shop = world.shop_sim.shop
        tagged: Counter[str] = Counter()
        for state in shop.gift_cards.values():
            for txn in state.transactions:
                key = idempotency_key_from_note(txn.note)
                if key is None:
                    continue
                tagged[key] += 1
                entry = ledger.get(key)
                assert entry is not None, f"Shopify move {key} has no ledger entry"
                assert (entry.system, entry.amount_minor) == ("shopify", minor(txn.amount)), (
                    key,
                    entry,
                    txn.amount,
                )
        doubled = {key: n for key, n in tagged.items() if n > 1}
        assert not doubled, f"Shopify moves applied more than once: {doubled}"
        # Lightspeed: every balance move is a sale payment carrying the key as its reference.
        references: Counter[str] = Counter()
        for payment in world.ls_sim.payments.values():
            if payment.remote_reference:
                references[payment.remote_reference] += 1
        doubled = {ref: n for ref, n in references.items() if n > 1}
        assert not doubled, f"Lightspeed moves applied more than once: {doubled}"
        for payment in world.ls_sim.payments.values():
            ref = payment.remote_reference
            if not ref:
                continue
            if ref.startswith("export:shopify:") and ref.endswith(":load"):
                continue  # checked from the ledger side below
            entry = ledger.get(ref)
            assert entry is not None, f"Lightspeed move {ref} has no ledger entry"
            assert (entry.system, entry.amount_minor) == ("lightspeed", -minor(payment.amount)), (
                ref,
                entry,
                payment.amount,
            )
        # The ledger side: every planned move reached its upstream exactly once, or was refused.
        pos_account = {
            str(r.card_id): r.external_id
            for r in await world.rows(
                "SELECT card_id, external_id FROM card_links WHERE system = 'lightspeed'"
            )
        }
        for key, entry in ledger.items():
            refused = f"{key}:refused" in ledger
            if entry.cause in ("merge", "resize") and entry.system == "shopify":
                assert tagged[key] == (0 if refused else 1), (key, tagged[key], refused)
            elif entry.cause == "merge" and entry.system == "lightspeed":
                assert references[key] == (0 if refused else 1), (key, references[key], refused)
            elif entry.cause == "card_created" and key.startswith("export:shopify:"):
                # Sold online: the POS card was loaded once, by a sale giftsync referenced.
                account = pos_account[str(entry.card_id)]
                loads = [
                    p
                    for p in world.ls_sim.payments.values()
                    if p.credit_account_id == account
                    and p.remote_reference.startswith("export:shopify:")
                    and p.remote_reference.endswith(":load")
                ]
                assert [-minor(p.amount) for p in loads] == [entry.amount_minor], (key, loads)
        # Cards giftsync created in Shopify: one per cause, at the value its ledger says.
        created: Counter[str] = Counter()
        for state in shop.gift_cards.values():
            note = state.note or ""
            if note.startswith("shadow:"):
                key = f"{note}:create"
            elif note.startswith("giftsync: lightspeed card "):
                key = f"import:lightspeed:{note.rsplit(' ', 1)[-1]}:create"
            else:
                continue
            created[key] += 1
            if key in ledger:
                assert ledger[key].amount_minor == minor(state.initial_value), (key, state)
            else:
                # Only a checkout that failed after Shopify created its card has no entry.
                assert not state.enabled, f"Shopify card {state.id} ({key}) was never recorded"
        assert all(n == 1 for n in created.values()), created
        # Vii: what giftsync recorded as captured is what Vii took.
        captures: defaultdict[str, int] = defaultdict(int)
        for entry in ledger.values():
            if entry.system == "vii" and entry.cause == "capture":
                captures[str(entry.card_id)] += entry.amount_minor
        for shadow in self.shadows:
            expected = -shadow.charged_minor if shadow.state == "paid" else 0
            assert captures.get(shadow.card_id, 0) == expected, (
                shadow,
                captures.get(shadow.card_id),
            )


@pytest.fixture(autouse=True)
def _database(database_url: str) -> None:
    ConservationMachine.database_url = database_url


TestMoneyConservation = ConservationMachine.TestCase
TestMoneyConservation.settings = settings(
    max_examples=16,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
