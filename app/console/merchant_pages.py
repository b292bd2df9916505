"""Console pages: Settings (the merchant switches of DESIGN 1.A) and Liability (with CSV)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from app import liability
from app import merchant_settings as merchant
from app.console.web import Operator, SignedIn, form_field, render, see_other
from app.settings import PosKind

router = APIRouter(prefix="/console", include_in_schema=False)

_DONE = {"saved": "Saved. It is in force now.", "reset": "Back to the environment's value."}


async def _settings_page(
    request: Request,
    operator: Operator,
    *,
    message: str | None = None,
    errors: list[str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    runtime = request.app.state.runtime
    layer = merchant.merchant_settings(runtime)
    await layer.refresh(runtime.sessions)
    return render(
        request,
        "settings.html",
        {
            "rows": layer.shown(),
            "problems": layer.problems,
            "errors": errors or [],
            "message": message,
            "plans": ["growth", "enterprise"],
            "pos_kind": runtime.settings.pos_kind.value,
        },
        operator=operator,
        status=status,
    )


@router.get("/settings", response_class=HTMLResponse)
async def settings_page(
    request: Request, operator: SignedIn, done: Annotated[str | None, Query(max_length=16)] = None
) -> HTMLResponse:
    return await _settings_page(request, operator, message=_DONE.get(done or ""))


async def _submitted(
    request: Request, layer: merchant.MerchantSettings
) -> tuple[dict[str, merchant.Value | None], list[str]]:
    """The values the form changes (only those that differ from what is in force now)."""
    reset = await form_field(request, "reset")
    if reset is not None:
        names = merchant.NAMES if reset == "all" else (reset,)
        if not set(names) <= set(merchant.NAMES):
            return {}, ["Unknown setting."]
        return dict.fromkeys(names), []
    changes: dict[str, merchant.Value | None] = {}
    errors = []
    current = {row.name: row.value for row in layer.shown()}
    for name in merchant.NAMES:
        raw = await form_field(request, name)
        if name in merchant.BOOLEANS:
            raw = "true" if raw == "on" else "false"
        try:
            value = merchant.parse(name, (raw or "").strip())
        except ValueError as error:
            errors.append(str(error))
            continue
        if value != current[name]:
            changes[name] = value
    return changes, errors


@router.post("/settings", response_model=None)
async def save_settings(request: Request, operator: SignedIn) -> HTMLResponse | Response:
    runtime = request.app.state.runtime
    layer = merchant.merchant_settings(runtime)
    await layer.refresh(runtime.sessions)
    changes, errors = await _submitted(request, layer)
    if not errors and changes:
        errors = await layer.save(
            runtime.sessions, changes, operator=operator.name, address=operator.address
        )
    if errors:
        return await _settings_page(request, operator, errors=errors, status=422)
    resetting = await form_field(request, "reset") is not None
    return see_other(f"/console/settings?done={'reset' if resetting else 'saved'}")


@router.get("/liability", response_class=HTMLResponse)
async def liability_page(request: Request, operator: SignedIn) -> HTMLResponse:
    runtime = request.app.state.runtime
    report = await liability.report(
        runtime.sessions, has_pos=runtime.settings.pos_kind is not PosKind.NONE
    )
    return render(request, "liability.html", {"r": report}, operator=operator)


@router.get("/liability.csv")
async def liability_csv(request: Request, operator: SignedIn) -> StreamingResponse:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(
        liability.csv_lines(request.app.state.runtime.sessions),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="giftsync-liability-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )
