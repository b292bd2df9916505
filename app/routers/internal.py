"""`/internal/*` operator API (DESIGN 3), thin over `app.sync.operator`; admin token only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from app.crypto import constant_time_equal
from app.money import format_minor
from app.problems import Problem, problem_schema
from app.sync import operator
from app.sync.operator import CardDetail, JobState, JobSummary

# auto_error=False: a missing header must become our 401 problem, not FastAPI's own answer.
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer $ADMIN_TOKEN`")


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse unless the bearer token equals ADMIN_TOKEN, compared in constant time.

    With no ADMIN_TOKEN configured every request is refused: an unset token must not open
    the operator API.
    """
    expected = request.app.state.runtime.settings.admin_token
    if (
        expected is None
        or credentials is None
        or not constant_time_equal(expected.get_secret_value(), credentials.credentials)
    ):
        raise Problem(
            401,
            "unauthorized",
            "A valid admin bearer token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )


router = APIRouter(
    prefix="/internal",
    tags=["internal"],
    dependencies=[Depends(require_admin)],
    responses={401: problem_schema("`unauthorized`: admin bearer token missing or wrong.")},
)

_INVALID = problem_schema("`invalid_request`")
_MAX_JOB_ID = 2**63 - 1


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _money(minor: int | None) -> str | None:
    return None if minor is None else format_minor(minor)


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


@router.get("/jobs", response_model=JobListAnswer, responses={422: _INVALID})
async def list_jobs(request: Request, state: JobState = "dead") -> JobListAnswer:
    jobs = await operator.list_jobs(request.app.state.runtime.sessions, state)
    return JobListAnswer(jobs=[JobAnswer.of(job) for job in jobs])


@router.post(
    "/jobs/{job_id}/retry",
    status_code=202,
    response_model=RetryAnswer,
    responses={
        404: problem_schema("`not_found`: no such job."),
        409: problem_schema("`not_dead`: only dead jobs can be retried."),
        422: _INVALID,
    },
)
async def retry_job(
    request: Request, job_id: Annotated[int, Path(ge=1, le=_MAX_JOB_ID)]
) -> RetryAnswer:
    runtime = request.app.state.runtime
    try:
        await operator.retry_job(runtime.sessions, job_id)
    except operator.JobNotFound:
        raise Problem(404, "not_found", f"No job {job_id}.") from None
    except operator.JobNotDead as error:
        raise Problem(
            409, "not_dead", f"Job {job_id} is {error.state}; only dead jobs can be retried."
        ) from None
    if runtime.worker is not None:
        runtime.worker.wake()
    return RetryAnswer(id=job_id, state="queued")


@router.get(
    "/cards/{card_id}",
    response_model=CardAnswer,
    responses={404: problem_schema("`not_found`: no such card."), 422: _INVALID},
)
async def card_detail(request: Request, card_id: uuid.UUID) -> CardAnswer:
    card = await operator.card_detail(request.app.state.runtime.sessions, card_id)
    if card is None:
        raise Problem(404, "not_found", f"No card {card_id}.")
    return CardAnswer.of(card)
