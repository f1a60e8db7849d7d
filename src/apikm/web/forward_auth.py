"""``ANY /v1/auth``: forward auth for nginx ``auth_request``, Caddy ``forward_auth``, Traefik
ForwardAuth and Envoy ``ext_authz`` (HTTP service).

The answer is exactly one of: 200 with identity headers, 401 with ``WWW-Authenticate``, 403,
or 429 with ``Retry-After``. Proxies turn any other status into a 500 for the client, so
nothing else may leave here, not even on an internal error (that denies with 403).

Where the key is looked for, first match wins (a candidate shaped like one of our keys beats
one that is not, so a stray Keycloak bearer token does not hide a key given elsewhere):
1. the ``APIKM_AUTH_HEADER`` headers (default ``X-API-Key``);
2. ``Authorization: Bearer <key>``, or ``Authorization: Basic`` with the key as the password
   (any user name) or, with an empty password, as the user name (``curl -u KEY:``);
3. the ``APIKM_AUTH_QUERY_PARAM`` parameter (default ``apikey``) of the original request's
   URI, from ``X-Original-URI`` (nginx) or ``X-Forwarded-Uri`` (Traefik, Caddy), or of this
   request's own query (Envoy appends the original path and query to the auth URL).

Required roles: every ``role`` query parameter of the auth URL, plus the comma-separated
``X-Auth-Require-Roles`` header (for Envoy, whose auth URL cannot carry a query). Both only
ever add requirements, so a client that smuggles either into its request gains nothing.

``?jwt=1`` on the auth URL (or ``APIKM_AUTH_UPSTREAM_JWT=true``) adds a short-lived access
token for the upstream, as ``Authorization`` and ``X-Auth-Token`` (both ``Bearer <jwt>``), for
the proxy to copy onto the upstream request.

The client address (for key network restrictions and failure counting) is the peer, or what
``X-Forwarded-For`` / ``X-Real-IP`` say when the peer is one of ``APIKM_TRUSTED_PROXIES``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from urllib.parse import parse_qsl, quote, urlsplit

import structlog
from starlette.requests import Request
from starlette.responses import Response

from apikm.config import Settings
from apikm.verify.codes import MESSAGES, Code
from apikm.verify.record import KeyRecord
from apikm.web.context import AppContext

log = structlog.get_logger(__name__)

MAX_ROLES = 100
MAX_ROLE_LENGTH = 255
ROLES_HEADER = b"x-auth-require-roles"
ORIGINAL_URI_HEADERS = (b"x-original-uri", b"x-forwarded-uri")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})

# 401: no usable credential; 403: a good key that may not do this (or an internal error,
# denied closed); 429: the failure limiter or the key's own rate limit.
FORBIDDEN = frozenset({Code.IP_NOT_ALLOWED, Code.INSUFFICIENT_ROLES, Code.STALE})
# Header values must be latin-1 for HTTP; names and groups may be any Unicode, so anything
# outside printable ASCII (and '%' itself) is percent-encoded as UTF-8.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_value(text: str) -> str:
    return quote(text, safe=_HEADER_SAFE)


class ForwardAuth:
    def __init__(self, settings: Settings) -> None:
        self._key_headers = tuple(name.lower().encode("latin-1") for name in settings.auth_header)
        self._query_param = settings.auth_query_param
        self._key_start = settings.key_prefix + "_"
        self._always_jwt = settings.auth_upstream_jwt
        realm = settings.auth_realm.replace('"', "")
        self._challenge = f'Bearer realm="{realm}", Basic realm="{realm}", charset="UTF-8"'

    async def endpoint(self, request: Request) -> Response:
        try:
            return await self._decide(request)
        except Exception as exc:  # never a 5xx: proxies would turn it into their own 500
            log.error("forward auth failed", error_type=type(exc).__name__)
            return self._deny(403, "unavailable", "authorization could not be decided")

    async def _decide(self, request: Request) -> Response:
        ctx: AppContext = request.app.state.ctx
        headers: dict[bytes, bytes] = dict(request.scope["headers"])
        query = parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
        key = self._find_key(headers, query)
        if key is None:
            return self._unauthorized("missing_key", "an API key is required")
        roles = required_roles(query, headers)
        if roles is None:
            return self._deny(403, "bad_roles", "too many or too long required roles")
        client_ip = ctx.addresses.resolve(request.scope)
        result = await ctx.verifier.verify(key, client_ip=client_ip,
                                           limiter_id=client_ip, required_roles=roles,
                                           endpoint="auth")
        if result.valid and result.record is not None:
            wants_jwt = self._always_jwt or any(
                name == "jwt" and value.lower() in TRUE_WORDS for name, value in query)
            return await self._allow(request, result.record, wants_jwt)
        if result.code is Code.RATE_LIMITED:
            retry = str(result.retry_after or 60)
            return self._deny(429, result.code.value, MESSAGES[result.code],
                              {"Retry-After": retry})
        if result.code in FORBIDDEN:
            return self._deny(403, result.code.value, MESSAGES[result.code])
        return self._unauthorized(result.code.value, MESSAGES[result.code])

    # --- finding the key ----------------------------------------------------------------
    def _find_key(self, headers: dict[bytes, bytes],
                  query: list[tuple[str, str]]) -> str | None:
        first: str | None = None
        for candidate in self._candidates(headers, query):
            if candidate.startswith(self._key_start):
                return candidate
            first = first or candidate
        return first

    def _candidates(self, headers: dict[bytes, bytes],
                    query: list[tuple[str, str]]) -> Iterator[str]:
        for name in self._key_headers:
            value = headers.get(name)
            if value:
                yield value.decode("latin-1").strip()
        authorization = headers.get(b"authorization")
        if authorization:
            credential = credential_from_authorization(authorization.decode("latin-1"))
            if credential:
                yield credential
        for name in ORIGINAL_URI_HEADERS:
            uri = headers.get(name)
            if uri:
                yield from self._query_keys(
                    parse_qsl(urlsplit(uri.decode("latin-1")).query, keep_blank_values=True))
        yield from self._query_keys(query)

    def _query_keys(self, pairs: list[tuple[str, str]]) -> Iterator[str]:
        for name, value in pairs:
            if name == self._query_param and value.strip():
                yield value.strip()

    # --- answers ------------------------------------------------------------------------
    async def _allow(self, request: Request, record: KeyRecord, wants_jwt: bool) -> Response:
        headers = {
            "X-Auth-User": header_value(record.username),
            "X-Auth-User-Id": header_value(record.owner_id),
            "X-Auth-Email": header_value(record.email or ""),
            "X-Auth-Roles": header_value(",".join(sorted(record.effective_roles))),
            "X-Auth-Groups": header_value(",".join(record.owner_groups)),
            "X-Auth-Key-Id": record.id,
            "Cache-Control": "no-store",
        }
        if wants_jwt:
            bearer = await request.app.state.tokens.upstream.authorization_for(record)
            headers["Authorization"] = headers["X-Auth-Token"] = bearer
        return Response(status_code=200, headers=headers)

    def _unauthorized(self, code: str, message: str) -> Response:
        return self._deny(401, code, message, {"WWW-Authenticate": self._challenge})

    @staticmethod
    def _deny(status: int, code: str, message: str,
              headers: dict[str, str] | None = None) -> Response:
        body = json.dumps({"error": code, "message": message}).encode()
        return Response(body, status_code=status, media_type="application/json",
                        headers={"Cache-Control": "no-store", **(headers or {})})


def credential_from_authorization(value: str) -> str | None:
    scheme, _, credential = value.strip().partition(" ")
    credential = credential.strip()
    if not credential:
        return None
    if scheme.lower() == "bearer":
        return credential
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credential, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        return password or user or None
    return None


def required_roles(query: list[tuple[str, str]],
                   headers: dict[bytes, bytes]) -> list[str] | None:
    """Roles from ``?role=`` and ``X-Auth-Require-Roles``; None when over the limits."""
    roles = {value.strip() for name, value in query if name == "role" and value.strip()}
    listed = headers.get(ROLES_HEADER)
    if listed:
        roles.update(r.strip() for r in listed.decode("latin-1").split(",") if r.strip())
    if len(roles) > MAX_ROLES or any(len(role) > MAX_ROLE_LENGTH for role in roles):
        return None
    return sorted(roles)
