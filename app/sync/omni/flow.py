"""Omni gift cards (DESIGN 1.A): one card in Shopify and on the POS, every move mirrored.

Every change, whichever way it is noticed (POS poll, Shopify poll, order webhook, reconcile),
ends in `sync_card`: read what each system holds, run the three-way merge of DESIGN 7 against
the last agreed balance, and in one transaction move the base forward and enqueue one move job
per system that must change. Mirroring is therefore never "copy this event across": a missed
or repeated event cannot double a move, and both sides spending between two polls add up.

Invariants that keep money right:
- A card's merge runs under an advisory lock per card and never while an earlier move of the
  card is unfinished (queued, running or dead): the plan of base version v assumes every move
  planned from v-1 has landed.
- A move the upstream refuses for good (insufficient funds after a concurrent spend, card gone)
  rolls the base back by that move, so the next merge counts the spend it missed, and ends in
  an overdraft finding if the money is not there.
- Cards are created with deterministic identities (the POS serial as the Shopify code; a POS
  serial derived from the Shopify card id), so a create retried after a crash finds its card.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.clients.errors import UpstreamRejected
from app.clients.shopify import (
    CreatedGiftCard,
    GiftCardMove,
    GiftCardTransaction,
    ShopifyCodeTaken,
    ShopifyGiftCard,
    ShopifyInsufficientFunds,
    ShopifyNotFound,
    ShopifyOrder,
)
from app.crypto import card_hash
from app.db import jobs
from app.db.engine import SessionFactory, transaction
from app.db.locks import lock_for_transaction
from app.db.records import add_ledger_entry, open_finding
from app.logging import get_logger
from app.money import from_minor, to_minor
from app.settings import Settings
from app.sync.omni.merge import MergePlan, SystemState, plan_merge
from app.sync.pos import PosCard, PosGiftCards
from app.worker import RetryLater

log = get_logger(__name__)

SHOPIFY = "shopify"
SYNC_JOB = "omni.sync"
MOVE_JOB = "omni.move"
DEACTIVATE_JOB = "omni.deactivate"
NOTIFY_JOB = "omni.notify"

# Shopify and Lightspeed stamp changes to the whole second, and a change can be committed
# after a later one was already stamped: re-reading a little before the cursor costs a few
# no-op merges and never skips a change.
CURSOR_OVERLAP = timedelta(seconds=5)
SHOPIFY_CODE = re.compile(r"[a-z0-9]{8,20}", re.IGNORECASE)
NOTE_MARKER = "giftsync"

LinkStatus = Literal["moved", "already_linked", "skipped"]
SyncStatus = Literal["in_sync", "repaired", "pending", "finding", "not_found"]


class OmniShopify(Protocol):
    """What omni sync needs from Shopify (`app.clients.shopify.ShopifyClient`)."""

    async def create_gift_card(
        self,
        initial_value: Decimal,
        *,
        code: str | None = None,
        note: str | None = None,
        customer_id: str | None = None,
        expires_on: date | None = None,
    ) -> CreatedGiftCard: ...

    async def credit_gift_card(
        self,
        card_id: str,
        amount: Decimal,
        currency: str,
        *,
        idempotency_key: str,
        note: str | None = None,
    ) -> GiftCardMove: ...

    async def debit_gift_card(
        self,
        card_id: str,
        amount: Decimal,
        currency: str,
        *,
        idempotency_key: str,
        note: str | None = None,
    ) -> GiftCardMove: ...

    async def list_gift_card_transactions(
        self, card_id: str, *, max_pages: int = 1
    ) -> list[GiftCardTransaction]: ...

    async def deactivate_gift_card(self, card_id: str) -> ShopifyGiftCard: ...

    async def send_gift_card_notification(self, card_id: str) -> None: ...

    async def get_gift_card(self, card_id: str) -> ShopifyGiftCard | None: ...

    async def find_gift_card_by_code(self, code: str) -> ShopifyGiftCard | None: ...

    async def find_or_create_customer(
        self, email: str, *, first_name: str | None = None, last_name: str | None = None
    ) -> str: ...

    async def get_order(self, order_id: str | int) -> ShopifyOrder | None: ...


@dataclass(frozen=True, slots=True)
class LinkOutcome:
    """What happened to one card offered for linking (poller or backfill)."""

    status: LinkStatus
    card_id: uuid.UUID | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    status: SyncStatus
    plan: MergePlan | None = None


def shopify_state(card: ShopifyGiftCard, *, today: date | None = None) -> SystemState:
    """Shopify's view of a card; an expired card counts as disabled, like a deactivated one."""
    expired = card.expires_on is not None and card.expires_on < (today or datetime.now(UTC).date())
    enabled = card.enabled and card.deactivated_at is None and not expired
    return SystemState(
        system=SHOPIFY,
        balance_minor=to_minor(card.balance),
        status="enabled" if enabled else "disabled",
        currency=card.currency,
    )


