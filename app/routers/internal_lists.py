"""`/internal/*` lists for everything the console shows (issue 17): runs, findings and jobs, one
page at a time, newest first; and what an operator does about a finding.

Pages are keyset pages: pass the answer's `nextBefore` as `before` for the next (older) page;
it is null on the last one. Jobs are listed by an explicit `state`, never a hidden default.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from app import findings as finding_actions
from app.db import lists
from app.db.engine import transaction
from app.problems import Problem, problem_schema
from app.routers.operator_auth import require_operator
from app.run_progress import run_progress
from app.sync import runs

router = APIRouter(
    prefix="/internal",
    tags=["internal"],
    dependencies=[Depends(require_operator)],
    responses={
        401: problem_schema("`unauthorized`: operator bearer token missing or wrong."),
        429: problem_schema("`too_many_attempts`: too many failed sign-ins from this address."),
    },
)

_INVALID = problem_schema("`invalid_request`: a bad filter, id or body.")
_NOT_FOUND = problem_schema("`not_found`: no such finding.")
_MAX_ID = 2**63 - 1
Limit = Annotated[int, Query(ge=1, le=200, description="Items per page.")]


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class RunSummary(BaseModel):
    runId: uuid.UUID
    kind: str
    status: str
    counts: dict[str, int]
    params: dict[str, Any]
    error: str | None
    jobId: int | None
    createdAt: str | None
    startedAt: str | None
    finishedAt: str | None
    done: int
    """Cards handled so far."""
    total: int | None
    """Cards to handle, once known."""

    @classmethod
    def of(cls, run: lists.RunRow) -> RunSummary:
        progress = run_progress(run)
        return cls(
            runId=run.id,
            kind=run.kind,
            status=run.status,
            counts={name: int(value) for name, value in run.counts.items()},
            params={_camel(name): value for name, value in run.params.items()},
            error=run.error,
            jobId=run.job_id,
            createdAt=_iso(run.created_at),
            startedAt=_iso(run.started_at),
            finishedAt=_iso(run.finished_at),
            done=progress.done,
            total=progress.total,
        )


class RunPage(BaseModel):
    runs: list[RunSummary]
    nextBefore: uuid.UUID | None


class FindingItem(BaseModel):
    id: int
    type: str
    state: str
    subject: str
    cardId: uuid.UUID | None
    evidence: dict[str, Any]
    createdAt: str | None
    resolvedAt: str | None
    resolvedBy: str | None
    """The operator who resolved it by hand; null when a run saw it fixed."""
    resolutionNote: str | None
    firstRunId: uuid.UUID | None
    lastRunId: uuid.UUID | None

    @classmethod
    def of(cls, row: lists.FindingRow) -> FindingItem:
        return cls(
            id=row.id,
            type=row.type,
            state="open" if row.resolved_at is None else "resolved",
            subject=row.subject,
            cardId=row.card_id,
            evidence=row.evidence,
            createdAt=_iso(row.created_at),
            resolvedAt=_iso(row.resolved_at),
            resolvedBy=row.resolved_by,
            resolutionNote=row.resolution_note,
            firstRunId=row.first_run_id,
            lastRunId=row.last_run_id,
        )


class FindingPage(BaseModel):
    findings: list[FindingItem]
    nextBefore: int | None


class JobItem(BaseModel):
    id: int
    kind: str
    state: str
    attempts: int
    maxAttempts: int
    lastError: str | None
    runAt: str | None
    idempotencyKey: str
    createdAt: str | None


class JobPage(BaseModel):
    jobs: list[JobItem]
    nextBefore: int | None


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=finding_actions.NOTE_LIMIT)
    """Why it is resolved: what was done, by whom outside giftsync."""


class RecheckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dryRun: bool = False


class RunStarted(BaseModel):
    runId: uuid.UUID


@router.get("/runs", response_model=RunPage, responses={422: _INVALID})
async def runs_page(
    request: Request,
    kind: lists.RunKind | None = None,
    status: lists.RunStatus | None = None,
    before: uuid.UUID | None = None,
    limit: Limit = 50,
) -> RunPage:
    """Reconcile and backfill runs, newest first (`GET /internal/runs/{runId}` for findings)."""
    async with transaction(request.app.state.runtime.sessions) as session:
        rows = await lists.runs_page(session, kind=kind, status=status, before=before, limit=limit)
    return RunPage(
        runs=[RunSummary.of(row) for row in rows],
        nextBefore=rows[-1].id if len(rows) == limit else None,
    )


@router.get("/findings", response_model=FindingPage, responses={422: _INVALID})
async def findings_page(
    request: Request,
    type: Annotated[str | None, Query(min_length=1, max_length=32, pattern=r"^[a-z_]+$")] = None,
    state: lists.FindingState | None = None,
    cardId: uuid.UUID | None = None,
    before: Annotated[int | None, Query(ge=1, le=_MAX_ID)] = None,
    limit: Limit = 50,
) -> FindingPage:
    """Findings, newest first, by type, state (`open`, `resolved`) and card."""
    async with transaction(request.app.state.runtime.sessions) as session:
        rows = await lists.findings_page(
            session, finding_type=type, state=state, card_id=cardId, before=before, limit=limit
        )
    return FindingPage(
        findings=[FindingItem.of(row) for row in rows],
        nextBefore=rows[-1].id if len(rows) == limit else None,
    )


@router.get("/jobs", response_model=JobPage, responses={422: _INVALID})
async def jobs_page(
    request: Request,
    state: Annotated[
        lists.JobState | None,
        Query(description="`queued`, `running`, `done` or `dead`; absent: every state."),
    ] = None,
    before: Annotated[int | None, Query(ge=1, le=_MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> JobPage:
    """Jobs newest first, in one state or all, without payloads (they can carry sealed secrets)."""
    async with transaction(request.app.state.runtime.sessions) as session:
        rows = await lists.jobs_page(session, state=state, before=before, limit=limit)
    return JobPage(
        jobs=[
            JobItem(
                id=row.id,
                kind=row.kind,
                state=row.state,
                attempts=row.attempts,
                maxAttempts=row.max_attempts,
                lastError=row.last_error,
                runAt=_iso(row.run_at),
                idempotencyKey=row.idempotency_key,
                createdAt=_iso(row.created_at),
            )
            for row in rows
        ],
        nextBefore=rows[-1].id if len(rows) == limit else None,
    )


FindingId = Annotated[int, Path(ge=1, le=_MAX_ID)]


@router.post(
    "/findings/{finding_id}/resolve",
    response_model=FindingItem,
    responses={
        404: _NOT_FOUND,
        409: problem_schema("`already_resolved`: the finding is resolved already."),
        422: _INVALID,
    },
)
async def resolve_finding(
    request: Request, finding_id: FindingId, body: ResolveBody
) -> FindingItem:
    """Resolve an open finding by hand, with a note saying why (audited)."""
    try:
        row = await finding_actions.resolve(
            request.app.state.runtime.sessions,
            finding_id,
            operator=request.state.operator,
            note=body.note,
        )
    except finding_actions.FindingNotFound:
        raise Problem(404, "not_found", f"No finding {finding_id}.") from None
    except finding_actions.FindingAlreadyResolved:
        raise Problem(409, "already_resolved", f"Finding {finding_id} is resolved.") from None
    return FindingItem.of(row)


@router.post(
    "/findings/{finding_id}/retry",
    status_code=202,
    response_model=RunStarted,
    responses={
        404: _NOT_FOUND,
        409: problem_schema("`no_card`: the finding names no giftsync card."),
        422: _INVALID,
    },
)
async def retry_finding(
    request: Request, finding_id: FindingId, body: RecheckBody | None = None
) -> RunStarted:
    """Reconcile the finding's card again; a run that sees it fixed resolves the finding."""
    runtime = request.app.state.runtime
    try:
        run_id = await finding_actions.reconcile_card(
            runtime.sessions, finding_id, dry_run=body.dryRun if body else False
        )
    except finding_actions.FindingNotFound:
        raise Problem(404, "not_found", f"No finding {finding_id}.") from None
    except (finding_actions.FindingWithoutCard, runs.UnknownCards):
        raise Problem(409, "no_card", f"Finding {finding_id} names no card.") from None
    if runtime.worker is not None:
        runtime.worker.wake()
    return RunStarted(runId=run_id)
