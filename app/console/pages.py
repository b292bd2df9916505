"""Console pages: Overview, Cards (staff lookup and one card) and Lockouts (issue 17)."""

from __future__ import annotations

import contextlib
import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response

from app.console.overview import overview
from app.console.web import SignedIn, form_field, render, see_other
from app.db import lists
from app.db.engine import transaction
from app.db.sql import sql
from app.sync import lookup as ops
from app.sync import runs, shadow

router = APIRouter(prefix="/console", include_in_schema=False)

_LAST4 = re.compile(r"[A-Za-z0-9]{4}")
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+")
_SERIAL = re.compile(r"[^\x00-\x1f\x7f]{1,255}")
_VII_NUMBER = re.compile(r"[0-9]{12,19}")
_HASH = re.compile(r"[0-9a-f]{64}")
DEAD_SHOWN = 10


def _wake(request: Request) -> None:
    worker = request.app.state.runtime.worker
    if worker is not None:
        worker.wake()


@router.get("", response_class=HTMLResponse)
async def overview_page(request: Request, operator: SignedIn) -> HTMLResponse:
    runtime = request.app.state.runtime
    data = await overview(runtime)
    async with transaction(runtime.sessions) as session:
        dead = await lists.jobs_page(session, state="dead", limit=DEAD_SHOWN)
    return render(request, "overview.html", {"o": data, "dead": dead}, operator=operator)


@router.post("/jobs/{job_id}/retry")
async def retry_job(
    request: Request, job_id: Annotated[int, Path(ge=1, le=2**63 - 1)], operator: SignedIn
) -> Response:
    # Retried meanwhile, or gone: the overview shows what is dead now either way.
    with contextlib.suppress(ops.JobNotFound, ops.JobNotDead):
        await ops.retry_job(request.app.state.runtime.sessions, job_id)
    _wake(request)
    return see_other("/console#dead")


@router.get("/cards", response_class=HTMLResponse)
async def cards_page(request: Request, operator: SignedIn) -> HTMLResponse:
    return render(
        request, "cards.html", {"results": None, "query": {}, "error": None}, operator=operator
    )


@router.post("/cards", response_class=HTMLResponse)
async def find_cards(request: Request, operator: SignedIn) -> HTMLResponse:
    """The lookup is a POST: a serial is a card number and must not sit in a URL or a log."""
    query = {
        name: (await form_field(request, name) or "").strip()
        for name in ("last4", "email", "serial")
    }
    problems = _lookup_problems(query)
    results: list[ops.CardMatch] | None = None
    if not problems:
        key = request.app.state.runtime.settings.card_hash_key
        try:
            results = await ops.find_cards(
                request.app.state.runtime.sessions,
                hash_key=None if key is None else key.get_secret_value(),
                last4=query["last4"] or None,
                email=query["email"] or None,
                serial=query["serial"] or None,
            )
        except ops.SerialLookupUnavailable:
            problems = ["Serial lookup needs CARD_HASH_KEY."]
    shown = {"last4": query["last4"], "email": query["email"]}  # never echo the serial
    return render(
        request,
        "cards.html",
        {"results": results, "query": shown, "error": " ".join(problems) or None},
        operator=operator,
        status=422 if problems else 200,
    )


def _lookup_problems(query: dict[str, str]) -> list[str]:
    if not any(query.values()):
        return ["Give the last 4 characters, an email or a serial."]
    problems = []
    if query["last4"] and not _LAST4.fullmatch(query["last4"]):
        problems.append("Last 4 is 4 letters or digits.")
    if query["email"] and not (len(query["email"]) <= 320 and _EMAIL.fullmatch(query["email"])):
        problems.append("That is not an email address.")
    if query["serial"] and not _SERIAL.fullmatch(query["serial"]):
        problems.append("That is not a serial.")
    return problems


