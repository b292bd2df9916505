"""Request and response bodies of `/internal/*`, and how each answer is built from its view.

Answers use the camelCase names of the external contract (DESIGN 3); amounts are decimal
strings, moments ISO 8601 in UTC.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from app.money import format_minor
from app.sync import runs
from app.sync.lookup import CardDetail, CardMatch, JobSummary
from app.sync.runs import BackfillRequest, RunView


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _money(minor: int | None) -> str | None:
    return None if minor is None else format_minor(minor)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class JobAnswer(BaseModel):
    id: int
    kind: str
    state: str
    attempts: int
    maxAttempts: int
    lastError: str | None
    runAt: str | None
    idempotencyKey: str
    createdAt: str | None

    @classmethod
    def of(cls, job: JobSummary) -> JobAnswer:
        return cls(
            id=job.id,
            kind=job.kind,
            state=job.state,
            attempts=job.attempts,
            maxAttempts=job.max_attempts,
            lastError=job.last_error,
            runAt=_iso(job.run_at),
            idempotencyKey=job.idempotency_key,
            createdAt=_iso(job.created_at),
        )


class JobListAnswer(BaseModel):
    jobs: list[JobAnswer]


class RetryAnswer(BaseModel):
    id: int
    state: str


class LinkAnswer(BaseModel):
    system: str
    externalId: str
    codeLast4: str | None
    lastSeenBalance: str | None
    lastSeenAt: str | None


class SyncBaseAnswer(BaseModel):
    balance: str
    version: int


class LedgerAnswer(BaseModel):
    system: str
    amount: str
    cause: str
    idempotencyKey: str
    createdAt: str | None


class ShadowAnswer(BaseModel):
    state: str
    viiLast4: str
    appliedAmount: str
    holdAmount: str
    capturedAmount: str
    expiresAt: str | None


class CardAnswer(BaseModel):
    id: uuid.UUID
    kind: str
    currency: str
    state: str
    links: list[LinkAnswer]
    syncBase: SyncBaseAnswer | None
    ledger: list[LedgerAnswer]
    shadow: ShadowAnswer | None = None

    @classmethod
    def of(cls, card: CardDetail) -> CardAnswer:
        return cls(
            id=card.id,
            kind=card.kind,
            currency=card.currency,
            state=card.state,
            links=[
                LinkAnswer(
                    system=link.system,
                    externalId=link.external_id,
                    codeLast4=link.code_last4,
                    lastSeenBalance=_money(link.last_seen_balance_minor),
                    lastSeenAt=_iso(link.last_seen_at),
                )
                for link in card.links
            ],
            syncBase=(
                SyncBaseAnswer(
                    balance=format_minor(card.sync_base.balance_minor),
                    version=card.sync_base.version,
                )
                if card.sync_base is not None
                else None
            ),
            ledger=[
                LedgerAnswer(
                    system=entry.system,
                    amount=format_minor(entry.amount_minor),
                    cause=entry.cause,
                    idempotencyKey=entry.idempotency_key,
                    createdAt=_iso(entry.created_at),
                )
                for entry in card.ledger
            ],
            shadow=(
                ShadowAnswer(
                    state=card.shadow.state,
                    viiLast4=card.shadow.vii_last4,
                    appliedAmount=format_minor(card.shadow.applied_amount_minor),
                    holdAmount=format_minor(card.shadow.hold_amount_minor),
                    capturedAmount=format_minor(card.shadow.captured_amount_minor),
                    expiresAt=_iso(card.shadow.expires_at),
                )
                if card.shadow is not None
                else None
            ),
        )


class ReconcileBody(BaseModel):
    dryRun: StrictBool
    cardIds: list[uuid.UUID] | None = Field(
        default=None, min_length=1, max_length=runs.RECONCILE_CARD_IDS_LIMIT
    )


class BackfillBody(BaseModel):
    direction: BackfillRequest


class RunStarted(BaseModel):
    runId: uuid.UUID


class FindingAnswer(BaseModel):
    id: int
    type: str
    subject: str
    cardId: uuid.UUID | None
    evidence: dict[str, Any]
    createdAt: str | None
    resolvedAt: str | None


class RunAnswer(BaseModel):
    runId: uuid.UUID
    kind: str
    status: str
    counts: dict[str, int]
    progress: dict[str, Any]
    params: dict[str, Any]
    error: str | None
    jobId: int | None
    createdAt: str | None
    startedAt: str | None
    finishedAt: str | None
    findings: list[FindingAnswer]

    @classmethod
    def of(cls, run: RunView) -> RunAnswer:
        return cls(
            runId=run.id,
            kind=run.kind,
            status=run.status,
            counts=run.counts,
            progress=run.progress,
            # Stored for the algorithms in snake_case; shown as the request spelled them.
            params={_camel(name): value for name, value in run.params.items()},
            error=run.error,
            jobId=run.job_id,
            createdAt=_iso(run.created_at),
            startedAt=_iso(run.started_at),
            finishedAt=_iso(run.finished_at),
            findings=[
                FindingAnswer(
                    id=finding.id,
                    type=finding.type,
                    subject=finding.subject,
                    cardId=finding.card_id,
                    evidence=finding.evidence,
                    createdAt=_iso(finding.created_at),
                    resolvedAt=_iso(finding.resolved_at),
                )
                for finding in run.findings
            ],
        )


class MatchLinkAnswer(BaseModel):
    system: str
    externalId: str
    last4: str | None
    lastSeenBalance: str | None
    lastSeenStatus: str | None
    lastSeenAt: str | None


class CardMatchAnswer(BaseModel):
    cardId: uuid.UUID
    kind: str
    state: str
    currency: str
    customerEmail: str | None
    balance: str | None
    links: list[MatchLinkAnswer]

    @classmethod
    def of(cls, card: CardMatch) -> CardMatchAnswer:
        return cls(
            cardId=card.id,
            kind=card.kind,
            state=card.state,
            currency=card.currency,
            customerEmail=card.customer_email,
            balance=_money(card.base_balance_minor),
            links=[
                MatchLinkAnswer(
                    system=link.system,
                    externalId=link.external_id,
                    last4=link.code_last4,
                    lastSeenBalance=_money(link.last_seen_balance_minor),
                    lastSeenStatus=link.last_seen_status,
                    lastSeenAt=_iso(link.last_seen_at),
                )
                for link in card.links
            ],
        )


class CardLookupAnswer(BaseModel):
    cards: list[CardMatchAnswer]


class LockoutClearBody(BaseModel):
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    viiCardNumber: str = Field(repr=False, pattern=r"^[0-9]{12,19}$")


class LockoutClearAnswer(BaseModel):
    cleared: bool
    """False when the card was neither locked nor had failed PINs on record."""


class AuditAnswer(BaseModel):
    id: int
    at: str
    operator: str
    address: str
    action: str
    status: int
    bodySha256: str


class AuditPage(BaseModel):
    entries: list[AuditAnswer]
    nextBefore: int | None
    """Pass as `before` for the next (older) page; null on the last one."""

    @classmethod
    def of(cls, rows: Sequence[Any], limit: int) -> AuditPage:
        return cls(
            entries=[
                AuditAnswer(
                    id=row.id,
                    at=_iso(row.at) or "",
                    operator=row.operator,
                    address=row.address,
                    action=row.action,
                    status=row.status,
                    bodySha256=row.body_sha256,
                )
                for row in rows
            ],
            nextBefore=rows[-1].id if len(rows) == limit else None,
        )
