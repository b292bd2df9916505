"""Operator queries behind `/internal/*`: dead jobs, retries, card lookup and one card in detail.

Views are built column by column rather than from ORM rows, so a secret column (sealed PIN,
sealed card number, sealed Shopify code, job payload) can never reach an answer by accident.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import exists, func, select

from app.crypto import card_hash
from app.db.engine import SessionFactory, transaction
from app.db.jobs import retry_dead
from app.db.models import CardLink, GiftCard, Job, LedgerEntry, ShadowCard, SyncBase

JobState = Literal["dead", "queued", "running", "done"]
JOB_LIST_LIMIT = 100
LEDGER_LIMIT = 200
CARD_LOOKUP_LIMIT = 50


class JobNotFound(Exception):
    """No job has this id."""


class SerialLookupUnavailable(Exception):
    """A serial can only be matched through its keyed hash, and CARD_HASH_KEY is not set."""


class JobNotDead(Exception):
    """The job exists but only dead jobs can be retried; `state` is what it is instead."""

    def __init__(self, state: str) -> None:
        super().__init__(f"job is {state}, not dead")
        self.state = state


@dataclass(frozen=True)
class JobSummary:
    """A job without its payload: payloads can carry sealed secrets."""

    id: int
    kind: str
    state: str
    attempts: int
    max_attempts: int
    last_error: str | None
    run_at: datetime
    idempotency_key: str
    created_at: datetime


@dataclass(frozen=True)
class LinkView:
    system: str
    external_id: str
    code_last4: str | None
    last_seen_balance_minor: int | None
    last_seen_at: datetime | None
    last_seen_status: str | None


@dataclass(frozen=True)
class SyncBaseView:
    balance_minor: int
    version: int


@dataclass(frozen=True)
class LedgerView:
    system: str
    amount_minor: int
    cause: str
    idempotency_key: str
    created_at: datetime


@dataclass(frozen=True)
class ShadowView:
    state: str
    vii_last4: str
    applied_amount_minor: int
    hold_amount_minor: int
    captured_amount_minor: int
    expires_at: datetime


@dataclass(frozen=True)
class CardDetail:
    id: uuid.UUID
    kind: str
    currency: str
    state: str
    links: list[LinkView]
    sync_base: SyncBaseView | None
    ledger: list[LedgerView]
    shadow: ShadowView | None


async def list_jobs(
    sessions: SessionFactory, state: JobState, *, limit: int = JOB_LIST_LIMIT
) -> list[JobSummary]:
    """Newest first, so the failure an operator was just told about is at the top."""
    async with transaction(sessions) as session:
        rows = await session.execute(
            select(
                Job.id,
                Job.kind,
                Job.state,
                Job.attempts,
                Job.max_attempts,
                Job.last_error,
                Job.run_at,
                Job.idempotency_key,
                Job.created_at,
            )
            .where(Job.state == state)
            .order_by(Job.created_at.desc(), Job.id.desc())
            .limit(limit)
        )
        return [JobSummary(*row) for row in rows.all()]


async def retry_job(sessions: SessionFactory, job_id: int) -> None:
    """Requeue a dead job with fresh attempts; raises JobNotFound or JobNotDead otherwise."""
    async with transaction(sessions) as session:
        if await retry_dead(session, job_id):
            return
        state: str | None = await session.scalar(select(Job.state).where(Job.id == job_id))
    if state is None:
        raise JobNotFound(str(job_id))
    raise JobNotDead(state)


async def card_detail(sessions: SessionFactory, card_id: uuid.UUID) -> CardDetail | None:
    """Every system's view of one card in a single snapshot; None when the card is unknown."""
    async with transaction(sessions) as session:
        card = (
            await session.execute(
                select(GiftCard.id, GiftCard.kind, GiftCard.currency, GiftCard.state).where(
                    GiftCard.id == card_id
                )
            )
        ).first()
        if card is None:
            return None
        links = await session.execute(
            select(
                CardLink.system,
                CardLink.external_id,
                CardLink.code_last4,
                CardLink.last_seen_balance_minor,
                CardLink.last_seen_at,
                CardLink.last_seen_status,
            )
            .where(CardLink.card_id == card_id)
            .order_by(CardLink.system)
        )
        base = (
            await session.execute(
                select(SyncBase.balance_minor, SyncBase.version).where(SyncBase.card_id == card_id)
            )
        ).first()
        ledger = await session.execute(
            select(
                LedgerEntry.system,
                LedgerEntry.amount_minor,
                LedgerEntry.cause,
                LedgerEntry.idempotency_key,
                LedgerEntry.created_at,
            )
            .where(LedgerEntry.card_id == card_id)
            .order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc())
            .limit(LEDGER_LIMIT)
        )
        shadow = None
        if card.kind == "vii_shadow":
            # One checkout per shadow card in practice; the newest is the one that matters.
            shadow = (
                await session.execute(
                    select(
                        ShadowCard.state,
                        ShadowCard.vii_last4,
                        ShadowCard.applied_amount_minor,
                        ShadowCard.hold_amount_minor,
                        ShadowCard.captured_amount_minor,
                        ShadowCard.expires_at,
                    )
                    .where(ShadowCard.card_id == card_id)
                    .order_by(ShadowCard.created_at.desc())
                    .limit(1)
                )
            ).first()
        return CardDetail(
            id=card.id,
            kind=card.kind,
            currency=card.currency,
            state=card.state,
            links=[LinkView(*row) for row in links.all()],
            sync_base=SyncBaseView(*base) if base is not None else None,
            ledger=[LedgerView(*row) for row in ledger.all()],
            shadow=ShadowView(*shadow) if shadow is not None else None,
        )