@router.get("/cards/{card_id}", response_class=HTMLResponse)
async def card_page(request: Request, card_id: uuid.UUID, operator: SignedIn) -> HTMLResponse:
    runtime = request.app.state.runtime
    card = await ops.card_detail(runtime.sessions, card_id)
    if card is None:
        return render(request, "missing.html", {"what": "card"}, operator=operator, status=404)
    async with transaction(runtime.sessions) as session:
        found = await lists.findings_page(session, card_id=card_id, limit=50)
    return render(
        request,
        "card.html",
        {"card": card, "findings": found, "balances": _balances(card)},
        operator=operator,
    )


def _balances(card: ops.CardDetail) -> list[dict[str, Any]]:
    """One column per system, side by side, with giftsync's agreed balance first."""
    shown: list[dict[str, Any]] = []
    if card.sync_base is not None:
        shown.append(
            {
                "system": "agreed",
                "balance": card.sync_base.balance_minor,
                "status": f"version {card.sync_base.version}",
                "at": None,
            }
        )
    for link in card.links:
        shown.append(
            {
                "system": link.system,
                "balance": link.last_seen_balance_minor,
                "status": link.last_seen_status or "",
                "at": link.last_seen_at,
                "external_id": link.external_id,
                "last4": link.code_last4,
            }
        )
    if card.shadow is not None:
        shown.append(
            {
                "system": "vii hold",
                "balance": card.shadow.hold_amount_minor,
                "status": card.shadow.state,
                "at": None,
                "last4": card.shadow.vii_last4,
            }
        )
    return shown


@router.post("/cards/{card_id}/reconcile")
async def reconcile_card(request: Request, card_id: uuid.UUID, operator: SignedIn) -> Response:
    dry_run = await form_field(request, "dry_run") == "on"
    try:
        run_id = await runs.start_reconcile(
            request.app.state.runtime.sessions, dry_run=dry_run, card_ids=[card_id]
        )
    except runs.UnknownCards:
        return render(request, "missing.html", {"what": "card"}, operator=operator, status=404)
    _wake(request)
    return see_other(f"/console/runs/{run_id}")


async def _locked(request: Request) -> list[Any]:
    async with transaction(request.app.state.runtime.sessions) as session:
        rows = await session.execute(
            sql(
                "SELECT vii_card_hash, vii_last4, locked_at FROM card_lockouts "
                "WHERE cleared_at IS NULL ORDER BY locked_at DESC LIMIT 100"
            )
        )
        return list(rows.all())


@router.get("/lockouts", response_class=HTMLResponse)
async def lockouts_page(request: Request, operator: SignedIn) -> HTMLResponse:
    return render(
        request,
        "lockouts.html",
        {"locked": await _locked(request), "result": None, "error": None},
        operator=operator,
    )


@router.post("/lockouts/clear", response_class=HTMLResponse)
async def clear_lockout(request: Request, operator: SignedIn) -> HTMLResponse:
    """Clear by the Vii card number, or by a listed card's hash (the list has no numbers)."""
    runtime = request.app.state.runtime
    number = (await form_field(request, "vii_card_number") or "").replace(" ", "")
    card_hash = await form_field(request, "card_hash") or ""
    error = None
    cleared = None
    if _HASH.fullmatch(card_hash):
        vii_hash: str | None = card_hash
    elif not _VII_NUMBER.fullmatch(number):
        vii_hash, error = None, "A Vii card number is 12 to 19 digits."
    elif runtime.shadow is None:
        vii_hash, error = None, "Vii is not configured."
    else:
        vii_hash = runtime.shadow.secrets.card_hash(number)
    if vii_hash is not None:
        async with runtime.sessions() as session:
            cleared = await shadow.clear_lockout(session, vii_hash, operator=operator.name)
    return render(
        request,
        "lockouts.html",
        {"locked": await _locked(request), "result": cleared, "error": error},
        operator=operator,
        status=422 if error else 200,
    )