def pos_state(card: PosCard, system: str, currency: str) -> SystemState:
    return SystemState(
        system=system, balance_minor=card.balance_minor, status=card.status, currency=currency
    )


def serial_for_shopify_card(prefix: str, shopify_card_id: str, *, key: str) -> str:
    """The POS serial of a card sold online: the prefix, then 16 digits keyed on the card.

    The serial spends the card in store, and Shopify card ids are not secret (order receipts
    carry them), so the digits are an HMAC of the id under CARD_HASH_KEY: unguessable, yet
    deterministic, so a create retried after a crash asks for the same serial and finds the
    card it made. 10^16 values keep two cards' serials apart.
    """
    legacy_id = shopify_card_id.rsplit("/", 1)[-1]
    if not legacy_id:
        raise ValueError("an empty Shopify gift card id")
    digest = hmac.new(key.encode(), f"pos-serial:{legacy_id}".encode(), hashlib.sha256).digest()
    return prefix + str(int.from_bytes(digest[:8], "big") % 10**16).rjust(16, "0")


def _link_note(system: str, external_id: str) -> str:
    return f"{NOTE_MARKER}: {system} card {external_id}"


def _ours(card: ShopifyGiftCard) -> bool:
    """Made by giftsync (a shadow card or an imported POS card), so never exported."""
    return NOTE_MARKER in (card.note or "")


