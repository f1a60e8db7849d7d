"""Every error leaves as JSON ``{"error": ..., "message": ...}``: never HTML, never a trace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from apikm.db import RETRY_AFTER_SECONDS, database_unavailable
from apikm.identity.tokens import InvalidToken
from apikm.keys.policy import PolicyError
from apikm.keys.service import KeyLimitReached, KeyNotFound, RolesRefused

log = structlog.get_logger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers
        self.extra = extra


def error_response(status: int, error: str, message: str,
                   headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **extra}, status_code=status,
                        headers=headers)


def unavailable_response(**extra: Any) -> JSONResponse:
    """503 while the database cannot be reached: a clear answer, and when to come back."""
    return error_response(503, "unavailable", "the service cannot reach its database; "
                          "retry shortly", {"Retry-After": str(RETRY_AFTER_SECONDS),
                                            "Cache-Control": "no-store"}, **extra)


_HTTP_NAMES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
               429: "too_many_requests"}


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Pydantic errors echo the input and may carry context objects; keep only what helps
    # the caller fix the request (a posted key must never be echoed back).
    return [{"field": ".".join(str(p) for p in err["loc"] if p != "body"), "message": err["msg"]}
            for err in exc.errors()]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.message, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", "the request is not valid",
                              details=_validation_errors(exc))

    @app.exception_handler(KeyNotFound)
    async def _not_found(_request: Request, _exc: KeyNotFound) -> JSONResponse:
        return error_response(404, "not_found", "no such key")

    @app.exception_handler(RolesRefused)
    async def _roles(_request: Request, exc: RolesRefused) -> JSONResponse:
        return error_response(403, "roles_refused", str(exc), None, **(exc.details or {}))

    @app.exception_handler(KeyLimitReached)
    async def _limit(_request: Request, exc: KeyLimitReached) -> JSONResponse:
        return error_response(409, "key_limit_reached", str(exc))

    @app.exception_handler(PolicyError)
    async def _policy(_request: Request, exc: PolicyError) -> JSONResponse:
        extra = {"field": exc.field} if exc.field else {}
        return error_response(422, "policy_violation", str(exc), None, **extra)

    @app.exception_handler(InvalidToken)
    async def _token(_request: Request, exc: InvalidToken) -> JSONResponse:
        return error_response(401, "invalid_token", str(exc),
                              {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = _HTTP_NAMES.get(exc.status_code, "error")
        return error_response(exc.status_code, name, str(exc.detail), exc.headers)

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        if not database_unavailable(exc):
            raise exc  # a bug, not an outage: the 500 below, with its trace in the log
        log.warning("database unavailable", path=request.url.path,
                    error_type=type(exc).__name__)
        return unavailable_response()

    app.add_exception_handler(SQLAlchemyError, _unavailable)
    app.add_exception_handler(OSError, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", path=request.url.path, error_type=type(exc).__name__)
        return error_response(500, "internal_error", "internal error; the event was logged")
