"""`POST /check-balance` and `POST /check-balance/release` (DESIGN 3), thin over `sync.shadow`."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from app.money import parse_amount
from app.problems import Problem, problem_schema
from app.routers.checkout_auth import checkout_client, proxy_caller
from app.sync import shadow
from app.sync.shadow import ApplyRequest, ShadowCardError, ShadowDeps

router = APIRouter(tags=["checkout"])

_CARD_NUMBER = re.compile(r"[0-9]{12,19}", re.ASCII)
_PIN = re.compile(r"[0-9]{4,8}", re.ASCII)
# URL-safe characters: a theme's cart token carries `?key=...` (Shopify cart tokens); markup
# and quotes never reach a log line or an upstream document.
_CHECKOUT_ID_CHARS = r"[A-Za-z0-9._:~?=/+%-]"
_TOKEN = re.compile(_CHECKOUT_ID_CHARS + "{1,255}", re.ASCII)

Amount = Annotated[Decimal, BeforeValidator(lambda raw: parse_amount(raw))]


class CheckBalanceBody(BaseModel):
    """The field names the existing checkout frontend already sends; others are ignored."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    viiCardNumber: str = Field(repr=False)
    viiCardPin: str | None = Field(default=None, repr=False)
    cartTotal: Amount
    checkoutToken: str | None = None
    applyToken: str | None = Field(default=None, repr=False, max_length=128)

    @field_validator("viiCardNumber")
    @classmethod
    def _card_number(cls, value: str) -> str:
        if not _CARD_NUMBER.fullmatch(value):
            raise ValueError("must be 12 to 19 digits")
        return value

    @field_validator("viiCardPin")
    @classmethod
    def _pin(cls, value: str | None) -> str | None:
        if value is not None and not _PIN.fullmatch(value):
            raise ValueError("must be 4 to 8 digits")
        return value

    @field_validator("checkoutToken")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and not _TOKEN.fullmatch(value):
            raise ValueError("must be 1 to 255 letters, digits or ._:~?=/+%-")
        return value


class CheckBalanceAnswer(BaseModel):
    amountApplied: str
    shopifyGiftCardCode: str
    shopifyGiftCardLastCharacters: str
    shopifyGiftCardStatus: str
    viiGiftCardNumber: str
    viiBalance: str
    availableBalance: str
    expiresAt: str
    applyToken: str | None = None


class ReleaseBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    checkoutToken: str = Field(pattern="^" + _CHECKOUT_ID_CHARS + "{1,255}$")
    # Any alphanumeric code that names no card of this checkout is unknown (404), whatever its
    # length; other characters are refused.
    shopifyGiftCardCode: str = Field(pattern=r"^[A-Za-z0-9]{1,64}$")


def _problem(error: ShadowCardError) -> Problem:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return Problem(error.status, error.code, error.detail, headers=headers)


def _service(request: Request) -> ShadowDeps:
    service: ShadowDeps | None = getattr(request.app.state.runtime, "shadow", None)
    if service is None:
        raise Problem(
            503, "vii_unavailable", "Vii is not configured.", headers={"Retry-After": "60"}
        )
    return service


_ERRORS: dict[int | str, dict[str, Any]] = {
    402: problem_schema("`card_empty`"),
    403: problem_schema("`invalid_card_or_pin` (never says which)"),
    409: problem_schema("`card_not_active` or `pin_required`"),
    422: problem_schema("`invalid_request`"),
    423: problem_schema("`card_locked`: too many wrong PINs; an operator must clear it"),
    429: problem_schema("`too_many_attempts` or `busy`, with Retry-After"),
    503: problem_schema("`vii_unavailable` or `shopify_unavailable`, with Retry-After"),
}


_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: problem_schema("`invalid_session_token` (or `invalid_proxy_signature` on /proxy)"),
}


# Dependencies, so that the caller is proved before the body is judged: an unproved caller
# learns nothing about what a valid request looks like.
def _checkout_caller(request: Request) -> str:
    return checkout_client(request, request.app.state.runtime.settings)


def _proxy_caller(request: Request) -> str:
    return proxy_caller(request, request.app.state.runtime.settings)


CheckoutCaller = Annotated[str, Depends(_checkout_caller)]
ProxyCaller = Annotated[str, Depends(_proxy_caller)]


@router.post(
    "/check-balance", response_model=CheckBalanceAnswer, responses={**_ERRORS, **_AUTH_ERRORS}
)
async def check_balance(
    client: CheckoutCaller, body: CheckBalanceBody, request: Request, response: Response
) -> CheckBalanceAnswer:
    """From the checkout UI extension (session token) or, in open mode, anyone."""
    return await _check_balance(body, request, response, client)


@router.post(
    "/proxy/check-balance",
    response_model=CheckBalanceAnswer,
    responses={**_ERRORS, **_AUTH_ERRORS},
)
async def proxy_check_balance(
    client: ProxyCaller, body: CheckBalanceBody, request: Request, response: Response
) -> CheckBalanceAnswer:
    """From the theme app block through Shopify's app proxy (signed query)."""
    return await _check_balance(body, request, response, client)


async def _check_balance(
    body: CheckBalanceBody, request: Request, response: Response, client: str
) -> CheckBalanceAnswer:
    settings = request.app.state.runtime.settings
    if body.cartTotal <= 0 or body.cartTotal > settings.max_cart_total:
        raise Problem(
            422,
            "invalid_request",
            f"cartTotal: must be above 0.00 and at most {settings.max_cart_total:.2f}",
        )
    try:
        result = await shadow.apply(
            _service(request),
            ApplyRequest(
                card_number=body.viiCardNumber,
                pin=body.viiCardPin,
                cart_total=body.cartTotal,
                checkout_token=body.checkoutToken,
                client=client,
                apply_token=body.applyToken,
            ),
        )
    except ShadowCardError as error:
        raise _problem(error) from None
    # The answer carries a spendable code: no cache anywhere may keep it.
    response.headers["Cache-Control"] = "no-store"
    return CheckBalanceAnswer(
        amountApplied=f"{result.amount_applied:.2f}",
        shopifyGiftCardCode=result.code,
        shopifyGiftCardLastCharacters=result.code_last4,
        shopifyGiftCardStatus=result.status,
        viiGiftCardNumber=f"•••• {result.vii_last4}",
        viiBalance=f"{result.vii_balance:.2f}",
        availableBalance=f"{result.available_balance:.2f}",
        expiresAt=result.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        applyToken=result.apply_token,
    )


_RELEASE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_AUTH_ERRORS,
    404: problem_schema("No such shadow card"),
    422: problem_schema("`invalid_request`"),
}


@router.post("/check-balance/release", responses=_RELEASE_ERRORS)
async def release(_: CheckoutCaller, body: ReleaseBody, request: Request) -> dict[str, bool]:
    return await _release(body, request)


@router.post("/proxy/check-balance/release", responses=_RELEASE_ERRORS)
async def proxy_release(_: ProxyCaller, body: ReleaseBody, request: Request) -> dict[str, bool]:
    return await _release(body, request)


async def _release(body: ReleaseBody, request: Request) -> dict[str, bool]:
    try:
        await shadow.release(_service(request), body.checkoutToken, body.shopifyGiftCardCode)
    except ShadowCardError as error:
        raise _problem(error) from None
    return {"released": True}