class OmniSync:
    def __init__(
        self,
        sessions: SessionFactory,
        settings: Settings,
        shopify: OmniShopify,
        pos: PosGiftCards,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.shopify = shopify
        self.pos = pos
        self._hash_key = settings.card_hash_key.get_secret_value() if settings.card_hash_key else ""

    @property
    def to_shopify(self) -> bool:
        return self.settings.create_update_shopify_gift_cards

    @property
    def to_pos(self) -> bool:
        return self.settings.download_shopify_gift_cards

    def pos_serial_for(self, shopify_card_id: str) -> str:
        return serial_for_shopify_card(
            self.settings.shopify_serial_prefix, shopify_card_id, key=self._hash_key
        )

    def _serial_made_here(self, serial: str) -> bool:
        prefix = self.settings.shopify_serial_prefix
        return serial.startswith(prefix) and len(serial) == len(prefix) + 16 and serial.isdigit()

    def code_hash(self, code: str) -> str:
        return card_hash(self._hash_key, code.strip().lower())

    # --- linking --------------------------------------------------------------------------

    async def linked_card(self, system: str, external_id: str) -> uuid.UUID | None:
        async with self.sessions() as session:
            found: uuid.UUID | None = await session.scalar(
                text("SELECT card_id FROM card_links WHERE system = :s AND external_id = :e"),
                {"s": system, "e": external_id},
            )
        return found

    async def import_pos_card(
        self, card: PosCard, *, run_id: uuid.UUID | None = None
    ) -> LinkOutcome:
        """Sold in store: create the Shopify card with the same code and the POS balance.

        `run_id`: the backfill run offering the card, so the findings it opens show on the run.
        """
        system = self.pos.system
        if not SHOPIFY_CODE.fullmatch(card.serial):
            async with transaction(self.sessions) as session:
                await open_finding(
                    session,
                    finding_type="unusable_serial",
                    subject=f"{system}:{card.external_id}",
                    card_id=None,
                    evidence={
                        "system": system,
                        "external_id": card.external_id,
                        "serial_last4": card.serial[-4:],
                        "serial_length": len(card.serial),
                        "rule": "Shopify codes are 8-20 characters, a-z and 0-9",
                    },
                    run_id=run_id,
                )
            return LinkOutcome("skipped", reason="unusable_serial")
        if card.status != "enabled":
            return LinkOutcome("skipped", reason="inactive")
        if card.balance_minor <= 0:
            # Shopify cannot create an empty card; the load that follows a POS sale re-offers it.
            return LinkOutcome("skipped", reason="empty")
        async with transaction(self.sessions) as session:
            await lock_for_transaction(session, f"omni-link:{system}:{card.external_id}")
            existing = await session.scalar(
                text("SELECT card_id FROM card_links WHERE system = :s AND external_id = :e"),
                {"s": system, "e": card.external_id},
            )
            if existing is not None:
                return LinkOutcome("already_linked", card_id=existing)
            if self._serial_made_here(card.serial):
                # Sold online, and its export crashed before linking: the export's retry
                # links it; importing it would make a second Shopify card for the same money.
                return LinkOutcome("skipped", reason="made_by_giftsync")
            customer_id, email = await self._shopify_customer(card)
            note = _link_note(system, card.external_id)
            shopify_card = await self._create_or_adopt(card, note, customer_id)
            if shopify_card is None:
                await open_finding(
                    session,
                    finding_type="missing_link",
                    subject=f"{system}:{card.external_id}",
                    card_id=None,
                    evidence={
                        "system": system,
                        "external_id": card.external_id,
                        "serial_last4": card.serial[-4:],
                        "problem": "a different Shopify card already has this code",
                    },
                    run_id=run_id,
                )
                return LinkOutcome("skipped", reason="code_taken")
            base_minor = to_minor(shopify_card.initial_value)
            card_id = await self._insert_link(
                session,
                currency=shopify_card.currency,
                email=email,
                base_minor=base_minor,
                shopify=shopify_card,
                pos_external_id=card.external_id,
                serial=card.serial,
                cause=f"import:{system}:{card.external_id}",
            )
            if customer_id is not None and self.settings.send_gift_card_notifications:
                await jobs.enqueue(
                    session,
                    NOTIFY_JOB,
                    {"shopify_id": shopify_card.id},
                    f"omni:notify:{shopify_card.id}",
                )
            if base_minor != card.balance_minor:
                # Adopted after a crash, and the POS moved since: the merge mirrors it.
                await self._enqueue_sync(session, card_id, "adopted")
        log.info("omni_imported", system=system, card_id=str(card_id))
        return LinkOutcome("moved", card_id=card_id)

    async def _shopify_customer(self, card: PosCard) -> tuple[str | None, str | None]:
        if card.customer_id is None:
            return None, None
        customer = await self.pos.customer(card.customer_id)
        if customer is None:
            return None, None
        email = customer.email.strip().lower()
        if not self.settings.send_gift_card_notifications:
            return None, email
        shopify_customer = await self.shopify.find_or_create_customer(
            email, first_name=customer.first_name, last_name=customer.last_name
        )
        return shopify_customer, email

    async def _create_or_adopt(
        self, card: PosCard, note: str, customer_id: str | None
    ) -> ShopifyGiftCard | None:
        try:
            created = await self.shopify.create_gift_card(
                from_minor(card.balance_minor),
                code=card.serial,
                note=note,
                customer_id=customer_id,
            )
            return created.card
        except ShopifyCodeTaken:
            # Our own earlier attempt that crashed before linking carries our note; a card
            # someone else made with this code is not ours to take over.
            found = await self.shopify.find_gift_card_by_code(card.serial)
            if found is not None and found.note == note:
                return found
            return None

    async def export_shopify_card(
        self, card: ShopifyGiftCard, order: ShopifyOrder | None = None
    ) -> LinkOutcome:
        """Sold online: create the POS card with a prefixed serial, note and shipping name."""
        if _ours(card):
            return LinkOutcome("skipped", reason="made_by_giftsync")
        state = shopify_state(card)
        if state.status != "enabled":
            return LinkOutcome("skipped", reason="inactive")
        if state.balance_minor <= 0:
            return LinkOutcome("skipped", reason="empty")
        system = self.pos.system
        async with transaction(self.sessions) as session:
            await lock_for_transaction(session, f"omni-link:{SHOPIFY}:{card.id}")
            existing = await session.scalar(
                text("SELECT card_id FROM card_links WHERE system = :s AND external_id = :e"),
                {"s": SHOPIFY, "e": card.id},
            )
            if existing is not None:
                return LinkOutcome("already_linked", card_id=existing)
            if order is None and card.order_id is not None:
                order = await self.shopify.get_order(card.order_id)
            serial = self.pos_serial_for(card.id)
            note = f"Shopify gift card {card.last_characters}"
            if order is not None:
                note += f", order {order.name}"
            pos_card = await self.pos.create_card(
                serial,
                state.balance_minor,
                reference=f"export:shopify:{serial}",
                note=note,
                customer_name=order.shipping_name if order is not None else None,
            )
            email = order.customer_email.strip().lower() if order and order.customer_email else None
            card_id = await self._insert_link(
                session,
                currency=card.currency,
                email=email,
                base_minor=pos_card.balance_minor,
                shopify=card,
                pos_external_id=pos_card.external_id,
                serial=serial,
                cause=f"export:shopify:{card.id}",
            )
            if pos_card.balance_minor != state.balance_minor:
                await self._enqueue_sync(session, card_id, "exported")
        log.info("omni_exported", system=system, card_id=str(card_id))
        return LinkOutcome("moved", card_id=card_id)

    async def _insert_link(
        self,
        session: AsyncSession,
        *,
        currency: str,
        email: str | None,
        base_minor: int,
        shopify: ShopifyGiftCard,
        pos_external_id: str,
        serial: str,
        cause: str,
    ) -> uuid.UUID:
        card_id = uuid.uuid4()
        await session.execute(
            text(
                "INSERT INTO gift_cards (id, kind, currency, customer_email) "
                "VALUES (:id, 'omni', :currency, :email)"
            ),
            {"id": card_id, "currency": currency, "email": email},
        )
        links = [
            (SHOPIFY, shopify.id, shopify.last_characters, None),
            (self.pos.system, pos_external_id, serial[-4:], self.code_hash(serial)),
        ]
        if cause.startswith("import:"):
            # The Shopify code is the POS serial: both links answer a serial lookup.
            links[0] = (SHOPIFY, shopify.id, shopify.last_characters, self.code_hash(serial))
        for system, external_id, last4, code_hash in links:
            await session.execute(
                text(
                    """
                    INSERT INTO card_links (card_id, system, external_id, code_last4, code_hash,
                                            last_seen_balance_minor, last_seen_status, last_seen_at)
                    VALUES (:card, :system, :ext, :last4, :hash, :balance, 'enabled', now())
                    """
                ),
                {
                    "card": card_id,
                    "system": system,
                    "ext": external_id,
                    "last4": last4,
                    "hash": code_hash,
                    "balance": base_minor,
                },
            )
        await session.execute(
            text("INSERT INTO sync_base (card_id, balance_minor, version) VALUES (:c, :b, 0)"),
            {"c": card_id, "b": base_minor},
        )
        created_in = self.pos.system if cause.startswith("export:") else SHOPIFY
        await add_ledger_entry(
            session,
            card_id=card_id,
            system=created_in,
            amount_minor=base_minor,
            key=f"{cause}:create",
            cause="card_created",
            detail={"linked_to": SHOPIFY if created_in != SHOPIFY else self.pos.system},
        )
        return card_id

    # --- merging --------------------------------------------------------------------------

    async def read_states(self, session: AsyncSession, card_id: uuid.UUID) -> list[SystemState]:
        """Every linked system's balance and status now; a missing card raises LookupError."""
        links = (
            await session.execute(
                text("SELECT system, external_id FROM card_links WHERE card_id = :c"),
                {"c": card_id},
            )
        ).all()
        systems = {row.system: row.external_id for row in links}
        if SHOPIFY not in systems or self.pos.system not in systems:
            raise LookupError(f"card {card_id} is not linked on both sides")
        shopify_card = await self.shopify.get_gift_card(systems[SHOPIFY])
        if shopify_card is None:
            raise LookupError(f"Shopify card of {card_id} not found")
        pos_card = await self.pos.get_card(systems[self.pos.system])
        if pos_card is None:
            raise LookupError(f"{self.pos.system} card of {card_id} not found")
        return [
            shopify_state(shopify_card),
            pos_state(pos_card, self.pos.system, self.settings.currency),
        ]

    async def sync_card(
        self,
        card_id: uuid.UUID,
        *,
        states: Sequence[SystemState] | None = None,
        dry_run: bool = False,
        run_id: uuid.UUID | None = None,
        expected_version: int | None = None,
    ) -> SyncOutcome:
        """Merge the card's systems and queue the moves; the base moves in the same commit.

        `expected_version`: the base version `states` were read against (reconcile reads in
        bulk, before this lock). If the base moved since, a move planned meanwhile may or may
        not be in those states, so they are dropped and the systems are read again here.
        """
        async with transaction(self.sessions) as session:
            await lock_for_transaction(session, f"omni-card:{card_id}")
            if await self._moves_unfinished(session, card_id):
                return SyncOutcome("pending")
            base = (
                await session.execute(
                    text("SELECT balance_minor, version FROM sync_base WHERE card_id = :c"),
                    {"c": card_id},
                )
            ).one_or_none()
            if base is None:
                return SyncOutcome("not_found")
            if expected_version is not None and base.version != expected_version:
                states = None
            if states is None:
                try:
                    states = await self.read_states(session, card_id)
                except LookupError as exc:
                    if not dry_run:
                        await self._missing_link(session, card_id, str(exc), run_id)
                    return SyncOutcome("not_found")
            plan = plan_merge(str(card_id), base.balance_minor, base.version, states)
            if dry_run:
                return SyncOutcome(_status(plan), plan)
            await self._apply_plan(session, card_id, plan, states, run_id)
        if plan.moves or plan.deactivate:
            log.info(
                "omni_merged",
                card_id=str(card_id),
                target=plan.target_minor,
                moves=len(plan.moves),
                deactivate=list(plan.deactivate),
            )
        return SyncOutcome(_status(plan), plan)

    async def _moves_unfinished(self, session: AsyncSession, card_id: uuid.UUID) -> bool:
        found = await session.scalar(
            text(
                """
                SELECT 1 FROM jobs
                WHERE payload->>'card_id' = :c AND state <> 'done'
                  AND kind IN (:move, :deactivate)
                LIMIT 1
                """
            ),
            {"c": str(card_id), "move": MOVE_JOB, "deactivate": DEACTIVATE_JOB},
        )
        return found is not None

    async def _apply_plan(
        self,
        session: AsyncSession,
        card_id: uuid.UUID,
        plan: MergePlan,
        states: Sequence[SystemState],
        run_id: uuid.UUID | None,
    ) -> None:
        links = {
            row.system: row.external_id
            for row in (
                await session.execute(
                    text("SELECT system, external_id FROM card_links WHERE card_id = :c"),
                    {"c": card_id},
                )
            ).all()
        }
        version = plan.base_version
        for state in states:
            seen = state.balance_minor - plan.base_minor
            if seen and plan.new_base_version != version:
                # What each system did on its own since the last agreement, for the audit.
                await add_ledger_entry(
                    session,
                    card_id=card_id,
                    system=state.system,
                    amount_minor=seen,
                    key=f"seen:{card_id}:v{version}:{state.system}",
                    cause="observed",
                    detail={"base_minor": plan.base_minor, "balance_minor": state.balance_minor},
                )
        for move in plan.moves:
            await add_ledger_entry(
                session,
                card_id=card_id,
                system=move.system,
                amount_minor=move.amount_minor,
                key=move.idempotency_key,
                cause="merge",
                detail={"target_minor": plan.target_minor, "base_version": version},
            )
            await jobs.enqueue(
                session,
                MOVE_JOB,
                {
                    "card_id": str(card_id),
                    "system": move.system,
                    "external_id": links[move.system],
                    "amount_minor": move.amount_minor,
                    "key": move.idempotency_key,
                    "currency": self.settings.currency,
                },
                move.idempotency_key,
            )
        for system in plan.deactivate:
            key = f"merge:{card_id}:v{version}:{system}:deactivate"
            await jobs.enqueue(
                session,
                DEACTIVATE_JOB,
                {"card_id": str(card_id), "system": system, "external_id": links[system]},
                key,
            )
        for finding in plan.findings:
            await open_finding(
                session,
                finding_type=finding.type,
                subject=f"card:{card_id}",
                card_id=card_id,
                evidence={**finding.evidence, "run_id": str(run_id) if run_id else None},
                run_id=run_id,
            )
        disabled_everywhere = plan.deactivate or all(s.status == "disabled" for s in states)
        await session.execute(
            text(
                """
                UPDATE sync_base SET balance_minor = :b, version = :v, updated_at = now()
                WHERE card_id = :c
                """
            ),
            {"b": plan.target_minor, "v": plan.new_base_version, "c": card_id},
        )
        for state in states:
            await session.execute(
                text(
                    """
                    UPDATE card_links SET last_seen_balance_minor = :b, last_seen_status = :s,
                                          last_seen_at = now()
                    WHERE card_id = :c AND system = :sys
                    """
                ),
                {"b": state.balance_minor, "s": state.status, "c": card_id, "sys": state.system},
            )
        if disabled_everywhere:
            await session.execute(
                text("UPDATE gift_cards SET state = 'deactivated' WHERE id = :c"), {"c": card_id}
            )

    async def _missing_link(
        self, session: AsyncSession, card_id: uuid.UUID, problem: str, run_id: uuid.UUID | None
    ) -> None:
        await open_finding(
            session,
            finding_type="missing_link",
            subject=f"card:{card_id}",
            card_id=card_id,
            evidence={"problem": problem, "run_id": str(run_id) if run_id else None},
            run_id=run_id,
        )

    async def _enqueue_sync(self, session: AsyncSession, card_id: uuid.UUID, why: str) -> None:
        await jobs.enqueue(
            session,
            SYNC_JOB,
            {"card_id": str(card_id), "why": why},
            f"omni:sync:{card_id}:{uuid.uuid4().hex}",
        )

    async def request_sync(self, card_id: uuid.UUID, why: str) -> None:
        async with transaction(self.sessions) as session:
            await self._enqueue_sync(session, card_id, why)

    # --- jobs -----------------------------------------------------------------------------

    async def run_sync(self, payload: dict[str, Any]) -> None:
        outcome = await self.sync_card(uuid.UUID(payload["card_id"]))
        if outcome.status == "pending":
            # Earlier moves are still landing; merge again once they have.
            raise RetryLater("moves of this card are still running", timedelta(seconds=1))

    async def run_move(self, payload: dict[str, Any]) -> None:
        """Apply one planned move, once; a refusal for good rolls the base back."""
        system = payload["system"]
        external_id = payload["external_id"]
        amount_minor = int(payload["amount_minor"])
        key = payload["key"]
        try:
            if system == SHOPIFY:
                await self._shopify_move(external_id, amount_minor, key, payload["currency"])
            else:
                await self.pos.move(external_id, amount_minor, reference=key)
        except (ShopifyInsufficientFunds, ShopifyNotFound, UpstreamRejected) as exc:
            await self._refused(uuid.UUID(payload["card_id"]), system, amount_minor, key, exc)

    async def _shopify_move(self, card_id: str, amount_minor: int, key: str, currency: str) -> None:
        # A job re-run after a crash may follow a move that landed: look before sending.
        recent = await self.shopify.list_gift_card_transactions(card_id)
        if any(transaction.idempotency_key == key for transaction in recent):
            return
        amount = from_minor(abs(amount_minor))
        note = "giftsync: mirrored from the store"
        if amount_minor > 0:
            await self.shopify.credit_gift_card(
                card_id, amount, currency, idempotency_key=key, note=note
            )
        else:
            await self.shopify.debit_gift_card(
                card_id, amount, currency, idempotency_key=key, note=note
            )

    async def _refused(
        self,
        card_id: uuid.UUID,
        system: str,
        amount_minor: int,
        key: str,
        error: Exception,
    ) -> None:
        log.warning(
            "omni_move_refused",
            card_id=str(card_id),
            system=system,
            amount=amount_minor,
            error=type(error).__name__,
        )
        async with transaction(self.sessions) as session:
            await lock_for_transaction(session, f"omni-card:{card_id}")
            if not await add_ledger_entry(
                session,
                card_id=card_id,
                system=system,
                amount_minor=-amount_minor,
                key=f"{key}:refused",
                cause="move_refused",
                detail={"error": type(error).__name__, "message": str(error)[:300]},
            ):
                return
            await session.execute(
                text(
                    """
                    UPDATE sync_base SET balance_minor = balance_minor - :m, version = version + 1,
                                         updated_at = now()
                    WHERE card_id = :c
                    """
                ),
                {"m": amount_minor, "c": card_id},
            )
            if system == SHOPIFY or self.pos.live_reads:
                # Merge again on fresh reads. A POS read from a projection would repeat the
                # refused plan; its poller sees the change that caused the refusal and merges.
                await self._enqueue_sync(session, card_id, "move_refused")

    async def run_deactivate(self, payload: dict[str, Any]) -> None:
        system = payload["system"]
        external_id = payload["external_id"]
        if system == SHOPIFY:
            try:
                await self.shopify.deactivate_gift_card(external_id)
            except ShopifyNotFound:
                return
        else:
            await self.pos.deactivate(
                external_id, reference=f"deactivate:{payload['card_id']}:{system}"
            )

    async def run_notify(self, payload: dict[str, Any]) -> None:
        await self.shopify.send_gift_card_notification(payload["shopify_id"])


def _status(plan: MergePlan) -> SyncStatus:
    if plan.findings:
        return "finding"
    if plan.moves or plan.deactivate:
        return "repaired"
    return "in_sync"
