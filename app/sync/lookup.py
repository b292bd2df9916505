"""What operators and store staff look up behind `/internal/*`: dead jobs, retries, card lookup
and one card in detail.

Views are built from named columns, never whole rows, so a secret column (sealed PIN, sealed
card number, sealed Shopify code, job payload) can never reach an answer by accident.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.crypto import card_hash
from app.db import card_links, gift_cards, jobs, records, shadow_cards, sync_base
from app.db.engine import SessionFactory, transaction

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
        return [JobSummary(*row) for row in await jobs.summaries(session, state, limit=limit)]


async def retry_job(sessions: SessionFactory, job_id: int) -> None:
    """Requeue a dead job with fresh attempts; raises JobNotFound or JobNotDead otherwise."""
    async with transaction(sessions) as session:
        if await jobs.retry_dead(session, job_id):
            return
        state = await jobs.state_of(session, job_id)
    if state is None:
        raise JobNotFound(str(job_id))
    raise JobNotDead(state)


async def card_detail(sessions: SessionFactory, card_id: uuid.UUID) -> CardDetail | None:
    """Every system's view of one card in a single snapshot; None when the card is unknown."""
    async with transaction(sessions) as session:
        card = await gift_cards.get(session, card_id)
        if card is None:
            return None
        links = await card_links.views_of_card(session, card_id)
        base = await sync_base.get(session, card_id)
        ledger = await records.recent_for_card(session, card_id, limit=LEDGER_LIMIT)
        shadow = None
        if card.kind == "vii_shadow":
            shadow = await shadow_cards.newest_view_for_card(session, card_id)
        return CardDetail(
            id=card.id,
            kind=card.kind,
            currency=card.currency,
            state=card.state,
            links=[
                LinkView(
                    system=link.system,
                    external_id=link.external_id,
                    code_last4=link.code_last4,
                    last_seen_balance_minor=link.last_seen_balance_minor,
                    last_seen_at=link.last_seen_at,
                    last_seen_status=link.last_seen_status,
                )
                for link in links
            ],
            sync_base=SyncBaseView(*base) if base is not None else None,
            ledger=[LedgerView(*row) for row in ledger],
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
    code_hash = None
    if serial is not None:
        if hash_key is None:
            raise SerialLookupUnavailable("CARD_HASH_KEY is not set")
        code_hash = serial_hash(hash_key, serial)
    async with transaction(sessions) as session:
        cards = await gift_cards.find(
            session,
            limit=limit,
            email=None if email is None else email.strip().lower(),
            last4=None if last4 is None else last4.strip().lower(),
            code_hash=code_hash,
        )
        if not cards:
            return []
        links = await _links_by_card(session, [card.id for card in cards])
    return [
        CardMatch(
            id=card.id,
            kind=card.kind,
            state=card.state,
            currency=card.currency,
            customer_email=card.customer_email,
            base_balance_minor=card.balance_minor,
            links=links.get(card.id, []),
        )
        for card in cards
    ]


async def _links_by_card(
    session: AsyncSession, card_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[MatchLink]]:
    by_card: dict[uuid.UUID, list[MatchLink]] = {}
    for row in await card_links.views_of_cards(session, card_ids):
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
    return by_card