@dataclass(frozen=True)
class MatchLink:
    system: str
    external_id: str
    code_last4: str | None
    last_seen_balance_minor: int | None
    last_seen_status: str | None
    last_seen_at: datetime | None


@dataclass(frozen=True)
class CardMatch:
    id: uuid.UUID
    kind: str
    state: str
    currency: str
    customer_email: str | None
    base_balance_minor: int | None
    """The last balance every system agreed on (`sync_base`); None before the first agreement."""
    links: list[MatchLink]


def serial_hash(hash_key: str, serial: str) -> str:
    """The `card_links.code_hash` of a serial or code as omni sync stores it (`OmniSync.code_hash`).

    Shopify codes are case-insensitive, so codes are hashed trimmed and lower-cased.
    """
    return card_hash(hash_key, serial.strip().lower())


async def find_cards(
    sessions: SessionFactory,
    *,
    hash_key: str | None,
    last4: str | None = None,
    email: str | None = None,
    serial: str | None = None,
    limit: int = CARD_LOOKUP_LIMIT,
) -> list[CardMatch]:
    """Cards matching every filter given, newest first; the store staff lookup.

    `serial` is matched only through its keyed hash (serials are card numbers and never stored
    in plain text), on any link or on a shadow card's Vii number; `last4` on any link's last 4
    characters, ignoring case; `email` on the card's (lower-cased) customer email.
    """
    if last4 is None and email is None and serial is None:
        raise ValueError("at least one of last4, email, serial is required")
    query = (
        select(
            GiftCard.id,
            GiftCard.kind,
            GiftCard.state,
            GiftCard.currency,
            GiftCard.customer_email,
            SyncBase.balance_minor,
        )
        .outerjoin(SyncBase, SyncBase.card_id == GiftCard.id)
        .order_by(GiftCard.created_at.desc(), GiftCard.id)
        .limit(limit)
    )
    if email is not None:
        query = query.where(GiftCard.customer_email == email.strip().lower())
    if last4 is not None:
        query = query.where(
            exists().where(
                CardLink.card_id == GiftCard.id,
                func.lower(CardLink.code_last4) == last4.strip().lower(),
            )
        )
    if serial is not None:
        if hash_key is None:
            raise SerialLookupUnavailable("CARD_HASH_KEY is not set")
        hashed = serial_hash(hash_key, serial)
        query = query.where(
            exists().where(CardLink.card_id == GiftCard.id, CardLink.code_hash == hashed)
            | exists().where(ShadowCard.card_id == GiftCard.id, ShadowCard.vii_card_hash == hashed)
        )
    async with transaction(sessions) as session:
        cards = (await session.execute(query)).all()
        if not cards:
            return []
        links = await session.execute(
            select(
                CardLink.card_id,
                CardLink.system,
                CardLink.external_id,
                CardLink.code_last4,
                CardLink.last_seen_balance_minor,
                CardLink.last_seen_status,
                CardLink.last_seen_at,
            )
            .where(CardLink.card_id.in_([card.id for card in cards]))
            .order_by(CardLink.card_id, CardLink.system)
        )
        by_card: dict[uuid.UUID, list[MatchLink]] = {}
        for row in links.all():
            by_card.setdefault(row.card_id, []).append(
                MatchLink(
                    system=row.system,
                    external_id=row.external_id,
                    code_last4=row.code_last4,
                    last_seen_balance_minor=row.last_seen_balance_minor,
                    last_seen_status=row.last_seen_status,
                    last_seen_at=row.last_seen_at,
                )
            )
    return [
        CardMatch(
            id=card.id,
            kind=card.kind,
            state=card.state,
            currency=card.currency,
            customer_email=card.customer_email,
            base_balance_minor=card.balance_minor,
            links=by_card.get(card.id, []),
        )
        for card in cards
    ]
