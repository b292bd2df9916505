"""Lightspeed OnSite behind `PosGiftCards`, over a balance projection kept in PostgreSQL.

OnSite has no gift card resource: a card is a serial on "Gift Card" invoice lines (sold or
loaded) and "Gift Card" invoice payments (redeemed). Asking OnSite for one card's balance means
reading every invoice ever written, so this adapter keeps a projection instead:

- `pos_seen_moves` holds every gift card line and payment read, once, under an id built from
  what the poll reads (`{invoice_id}:line:{n}` / `{invoice_id}:payment:{n}`, n counting the
  gift card lines or payments of that invoice from 1), with its signed effect on the balance;
- `pos_card_balances` holds each card's balance, which is the sum of its seen moves. The serial
  is stored only as a keyed hash (the card's `external_id`), its last 4 and a sealed copy for
  the writes that need it.

Each invoice is applied in its own transaction, under an advisory lock on the invoice, so a
crash, a second poll or two pollers at once never count a move twice. A move seen again with
another amount or serial (an invoice edited on the till) is corrected by the difference. A gift
card line that disappears from an edited invoice is not noticed; invoices that are edited that
way are rare, and reconcile reads cards through `iter_cards`, which logs any drift.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from app.clients.onsite import (
    OnSiteClient,
    OnSiteError,
    OnSiteGiftCardLine,
    OnSiteGiftCardPayment,
    OnSiteInvoice,
    OnSiteUnavailable,
)
from app.crypto import SecretBox, card_hash
from app.db import pos_projection as projection
from app.db.engine import SessionFactory, transaction
from app.db.locks import lock_for_transaction
from app.db.pos_projection import ProjectedCard
from app.logging import get_logger
from app.money import CENT, from_minor, to_minor
from app.sync.pos.protocol import PosCard, PosChange, PosCustomer, PosSystem

log = get_logger(__name__)

SYSTEM: PosSystem = "onsite"
PAGE_SIZE = 500


@dataclass(frozen=True)
class _Move:
    move_id: str
    serial: str = field(repr=False)
    code_hash: str
    amount_minor: int
    """The signed effect on the card's balance: a line loads (+), a payment redeems (-)."""
    sold: bool
    """A gift card line: the invoice's customer is the card's owner (a payer is not)."""


