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
from apikm.keys.format import embedded_key_pattern
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


class KeyRedactor:
    """Replaces anything shaped like an API key with ``[key]`` in what an error answer says.

    Messages quote input to say what is wrong (``'10.0.0.0/33' is not a network``); when
    the input was a key pasted in the wrong field, the key must not come back in the body
    (and from there in a browser's console, a proxy's log, a bug report). Done here, where
    every JSON error is rendered, so no message can forget it.
    """

    def __init__(self, prefix: str) -> None:
        self._pattern = embedded_key_pattern(prefix)

    def text(self, value: str) -> str:
        return self._pattern.sub("[key]", value)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value


_DEFAULT_REDACTOR = KeyRedactor("apikm")


def redactor_of(app: Any) -> KeyRedactor:
    found = getattr(getattr(app, "state", None), "key_redactor", None)
    return found if isinstance(found, KeyRedactor) else _DEFAULT_REDACTOR


def error_response(status: int, error: str, message: str,
                   headers: Mapping[str, str] | None = None,
                   redact: KeyRedactor = _DEFAULT_REDACTOR, **extra: Any) -> JSONResponse:
    body = redact({"error": error, "message": message, **extra})
    return JSONResponse(body, status_code=status, headers=headers)


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


def install_error_handlers(app: FastAPI, key_prefix: str = "apikm") -> None:
    app.state.key_redactor = KeyRedactor(key_prefix)

    def respond(request: Request, status: int, error: str, message: str,
                headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
        return error_response(status, error, message, headers, redactor_of(request.app),
                              **extra)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return respond(request, exc.status, exc.error, exc.message, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(request, 422, "invalid_request", "the request is not valid",
                       details=_validation_errors(exc))

    @app.exception_handler(KeyNotFound)
    async def _not_found(request: Request, _exc: KeyNotFound) -> JSONResponse:
        return respond(request, 404, "not_found", "no such key")

    @app.exception_handler(RolesRefused)
    async def _roles(request: Request, exc: RolesRefused) -> JSONResponse:
        return respond(request, 403, "roles_refused", str(exc), None, **(exc.details or {}))

    @app.exception_handler(KeyLimitReached)
    async def _limit(request: Request, exc: KeyLimitReached) -> JSONResponse:
        return respond(request, 409, "key_limit_reached", str(exc))

    @app.exception_handler(PolicyError)
    async def _policy(request: Request, exc: PolicyError) -> JSONResponse:
        extra = {"field": exc.field} if exc.field else {}
        return respond(request, 422, "policy_violation", str(exc), None, **extra)

    @app.exception_handler(InvalidToken)
    async def _token(request: Request, exc: InvalidToken) -> JSONResponse:
        return respond(request, 401, "invalid_token", str(exc),
                       {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = _HTTP_NAMES.get(exc.status_code, "error")
        return respond(request, exc.status_code, name, str(exc.detail), exc.headers)

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
        return respond(request, 500, "internal_error", "internal error; the event was logged")
