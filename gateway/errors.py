"""The gateway's one error hierarchy; `install_error_handlers` is the only place mapping it.

Services and repositories raise these; endpoints never build error responses themselves. The
message is shown to the caller, so it says what was wrong and never includes internals.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.runtime.logging import current_request_id

__all__ = [
    "AppError",
    "Conflict",
    "Forbidden",
    "GuardrailViolation",
    "InvalidRequest",
    "NotFound",
    "OAuthError",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthenticated",
    "install_error_handlers",
]

log = logging.getLogger(__name__)


class AppError(Exception):
    """Base of every error the gateway reports to a caller."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    # A refusal that must leave a trace (a revoked token family after refresh reuse, an audit
    # row for a failed sign-in) sets this; the request's unit of work then commits anyway.
    keep_changes: bool = False

    def __init__(self, message: str, *, details: Any = None, keep_changes: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.keep_changes = keep_changes

    def headers(self) -> dict[str, str] | None:
        return None


class InvalidRequest(AppError):  # noqa: N818
    status_code = 422
    code = "invalid_request"


class GuardrailViolation(InvalidRequest):
    code = "guardrail_violation"


class Unauthenticated(AppError):  # noqa: N818
    status_code = 401
    code = "unauthenticated"

    def headers(self) -> dict[str, str] | None:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(AppError):  # noqa: N818
    status_code = 403
    code = "forbidden"


class NotFound(AppError):  # noqa: N818
    status_code = 404
    code = "not_found"


class Conflict(AppError):  # noqa: N818
    status_code = 409
    code = "conflict"


class RateLimited(AppError):  # noqa: N818
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after_s)}


class ServiceUnavailable(AppError):  # noqa: N818
    """A backend service is down or too slow; the caller may retry later."""

    status_code = 503
    code = "service_unavailable"

    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": "5"}


class OAuthError(AppError):
    """RFC 6749 §5.2 error: rendered as `{"error": ..., "error_description": ...}`."""

    def __init__(
        self, error: str, description: str, *, status_code: int = 400, keep_changes: bool = False
    ) -> None:
        super().__init__(description, keep_changes=keep_changes)
        self.error = error
        self.oauth_status = status_code


def _body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    request_id = current_request_id()
    if request_id is not None:
        body["error"]["request_id"] = request_id
    return body


async def _app_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    if isinstance(exc, OAuthError):
        return JSONResponse(
            {"error": exc.error, "error_description": exc.message},
            status_code=exc.oauth_status,
            headers={"Cache-Control": "no-store"},
        )
    return JSONResponse(
        _body(exc.code, exc.message, exc.details),
        status_code=exc.status_code,
        headers=exc.headers(),
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    return JSONResponse(
        _body("invalid_request", "the request does not match the schema", details),
        status_code=422,
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        _body("http_error", str(exc.detail)),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    # SQLite's busy timeout ran out while other requests held the write lock: the unit of work
    # that waited was rolled back and the caller may try again (a repeated bolus confirmation
    # re-sends the same request id). Any other storage error is a real fault.
    if "database is locked" in str(exc):
        log.warning("storage busy: request refused with 503", exc_info=exc)
        return JSONResponse(
            _body("storage_busy", "the gateway's storage is busy; try again shortly"),
            status_code=503,
            headers={"Retry-After": "2"},
        )
    return await _unexpected(request, exc)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(_body("internal", "internal error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _storage_error)
    app.add_exception_handler(Exception, _unexpected)
