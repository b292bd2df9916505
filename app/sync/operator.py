"""Operator queries behind `/internal/*`: dead jobs, retries and one card seen from every system.

Views are built column by column rather than from ORM rows, so a secret column (sealed PIN,
sealed card number, sealed Shopify code, job payload) can never reach an answer by accident.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select

from app.db.engine import SessionFactory, transaction
from app.db.jobs import retry_dead
from app.db.models import CardLink, GiftCard, Job, LedgerEntry, ShadowCard, SyncBase

JobState = Literal["dead", "queued", "running", "done"]
JOB_LIST_LIMIT = 100
LEDGER_LIMIT = 200


class JobNotFound(Exception):
    """No job has this id."""


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