class OnSitePos:
    """`PosGiftCards` over an `OnSiteClient` and the projection tables."""

    system: PosSystem = SYSTEM
    live_reads: bool = False

    def __init__(
        self,
        client: OnSiteClient,
        sessions: SessionFactory,
        *,
        card_hash_key: str,
        secret_box: SecretBox,
    ) -> None:
        self._client = client
        self._sessions = sessions
        self._hash_key = card_hash_key
        self._box = secret_box

    # ---- reads ----

    async def changes_since(self, since: datetime | None) -> AsyncIterator[PosChange]:
        """Apply every invoice modified at or after `since` to the projection, in time order.

        Each card with a gift card move on an invoice read is reported, whether or not the move
        was new: a caller that crashed after this committed a move but before it handled the
        change still hears of the card on its next, overlapping poll. `since=None` reads the
        whole history, which also rebuilds a lost projection.
        """
        async for invoice in self._client.iter_invoices_since(since):
            for code_hash in await self._apply_invoice(invoice):
                yield PosChange(external_id=code_hash, changed_at=invoice.modified_at)

    async def iter_cards(self) -> AsyncIterator[PosCard]:
        """Every card, after the projection has caught up with the whole invoice history.

        Balances are the projection's (the same numbers `get_card` answers with). A card whose
        balance recomputed from this read differs is logged as drift: a line removed from an
        edited invoice, or an invoice the offset paging skipped while the till was writing.
        """
        recomputed: dict[str, int] = defaultdict(int)
        async for invoice in self._client.iter_invoices_since(None):
            await self._apply_invoice(invoice)
            for move in self._moves(invoice):
                recomputed[move.code_hash] += move.amount_minor
        after = ""
        while True:
            async with self._sessions() as session:
                rows = await projection.page(session, SYSTEM, after, PAGE_SIZE)
            for row in rows:
                if recomputed.get(row.code_hash, 0) != row.balance_minor:
                    log.warning(
                        "onsite_projection_drift",
                        code_last4=row.code_last4,
                        projected_minor=row.balance_minor,
                        recomputed_minor=recomputed.get(row.code_hash, 0),
                    )
                yield self._card(row)
            if len(rows) < PAGE_SIZE:
                return
            after = rows[-1].code_hash

    async def get_card(self, external_id: str) -> PosCard | None:
        row = await self._row(external_id)
        return self._card(row) if row is not None else None

    async def find_by_serial(self, serial: str) -> PosCard | None:
        if not serial.strip():
            return None
        return await self.get_card(self._hash(serial))

    async def customer(self, customer_id: str) -> PosCustomer | None:
        try:
            found = await self._client.get_customer(customer_id)
        except ValueError:
            return None  # not an id OnSite could have issued
        if found is None or found.email is None:
            return None
        return PosCustomer(
            email=found.email, first_name=found.first_name, last_name=found.last_name
        )

    # ---- writes ----

    async def create_card(
        self,
        serial: str,
        balance_minor: int,
        *,
        reference: str,
        note: str | None = None,
        customer_name: str | None = None,
    ) -> PosCard:
        """Sell the card on an invoice: one Gift Card line of `balance_minor`, tagged `reference`.

        The client looks the reference up before sending, so a retry returns the same invoice;
        the line is recorded as seen, so the next poll does not count it again. OnSite invoices
        carry a customer id, not a name, so `customer_name` goes on the invoice's notes. A card
        with nothing on it has no invoice to live on: it exists only in the projection until
        a till first loads it.
        """
        if balance_minor < 0:
            raise ValueError("a new card's balance must not be negative")
        if not serial.strip():
            raise ValueError("serial must not be empty")
        if balance_minor > 0:
            notes = "; ".join(
                part for part in (note, customer_name and f"For {customer_name}") if part
            )
            amount = from_minor(balance_minor)
            invoice_id = await self._client.post_balance_move(
                serial, amount, reference=reference, note=notes or None
            )
            await self._record(invoice_id, reference, OnSiteGiftCardLine(serial, amount))
        else:
            code_hash = self._hash(serial)
            async with transaction(self._sessions) as session:
                await self._upsert_cards(
                    session, {code_hash: serial}, {}, datetime.now(UTC), customer_id=None
                )
        card = await self.find_by_serial(serial)
        if card is None:  # pragma: no cover - recorded just above
            raise AssertionError("a card just recorded is missing from the projection")
        return card

    async def move(self, external_id: str, amount_minor: int, *, reference: str) -> None:
        """Load (> 0) or redeem (< 0) as one invoice per reference; zero changes nothing."""
        if amount_minor == 0:
            return
        serial = await self._serial(external_id)
        amount = from_minor(abs(amount_minor))
        signed = amount if amount_minor > 0 else -amount
        invoice_id = await self._client.post_balance_move(serial, signed, reference=reference)
        # The client writes either move as one gift card line (+ loads, - takes off).
        await self._record(invoice_id, reference, OnSiteGiftCardLine(serial, signed))

    async def deactivate(self, external_id: str, *, reference: str) -> None:
        """Redeem what is left to zero (reference `reference`), then mark the card disabled.

        OnSite has no card status to switch off: a till accepts any serial that has money on
        it. Taking the money off is the only way to make the card unusable in store; the
        projection's `disabled` keeps giftsync from treating it as live. What is left is
        recomputed from the whole invoice history, not taken from the projection, which may
        lag a till that loaded or spent the card since the last poll. The redemption is a real
        balance move and shows in `changes_since` like any other. A card already disabled is
        left alone, so repeating this costs nothing.
        """
        row = await self._row(external_id)
        if row is None:
            raise OnSiteError("OnSite has no such gift card", code="unknown_card")
        if row.status == "disabled":
            return
        serial = self._open(row)
        left = await self._client.gift_card_balance(serial)
        if left is not None and left > 0:
            # A retry after a crash finds this reference's invoice and sends nothing new.
            invoice_id = await self._client.post_balance_move(serial, -left, reference=reference)
            await self._record(invoice_id, reference, OnSiteGiftCardLine(serial, -left))
        async with transaction(self._sessions) as session:
            await projection.disable(session, SYSTEM, row.code_hash)

    # ---- the projection ----

    def _hash(self, serial: str) -> str:
        return card_hash(self._hash_key, serial)

    def _moves(self, invoice: OnSiteInvoice) -> list[_Move]:
        moves = [
            _Move(
                move_id=f"{invoice.invoice_id}:line:{number}",
                serial=line.serial,
                code_hash=self._hash(line.serial),
                amount_minor=_minor(line.amount, invoice.invoice_id),
                sold=True,
            )
            for number, line in enumerate(invoice.lines, start=1)
        ]
        moves.extend(
            _Move(
                move_id=f"{invoice.invoice_id}:payment:{number}",
                serial=payment.serial,
                code_hash=self._hash(payment.serial),
                amount_minor=-_minor(payment.amount, invoice.invoice_id),
                sold=False,
            )
            for number, payment in enumerate(invoice.payments, start=1)
        )
        return moves

    async def _apply_invoice(self, invoice: OnSiteInvoice) -> list[str]:
        """Count each of the invoice's moves once; the code hashes of the cards it touches."""
        moves = self._moves(invoice)
        if not moves:
            return []
        deltas: dict[str, int] = defaultdict(int)
        async with transaction(self._sessions) as session:
            # Serialises appliers of one invoice (pollers, a write recording its own invoice),
            # so reading a stored move and correcting it cannot interleave.
            await lock_for_transaction(session, f"pos:{SYSTEM}:invoice:{invoice.invoice_id}")
            stored = await projection.seen_moves(session, SYSTEM, [m.move_id for m in moves])
            for move in moves:
                old = stored.get(move.move_id)
                if old is None:
                    if await projection.insert_seen_move(
                        session, SYSTEM, move.move_id, move.code_hash, move.amount_minor
                    ):
                        deltas[move.code_hash] += move.amount_minor
                elif (old.code_hash, old.amount_minor) != (move.code_hash, move.amount_minor):
                    deltas[old.code_hash] -= old.amount_minor
                    deltas[move.code_hash] += move.amount_minor
                    await projection.correct_seen_move(
                        session, SYSTEM, move.move_id, move.code_hash, move.amount_minor
                    )
            owner = invoice.customer_id if any(move.sold for move in moves) else None
            await self._upsert_cards(
                session,
                {move.code_hash: move.serial for move in moves},
                deltas,
                invoice.modified_at,
                customer_id=owner,
            )
        touched = dict.fromkeys(move.code_hash for move in moves)
        return list(touched)

    async def _upsert_cards(
        self,
        session: AsyncSession,
        serials: dict[str, str],
        deltas: dict[str, int],
        changed_at: datetime,
        *,
        customer_id: str | None,
    ) -> None:
        """Create missing cards and add the deltas, rows locked in one order (no deadlocks)."""
        for code_hash in sorted(serials.keys() | deltas.keys()):
            delta = deltas.get(code_hash, 0)
            serial = serials.get(code_hash)
            if serial is None:
                # A card a corrected move moved away from: it exists, only its balance changes.
                await projection.add_to_balance(session, SYSTEM, code_hash, delta, changed_at)
                continue
            await projection.upsert_card(
                session,
                system=SYSTEM,
                code_hash=code_hash,
                serial_ciphertext=self._box.seal(serial, _context(code_hash)),
                code_last4=serial[-4:],
                delta=delta,
                customer_id=customer_id,
                changed_at=changed_at,
            )

    async def _record(
        self,
        invoice_id: str,
        reference: str,
        expected: OnSiteGiftCardLine | OnSiteGiftCardPayment,
    ) -> None:
        """Count the invoice giftsync just wrote, exactly as the poll will read it.

        It is read back by its reference, so the seen-move ids and amounts are the poll's own.
        If the read-back fails, the invoice giftsync sent (one gift card line or one payment)
        is recorded instead; a later poll corrects any difference.
        """
        try:
            invoice = await self._client.find_invoice_by_reference(reference)
        except OnSiteUnavailable:
            invoice = None
        if invoice is None or invoice.invoice_id != invoice_id:
            invoice = OnSiteInvoice(
                invoice_id=invoice_id,
                modified_at=datetime.now(UTC),
                customer_id=None,
                reference=reference,
                lines=[expected] if isinstance(expected, OnSiteGiftCardLine) else [],
                payments=[expected] if isinstance(expected, OnSiteGiftCardPayment) else [],
            )
        await self._apply_invoice(invoice)

    async def _row(self, external_id: str) -> ProjectedCard | None:
        async with self._sessions() as session:
            return await projection.get(session, SYSTEM, external_id)

    async def _serial(self, external_id: str) -> str:
        row = await self._row(external_id)
        if row is None:
            raise OnSiteError("OnSite has no such gift card", code="unknown_card")
        return self._open(row)

    def _open(self, row: ProjectedCard) -> str:
        return self._box.open(row.serial_ciphertext, _context(row.code_hash))

    def _card(self, row: ProjectedCard) -> PosCard:
        balance = row.balance_minor
        if balance < 0:
            # OnSite refuses to take a card below zero, so the projection missed a load.
            log.warning("onsite_projection_negative", code_last4=row.code_last4, minor=balance)
            balance = 0
        return PosCard(
            external_id=row.code_hash,
            serial=self._open(row),
            balance_minor=balance,
            status="disabled" if row.status == "disabled" else "enabled",
            customer_id=row.customer_id,
            updated_at=row.changed_at,
        )


def _context(code_hash: str) -> str:
    # Binds the sealed serial to its row: a ciphertext copied to another card will not open.
    return f"pos_card_balances:{SYSTEM}:{code_hash}"


def _minor(amount: Decimal, invoice_id: str) -> int:
    cents = amount.quantize(CENT, rounding=ROUND_HALF_EVEN)
    if cents != amount:
        # A fractional quantity on a gift card line: counted to the cent rather than stalling
        # every poll on an invoice that cannot change.
        log.warning("onsite_gift_card_amount_rounded", invoice_id=invoice_id)
    return to_minor(cents)
