"""OAuth endpoints as bare Starlette routes: token exchange, introspection, JWKS, discovery.

Errors follow RFC 6749 (``{"error", "error_description"}``), token answers are never cached.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from apikm.config import Settings
from apikm.db import RETRY_AFTER_SECONDS, database_unavailable
from apikm.identity.tokens import InvalidToken
from apikm.tokens.exchange import OAuthError, parse_exchange
from apikm.tokens.introspect import introspection_body
from apikm.tokens.jwks import (
    DISCOVERY_PATH,
    INTROSPECT_PATH,
    JWKS_PATH,
    TOKEN_PATH,
    discovery_document,
    jwks_document,
)
from apikm.tokens.services import TokenServices
from apikm.web.context import AppContext
from apikm.web.errors import redactor_of

log = structlog.get_logger(__name__)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM_TYPE = "application/x-www-form-urlencoded"


def _oauth_error(request: Request, exc: OAuthError) -> JSONResponse:
    description = redactor_of(request.app).text(exc.description)  # never echo a key
    return JSONResponse({"error": exc.error, "error_description": description},
                        status_code=exc.status, headers={**NO_STORE, **exc.headers})


async def read_form(request: Request) -> dict[str, str]:
    """The form body; RFC 6749 forbids repeating a parameter, so that is refused too."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM_TYPE:
        raise OAuthError(400, "invalid_request", f"the body must be {FORM_TYPE}")
    try:
        pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True,
                          strict_parsing=False, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError(400, "invalid_request", "the form body cannot be read") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError(400, "invalid_request", f"parameter {name!r} is repeated")
        form[name] = value
    return form


def _services(request: Request) -> tuple[AppContext, TokenServices]:
    return request.app.state.ctx, request.app.state.tokens


def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 in the endpoints' own error format when the database cannot answer; any other
    failure is a bug and left to the 500 handler (logged with its trace)."""
    if not database_unavailable(exc):
        raise exc
    log.warning("database unavailable", path=request.url.path, error_type=type(exc).__name__)
    return JSONResponse({"error": "unavailable", "error_description":
                         "the service cannot reach its database; retry shortly"},
                        status_code=503,
                        headers={**NO_STORE, "Retry-After": str(RETRY_AFTER_SECONDS)})


async def token_endpoint(request: Request) -> Response:
    ctx, tokens = _services(request)
    try:
        exchange = parse_exchange(await read_form(request))
        client_ip = ctx.addresses.resolve(request.scope)
        issued = await tokens.exchange.exchange(exchange, client_ip, client_ip)
    except OAuthError as exc:
        return _oauth_error(request, exc)
    except (SQLAlchemyError, OSError) as exc:
        return _unavailable(request, exc)
    body = {"access_token": issued.access_token, "issued_token_type": issued.issued_token_type,
            "token_type": "Bearer", "expires_in": issued.expires_in, "scope": issued.scope}
    return JSONResponse(body, headers=NO_STORE)


def _from_introspect_network(request: Request, tokens: TokenServices, caller: str) -> bool:
    """The TCP peer decides: a forwarded header never grants what the peer itself lacks. A
    trusted proxy in the networks speaks for its clients only when the client it names is
    in them too, so nothing reached through a loopback proxy is let in for being loopback."""
    client = request.scope.get("client")
    peer = client[0] if client else ""
    return tokens.introspectors.allows(peer) and tokens.introspectors.allows(caller)


async def _introspector_allowed(request: Request, ctx: AppContext, tokens: TokenServices,
                                caller: str) -> None:
    authorization = request.headers.get("authorization", "")
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        try:
            principal = await ctx.tokens.validate(credential.strip(), caller)
        except InvalidToken as exc:
            raise OAuthError(401, "invalid_token", str(exc),
                             {"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
        if not principal.has_role(ctx.settings.introspect_role):
            raise OAuthError(403, "insufficient_scope",
                             f"introspection needs the role {ctx.settings.introspect_role}")
        return
    if not _from_introspect_network(request, tokens, caller):
        raise OAuthError(401, "invalid_client", "introspection needs a Keycloak bearer token "
                         "or a caller from APIKM_INTROSPECT_NETWORKS",
                         {"WWW-Authenticate": f'Bearer realm="{ctx.settings.auth_realm}"'})


async def introspect_endpoint(request: Request) -> Response:
    ctx, tokens = _services(request)
    caller = ctx.addresses.resolve(request.scope)
    try:
        await _introspector_allowed(request, ctx, tokens, caller)
        form = await read_form(request)
        key = form.get("token")
        if not key:
            raise OAuthError(400, "invalid_request", "token (the API key) is required")
        client_ip = _optional_ip(form) or caller or None
    except OAuthError as exc:
        return _oauth_error(request, exc)
    # The resource server may name its own client's address (for keys bound to networks);
    # failures are then counted per end client, as /v1/verify does for trusted gateways.
    # Without one, the key is judged for the caller itself, as if it had used it.
    try:
        result = await ctx.verifier.verify(key, client_ip=client_ip, limiter_id=client_ip or "",
                                           endpoint="introspect")
    except (SQLAlchemyError, OSError) as exc:
        return _unavailable(request, exc)
    return JSONResponse(introspection_body(result, tokens.issuer), headers=NO_STORE)


def _optional_ip(form: Mapping[str, str]) -> str | None:
    value = form.get("client_ip")
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise OAuthError(400, "invalid_request", "client_ip is not an IP address") from None


async def jwks_endpoint(request: Request) -> Response:
    _ctx, tokens = _services(request)
    return JSONResponse(jwks_document(tokens.keys),
                        headers={"Cache-Control": "public, max-age=60"})


async def openid_configuration(request: Request) -> Response:
    ctx, tokens = _services(request)
    document: dict[str, Any] = discovery_document(tokens.issuer, ctx.settings.signing_alg)
    return JSONResponse(document, headers={"Cache-Control": "public, max-age=3600"})


def add_routes(app: Starlette, settings: Settings) -> None:
    """The OAuth endpoints, all bare Starlette routes (forward auth is in ``gateway.py``)."""
    app.add_route(TOKEN_PATH, token_endpoint, methods=["POST"])
    app.add_route(INTROSPECT_PATH, introspect_endpoint, methods=["POST"])
    app.add_route(JWKS_PATH, jwks_endpoint, methods=["GET"])
    app.add_route(DISCOVERY_PATH, openid_configuration, methods=["GET"])
