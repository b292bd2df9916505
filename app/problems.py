"""RFC 9457 problem responses: one exception type for the app, handlers for everything else."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.logging import get_logger, mask_text

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = get_logger(__name__)


class Problem(Exception):
    """An error the HTTP layer turns into `application/problem+json` with a stable `code`."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extra = extra or {}


def problem_body(status: int, code: str, detail: str, title: str | None = None) -> dict[str, Any]:
    return {
        "type": f"https://giftsync.dev/problems/{code.replace('_', '-')}",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }


def problem_response(problem: Problem) -> JSONResponse:
    body = problem_body(problem.status, problem.code, problem.detail, problem.title)
    body.update(problem.extra)
    return JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_MEDIA_TYPE
    )


def problem_schema(description: str) -> dict[str, Any]:
    """An OpenAPI `responses` entry for a problem answer, so clients see every failure."""
    return {
        "description": description,
        "content": {
            PROBLEM_MEDIA_TYPE: {
                "schema": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "code"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "code": {"type": "string"},
                    },
                }
            }
        },
    }


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def _describe_validation(errors: list[dict[str, Any]]) -> str:
    """Name each bad field and why, without echoing the input (it may be a card number)."""
    parts = []
    for error in errors[:10]:
        location = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body",))
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    return mask_text("; ".join(parts))


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(
            Problem(422, "invalid_request", _describe_validation(list(exc.errors())))
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's answer to a body it could not decode (bad UTF-8, nesting too deep):
            # the same bad request as malformed JSON, which it reports as a validation error.
            return problem_response(
                Problem(422, "invalid_request", "body: not valid JSON (could not be decoded)")
            )
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem_response(
            Problem(exc.status_code, code, detail, headers=dict(exc.headers or {}))
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", error_type=type(exc).__name__)
        return problem_response(
            Problem(500, "internal_error", "An unexpected error occurred; it has been logged.")
        )
