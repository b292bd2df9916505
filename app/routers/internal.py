"""`/internal/*` operator API (DESIGN 3), thin over `app.sync.lookup` and `app.sync.runs`;
operators only. The bodies and answers are in `internal_schemas.py`."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from app.db import operators as operators_db
from app.problems import Problem, problem_schema
from app.routers.internal_schemas import (
    AuditPage,
    BackfillBody,
    CardAnswer,
    CardLookupAnswer,
    CardMatchAnswer,
    LockoutClearAnswer,
    LockoutClearBody,
    ReconcileBody,
    RetryAnswer,
    RunAnswer,
    RunStarted,
)
from app.routers.operator_auth import require_operator
from app.sync import lookup, runs, shadow

router = APIRouter(
    prefix="/internal",
    tags=["internal"],
    dependencies=[Depends(require_operator)],
    responses={
        401: problem_schema("`unauthorized`: operator bearer token missing or wrong."),
        429: problem_schema("`too_many_attempts`: too many failed sign-ins from this address."),
    },
)

_INVALID = problem_schema("`invalid_request`")
_MAX_JOB_ID = 2**63 - 1


def _wake_worker(request: Request) -> None:
    worker = request.app.state.runtime.worker
    if worker is not None:
        worker.wake()


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
    try:
        await lookup.retry_job(request.app.state.runtime.sessions, job_id)
    except lookup.JobNotFound:
        raise Problem(404, "not_found", f"No job {job_id}.") from None
    except lookup.JobNotDead as error:
        raise Problem(
            409, "not_dead", f"Job {job_id} is {error.state}; only dead jobs can be retried."
        ) from None
    _wake_worker(request)
    return RetryAnswer(id=job_id, state="queued")


@router.post(
    "/reconcile",
    status_code=202,
    response_model=RunStarted,
    responses={
        422: problem_schema(
            "`invalid_request`: bad body; `unknown_cards`: some `cardIds` are not giftsync cards."
        )
    },
)
async def start_reconcile(request: Request, body: ReconcileBody) -> RunStarted:
    try:
        run_id = await runs.start_reconcile(
            request.app.state.runtime.sessions, dry_run=body.dryRun, card_ids=body.cardIds
        )
    except runs.UnknownCards as error:
        raise Problem(
            422, "unknown_cards", f"No such cards: {', '.join(map(str, error.card_ids[:20]))}."
        ) from None
    _wake_worker(request)
    return RunStarted(runId=run_id)


@router.post(
    "/backfill",
    status_code=202,
    response_model=RunStarted,
    responses={
        409: problem_schema(
            "`no_pos`: POS_KIND is none; `direction_disabled`: the direction's setting is off."
        ),
        422: _INVALID,
    },
)
async def start_backfill(request: Request, body: BackfillBody) -> RunStarted:
    runtime = request.app.state.runtime
    try:
        run_id = await runs.start_backfill(runtime.sessions, runtime.settings, body.direction)
    except runs.NoPos:
        raise Problem(409, "no_pos", "Backfill needs a POS and POS_KIND is none.") from None
    except runs.DirectionDisabled as error:
        settings = {
            "to_pos": "DOWNLOAD_SHOPIFY_GIFT_CARDS",
            "to_shopify": "CREATE_UPDATE_SHOPIFY_GIFT_CARDS",
        }
        off = " and ".join(f"{d} ({settings[d]})" for d in error.directions)
        raise Problem(409, "direction_disabled", f"Switched off: {off}.") from None
    _wake_worker(request)
    return RunStarted(runId=run_id)


@router.get(
    "/runs/{run_id}",
    response_model=RunAnswer,
    responses={404: problem_schema("`not_found`: no such run.")},
)
async def run_detail(request: Request, run_id: str) -> RunAnswer:
    # Any id that names no run is simply unknown (404), a malformed one included.
    try:
        parsed = uuid.UUID(run_id)
    except ValueError:
        raise Problem(404, "not_found", "No such run.") from None
    run = await runs.get_run(request.app.state.runtime.sessions, parsed)
    if run is None:
        raise Problem(404, "not_found", f"No run {parsed}.")
    return RunAnswer.of(run)


@router.get(
    "/cards",
    response_model=CardLookupAnswer,
    responses={
        422: problem_schema("`invalid_request`: a bad filter, or none of last4, email, serial."),
        503: problem_schema("`serial_lookup_unavailable`: CARD_HASH_KEY is not set."),
    },
)
async def find_cards(
    request: Request,
    last4: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9]{4}$")] = None,
    email: Annotated[
        str | None,
        Query(
            min_length=3,
            max_length=320,
            pattern=r"^\s*[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\s*$",
        ),
    ] = None,
    serial: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=255,
            pattern=r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$",
        ),
    ] = None,
) -> CardLookupAnswer:
    """Store staff lookup: cards matching every filter given, newest first, at most 50."""
    if last4 is None and email is None and serial is None:
        raise Problem(422, "invalid_request", "Give at least one of last4, email, serial.")
    runtime = request.app.state.runtime
    key = runtime.settings.card_hash_key
    try:
        cards = await lookup.find_cards(
            runtime.sessions,
            hash_key=None if key is None else key.get_secret_value(),
            last4=last4,
            email=email,
            serial=serial,
        )
    except lookup.SerialLookupUnavailable:
        raise Problem(
            503, "serial_lookup_unavailable", "Serial lookup needs CARD_HASH_KEY."
        ) from None
    return CardLookupAnswer(cards=[CardMatchAnswer.of(card) for card in cards])


@router.get(
    "/cards/{card_id}",
    response_model=CardAnswer,
    responses={404: problem_schema("`not_found`: no such card."), 422: _INVALID},
)
async def card_detail(request: Request, card_id: uuid.UUID) -> CardAnswer:
    card = await lookup.card_detail(request.app.state.runtime.sessions, card_id)
    if card is None:
        raise Problem(404, "not_found", f"No card {card_id}.")
    return CardAnswer.of(card)


@router.post(
    "/lockouts/clear",
    response_model=LockoutClearAnswer,
    responses={422: _INVALID, 503: problem_schema("`vii_unavailable`: Vii is not configured.")},
)
async def clear_lockout(request: Request, body: LockoutClearBody) -> LockoutClearAnswer:
    """Unlock a Vii card locked after too many wrong PINs, and forget its failures."""
    deps = request.app.state.runtime.shadow
    if deps is None:
        raise Problem(503, "vii_unavailable", "Vii is not configured.")
    vii_hash = deps.secrets.card_hash(body.viiCardNumber)
    async with deps.sessions() as session:
        cleared = await shadow.clear_lockout(session, vii_hash, operator=request.state.operator)
    return LockoutClearAnswer(cleared=cleared)


@router.get("/audit", response_model=AuditPage, responses={422: _INVALID})
async def audit_log(
    request: Request,
    before: Annotated[int | None, Query(ge=1, le=_MAX_JOB_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> AuditPage:
    """Every operator action that changed anything, newest first."""
    async with request.app.state.runtime.sessions() as session:
        rows = await operators_db.audit_page(session, before_id=before, limit=limit)
    return AuditPage.of(rows, limit)
