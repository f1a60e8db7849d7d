"""``GET /auth/check_key``: APIKeyManager's verification route, answered on the gateway path.

RS-PYTHON's rs-server calls it for every request that carries an ``x-api-key`` (caching
answers for two minutes), so it is served like ``/v1/auth``: a bare ASGI handler in front of
the framework, the same ``Verifier.verify``, and the 200 body serialised once per cached key.

The answers are the old service's, byte for byte in shape:

- 200 ``{"user_id", "user_login", "iam_roles", "config"}``: ``iam_roles`` the key's effective
  roles (realm roles by name, client roles as ``client:role``), ``config`` the key's meta
  with the owner's ``APIKM_OAUTH2_ATTRIBUTES`` merged over it (attributes win);
- 403 ``{"detail": "An API key must be passed as query or header"}``;
- 403 ``{"detail": "Wrong, revoked, or expired API key."}`` for any key that may not be used
  (unknown, revoked, expired, owner disabled, wrong network, unconfirmed owner); the reason
  is in the ``X-Apikm-Code`` header (a ``/v1/verify`` code) for operators;
- 429 ``{"detail": ...}`` with ``Retry-After`` from apikm's failure limiter (which counts
  failed checks, not all checks) or the key's own rate limit;
- 503 ``{"detail": ...}`` when the database cannot answer (never a 500).

The key is read from the query parameter ``api-key`` first, then the header ``x-api-key``,
as before; ``/k/<key>/...`` paths put the key in that header (see ``key_in_path``).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, quote

import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Scope

from apikm.verify.codes import Code
from apikm.verify.limiter import LimiterConfigError
from apikm.verify.record import KeyRecord
from apikm.web.context import AppContext
from apikm.web.forward_auth import JSON_TYPE, NO_STORE, Headers

log = structlog.get_logger(__name__)

CHECK_KEY_PATH = "/auth/check_key"
KEY_PATH_PREFIX = "/k/"
QUERY_PARAM = "api-key"
HEADER = b"x-api-key"
MISSING = "An API key must be passed as query or header"
WRONG = "Wrong, revoked, or expired API key."
UNAVAILABLE = "The API key could not be checked now; retry shortly."
# A key in a path segment: apikm keys and uuid4s; the old service took [-a-z0-9]+.
_KEY_IN_PATH = re.compile(r"/k/([-A-Za-z0-9_]{1,200})(/.*)")

Answer = tuple[int, Headers, bytes, str]


def _detail(status: int, detail: str, code: str, *extra: tuple[bytes, bytes]) -> Answer:
    body = json.dumps({"detail": detail}).encode()
    return status, [JSON_TYPE, NO_STORE, (b"x-apikm-code", code.encode()), *extra], body, code


_MISSING = _detail(403, MISSING, "missing_key")
_WRONG: dict[str, Answer] = {code.value: _detail(403, WRONG, code.value) for code in Code}


def check_key_body(record: KeyRecord) -> bytes:
    """The 200 body, built once per cached record."""
    body: bytes | None = record.memo.get("check_key_body")
    if body is None:
        config: dict[str, Any] = {**record.meta, **record.owner_attributes}
        body = record.memo["check_key_body"] = json.dumps({
            "user_id": record.owner_id,
            "user_login": record.username,
            "iam_roles": sorted(record.effective_roles),
            "config": config,
        }).encode()
    return body


def find_key(scope: Scope, headers: dict[bytes, bytes]) -> str | None:
    """``?api-key=`` first, then the ``x-api-key`` header (the old service's order)."""
    query: bytes = scope["query_string"]
    if query and QUERY_PARAM.encode() in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name == QUERY_PARAM and value.strip():
                return value.strip()
    sent = headers.get(HEADER)
    if sent and sent.strip():
        return sent.decode("latin-1").strip()
    return None


async def check_key(ctx: AppContext, scope: Scope) -> Answer:
    """The whole route: never raises, never a 5xx but 503."""
    if scope["method"] != "GET":
        return _detail(405, "Method Not Allowed", "method_not_allowed", (b"allow", b"GET"))
    headers: dict[bytes, bytes] = dict(scope["headers"])
    key = find_key(scope, headers)
    if key is None:
        return _MISSING
    client_ip = ctx.addresses.resolve(scope, headers)
    try:
        result = await ctx.verifier.verify(key, client_ip=client_ip, limiter_id=client_ip,
                                           endpoint="check_key")
    except (SQLAlchemyError, OSError, LimiterConfigError) as exc:
        log.error("check_key unavailable", error_type=type(exc).__name__)
        return _detail(503, UNAVAILABLE, "unavailable", (b"retry-after", b"5"))
    record = result.record
    if result.valid and record is not None:
        return 200, [JSON_TYPE, NO_STORE], check_key_body(record), "VALID"
    if result.code is Code.RATE_LIMITED:
        retry = result.retry_after or 60
        what = ("this key's rate limit" if result.reason == "key rate limit"
                else "too many failed API key checks from this address")
        return _detail(429, f"Too Many Requests: {what}; retry in {retry} s", "RATE_LIMITED",
                       (b"retry-after", str(retry).encode()))
    return _WRONG[result.code.value]


def key_in_path(scope: Scope, route_path: str) -> tuple[Scope, str] | None:
    """``/k/<key>/<route>`` -> the request for ``/<route>`` with the key in ``x-api-key``
    (replacing any sent), as the old service did for every route. None: not that form.

    The key leaves the path before anything logs it or routes on it."""
    match = _KEY_IN_PATH.fullmatch(route_path)
    if match is None:
        return None
    key, rest = match.group(1), match.group(2)
    prefix = scope["path"][: len(scope["path"]) - len(route_path)]  # APIKM_ROOT_PATH
    headers = [(k, v) for k, v in scope["headers"] if k != HEADER]
    headers.append((HEADER, key.encode("ascii")))  # the pattern allows ASCII only
    path = prefix + rest
    # raw_path as a server would send it: the path's UTF-8 bytes, percent-encoded.
    return {**scope, "path": path, "raw_path": quote(path).encode("ascii"),
            "headers": headers}, rest
