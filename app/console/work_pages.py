"""Console pages: Findings (list, one finding, resolve, reconcile its card) and Runs (history,
start, one run with live progress and its report)."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, cast

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from app import findings as finding_actions
from app.console.explain import evidence_rows, explain
from app.console.web import SignedIn, form_field, render, see_other
from app.db import lists
from app.db.engine import transaction
from app.run_progress import run_progress
from app.sync import runs

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE = 50
_TYPE = re.compile(r"[a-z_]{1,32}")
_DIRECTIONS = {"to_pos", "to_shopify", "both"}
_SWITCHES = {
    "to_pos": "DOWNLOAD_SHOPIFY_GIFT_CARDS",
    "to_shopify": "CREATE_UPDATE_SHOPIFY_GIFT_CARDS",
}
FindingId = Annotated[int, Path(ge=1, le=2**63 - 1)]
_DONE = {"resolved": "Finding resolved.", "already": "That finding was already resolved."}


def _wake(request: Request) -> None:
    worker = request.app.state.runtime.worker
    if worker is not None:
        worker.wake()


@router.get("/findings", response_class=HTMLResponse)
async def findings_page(
    request: Request,
    operator: SignedIn,
    type: Annotated[str | None, Query(max_length=32)] = None,
    state: Annotated[str | None, Query(max_length=16)] = "open",
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> HTMLResponse:
    finding_type = type if type and _TYPE.fullmatch(type) else None
    wanted: lists.FindingState | None = (
        "open" if state == "open" else "resolved" if state == "resolved" else None
    )
    async with transaction(request.app.state.runtime.sessions) as session:
        rows = await lists.findings_page(
            session, finding_type=finding_type, state=wanted, before=before, limit=PAGE
        )
        types = await lists.finding_types(session)
    return render(
        request,
        "findings.html",
        {
            "findings": rows,
            "types": types,
            "type": finding_type or "",
            "state": wanted or "",
            "next_before": rows[-1].id if len(rows) == PAGE else None,
        },
        operator=operator,
    )


@router.get("/findings/{finding_id}", response_class=HTMLResponse)
async def finding_page(
    request: Request,
    finding_id: FindingId,
    operator: SignedIn,
    done: Annotated[str | None, Query(max_length=16)] = None,
) -> HTMLResponse:
    async with transaction(request.app.state.runtime.sessions) as session:
        row = await lists.finding(session, finding_id)
    if row is None:
        return render(request, "missing.html", {"what": "finding"}, operator=operator, status=404)
    return render(
        request,
        "finding.html",
        _finding_context(row, message=_DONE.get(done or "")),
        operator=operator,
    )


def _finding_context(
    row: lists.FindingRow, *, message: str | None = None, error: str | None = None
) -> dict[str, Any]:
    return {
        "f": row,
        "why": explain(row.type),
        "evidence": evidence_rows(row.evidence),
        "message": message,
        "error": error,
    }


@router.post("/findings/{finding_id}/resolve", response_model=None)
async def resolve_finding(
    request: Request, finding_id: FindingId, operator: SignedIn
) -> HTMLResponse | Response:
    note = (await form_field(request, "note") or "").strip()
    sessions = request.app.state.runtime.sessions
    if not note:
        async with transaction(sessions) as session:
            row = await lists.finding(session, finding_id)
        if row is None:
            return render(
                request, "missing.html", {"what": "finding"}, operator=operator, status=404
            )
        return render(
            request,
            "finding.html",
            _finding_context(row, error="Say what was done: a note is required."),
            operator=operator,
            status=422,
        )
    try:
        await finding_actions.resolve(sessions, finding_id, operator=operator.name, note=note)
    except finding_actions.FindingNotFound:
        return render(request, "missing.html", {"what": "finding"}, operator=operator, status=404)
    except finding_actions.FindingAlreadyResolved:
        return see_other(f"/console/findings/{finding_id}?done=already")
    return see_other(f"/console/findings/{finding_id}?done=resolved")


@router.post("/findings/{finding_id}/reconcile")
async def reconcile_finding(
    request: Request, finding_id: FindingId, operator: SignedIn
) -> Response:
    dry_run = await form_field(request, "dry_run") == "on"
    try:
        run_id = await finding_actions.reconcile_card(
            request.app.state.runtime.sessions, finding_id, dry_run=dry_run
        )
    except (finding_actions.FindingNotFound, finding_actions.FindingWithoutCard, runs.UnknownCards):
        return render(request, "missing.html", {"what": "card"}, operator=operator, status=404)
    _wake(request)
    return see_other(f"/console/runs/{run_id}")


async def _runs_page(
    request: Request,
    operator: Any,
    *,
    kind: str | None = None,
    before: uuid.UUID | None = None,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    wanted: lists.RunKind | None = (
        "reconcile" if kind == "reconcile" else "backfill" if kind == "backfill" else None
    )
    async with transaction(request.app.state.runtime.sessions) as session:
        rows = await lists.runs_page(session, kind=wanted, before=before, limit=PAGE)
    return render(
        request,
        "runs.html",
        {
            "runs": [(row, run_progress(row)) for row in rows],
            "kind": wanted or "",
            "error": error,
            "next_before": rows[-1].id if len(rows) == PAGE else None,
            "has_pos": request.app.state.runtime.settings.pos_kind.value != "none",
        },
        operator=operator,
        status=status,
    )


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(
    request: Request,
    operator: SignedIn,
    kind: Annotated[str | None, Query(max_length=16)] = None,
    before: uuid.UUID | None = None,
) -> HTMLResponse:
    return await _runs_page(request, operator, kind=kind, before=before)


@router.post("/runs/reconcile")
async def start_reconcile(request: Request, operator: SignedIn) -> Response:
    dry_run = await form_field(request, "dry_run") == "on"
    run_id = await runs.start_reconcile(request.app.state.runtime.sessions, dry_run=dry_run)
    _wake(request)
    return see_other(f"/console/runs/{run_id}")


@router.post("/runs/backfill", response_model=None)
async def start_backfill(request: Request, operator: SignedIn) -> HTMLResponse | Response:
    runtime = request.app.state.runtime
    direction = await form_field(request, "direction") or ""
    if direction not in _DIRECTIONS:
        return await _runs_page(request, operator, error="Choose a direction.", status=422)
    try:
        run_id = await runs.start_backfill(
            runtime.sessions, runtime.settings, cast(runs.BackfillRequest, direction)
        )
    except runs.NoPos:
        return await _runs_page(
            request, operator, error="Backfill needs a POS and POS_KIND is none.", status=409
        )
    except runs.DirectionDisabled as error:
        off = " and ".join(f"{d} ({_SWITCHES[d]})" for d in error.directions)
        return await _runs_page(
            request, operator, error=f"Switched off in Settings: {off}.", status=409
        )
    _wake(request)
    return see_other(f"/console/runs/{run_id}")


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(request: Request, run_id: uuid.UUID, operator: SignedIn) -> HTMLResponse:
    sessions = request.app.state.runtime.sessions
    async with transaction(sessions) as session:
        row = await lists.run(session, run_id)
    if row is None:
        return render(request, "missing.html", {"what": "run"}, operator=operator, status=404)
    detail = await runs.get_run(sessions, run_id, findings_limit=200)
    return render(
        request,
        "run.html",
        {
            "run": row,
            "progress": run_progress(row),
            "findings": detail.findings if detail else [],
            "would_be": (row.progress or {}).get("findings", []),
            "skipped": _skipped(row),
        },
        operator=operator,
    )


def _skipped(row: lists.RunRow) -> list[dict[str, Any]]:
    """A backfill's report: the first cards each pass could not move, and why."""
    found: list[dict[str, Any]] = []
    for direction in ("to_pos", "to_shopify"):
        state = (row.progress or {}).get(direction)
        if isinstance(state, dict):
            found += [{"direction": direction, **card} for card in state.get("skipped_cards", [])]
    return found


@router.get("/runs/{run_id}/progress")
async def run_progress_json(
    request: Request, run_id: uuid.UUID, operator: SignedIn
) -> JSONResponse:
    """What the run page's script polls: status, counts and progress."""
    async with transaction(request.app.state.runtime.sessions) as session:
        row = await lists.run(session, run_id)
    if row is None:
        return JSONResponse({"status": "missing"}, status_code=404)
    return JSONResponse(
        {"status": row.status, "counts": row.counts, **run_progress(row).to_json()},
        headers={"Cache-Control": "no-store"},
    )
