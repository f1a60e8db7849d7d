"""The gateway path, socket to answer: ``ANY /v1/auth`` and ``POST /v1/verify``.

Every request a gateway protects comes through here, so these two routes skip the framework
entirely (no middleware stack, no Request object, no dependency injection): ``Gateway`` is
the outermost ASGI app, answers them itself and hands every other path to the FastAPI app.
The whole path is::

    Gateway.__call__ -> auth()/verify() -> Verifier.verify() -> send()

Under ``apikm serve`` (uvicorn) most requests take a shorter one still: when the answer needs
no I/O (a cached key), ``gateway_protocol.GatewayProtocol`` asks ``Gateway.answer_now`` from
uvicorn's parser callbacks and writes the answer to the socket, without an ASGI cycle. Both
ways share every decision below (``_auth_request``, ``_auth_answer``, ``_verify_request``).

APIKeyManager's ``GET /auth/check_key`` (rs-server's hot path) is answered here too, after
the two routes above, and ``/k/<key>/<route>`` is unwrapped into ``/<route>`` with the key in
``x-api-key`` (``apikm.compat.check_key``; ``APIKM_COMPAT_API``). ``APIKM_ROOT_PATH`` sets
the ASGI ``root_path``: requests are taken with or without that prefix.

What forward auth decides (where the key is, roles, answer headers) is in
``forward_auth.py``; the verification itself in ``apikm.verify``. Requests are logged off
the event loop by ``GatewayLog`` (denials by default: the gateway logs every request).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from apikm.compat.check_key import CHECK_KEY_PATH, KEY_PATH_PREFIX, check_key, key_in_path
from apikm.config import Settings
from apikm.tokens.exchange import OAuthError
from apikm.tokens.upstream import UpstreamTokens
from apikm.verify.codes import Code
from apikm.verify.limiter import LimiterConfigError
from apikm.verify.verifier import Verification, identity_json
from apikm.web.context import AppContext
from apikm.web.forward_auth import (
    JSON_TYPE,
    NO_STORE,
    ForwardAuthRules,
    Headers,
    parse_query,
    required_roles,
)
from apikm.web.gateway_log import GatewayLog
from apikm.web.verify_body import BadVerifyRequest, parse_verify_body

log = structlog.get_logger(__name__)

AUTH_PATH = "/v1/auth"
VERIFY_PATH = "/v1/verify"
_VALID_HEAD = b'{"valid": true, "code": "VALID", '
# status, headers, body, and the code the access log records
Answer = tuple[int, Headers, bytes, str]


class Gateway:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app  # everything that is not the gateway path
        self.ctx: AppContext | None = None  # set by the app's lifespan
        self.upstream: UpstreamTokens | None = None  # likewise: JWTs for ?jwt=1
        self.rules = ForwardAuthRules(settings)
        self.log = GatewayLog(settings.gateway_access_log)
        self.max_body = settings.max_body_bytes
        self._root_path = settings.root_path
        self._compat = settings.compat_api
        self._check_key_app: ASGIApp = self.check_key
        if settings.cors_origins_regex:  # as APIKeyManager's CORS applied to check_key too
            from starlette.middleware.cors import CORSMiddleware

            self._check_key_app = CORSMiddleware(
                self.check_key, allow_origin_regex=settings.cors_origins_regex,
                allow_methods=["GET"], allow_headers=["x-api-key"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if self._root_path:
                scope, path = _rooted(scope, path, self._root_path)
            route = gateway_route(path)
            if route == "auth":
                await self.auth(scope, send)
                return
            if route == "verify":
                await self.verify(scope, receive, send)
                return
            if self._compat:
                if path.startswith(KEY_PATH_PREFIX):
                    unwrapped = key_in_path(scope, path)
                    if unwrapped is not None:
                        scope, path = unwrapped
                        if gateway_route(path) == "auth":
                            await self.auth(scope, send)
                            return
                if path == CHECK_KEY_PATH:
                    await self._check_key_app(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    # --- GET /auth/check_key (APIKeyManager) ---------------------------------------------
    async def check_key(self, scope: Scope, _receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        assert self.ctx is not None
        status, headers, body, code = await check_key(self.ctx, scope)
        await _send(send, status, headers, body)
        self.log.record(scope, status, code, started)

    # --- ANY /v1/auth --------------------------------------------------------------------
    async def auth(self, scope: Scope, send: Send) -> None:
        """Exactly 200, 401, 403 or 429: proxies turn anything else into their own 500."""
        started = time.perf_counter()
        try:
            status, headers, body, code = await self._auth(scope)
        except Exception as exc:  # never a 5xx, deny closed
            log.error("forward auth failed", error_type=type(exc).__name__)
            status, code = 403, "unavailable"
            headers, body = self.rules.denial(status, code)
        await _send(send, status, headers, body)
        self.log.record(scope, status, code, started)

    def auth_now(self, scope: Scope) -> Answer | None:
        """The answer when it needs no I/O (see ``Verifier.verify_now``), else None."""
        assert self.ctx is not None
        request = self._auth_request(scope)
        if not isinstance(request, _AuthRequest):
            return request
        if request.jwt:  # minting a token is I/O
            return None
        result = self.ctx.verifier.verify_now(
            request.key, client_ip=request.client_ip, limiter_id=request.client_ip,
            required_roles=request.roles, endpoint="auth")
        return None if result is None else self._auth_answer(result)

    async def _auth(self, scope: Scope) -> Answer:
        assert self.ctx is not None
        request = self._auth_request(scope)
        if not isinstance(request, _AuthRequest):
            return request
        result = await self.ctx.verifier.verify(
            request.key, client_ip=request.client_ip, limiter_id=request.client_ip,
            required_roles=request.roles, endpoint="auth")
        if not (result.valid and request.jwt and result.record is not None):
            return self._auth_answer(result)
        assert self.upstream is not None
        try:
            bearer = (await self.upstream.authorization_for(result.record)).encode()
        except OAuthError as exc:
            if exc.status >= 500:  # Keycloak could not answer: deny closed, say so
                raise
            return (403, *self.rules.denial(403, "jwt_refused"), "jwt_refused")
        return self._auth_answer(result, bearer)

    def _auth_request(self, scope: Scope) -> _AuthRequest | Answer:
        """What the request asks (key, roles, client address), or the refusal."""
        assert self.ctx is not None
        headers: dict[bytes, bytes] = dict(scope["headers"])
        query = parse_query(scope["query_string"])
        key = self.rules.find_key(headers, query)
        if key is None:
            return (401, *self.rules.denial(401, "missing_key"), "missing_key")
        roles = required_roles(query, headers)
        if roles is None:
            return (403, *self.rules.denial(403, "bad_roles"), "bad_roles")
        client_ip = self.ctx.addresses.resolve(scope, headers)
        jwt = self.rules.always_jwt or self.rules.wants_jwt(query)
        return _AuthRequest(key, roles, client_ip, jwt)

    def _auth_answer(self, result: Verification, bearer: bytes | None = None) -> Answer:
        record = result.record
        if result.valid and record is not None:
            answer = self.rules.identity_headers(record)
            if bearer is not None:
                answer = [*answer, (b"authorization", bearer), (b"x-auth-token", bearer)]
            return 200, answer, b"", "VALID"
        return (*self.rules.refusal(result), result.code.value)

    # --- POST /v1/verify -----------------------------------------------------------------
    async def verify(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Always 200 with ``{"valid", "code", ...}``; 400 for a malformed body, 405, 413,
        or 503 when the database or the limiter storage cannot answer."""
        started = time.perf_counter()
        try:
            status, headers, body, code = await self._verify(scope, receive)
        except (SQLAlchemyError, OSError, LimiterConfigError) as exc:
            log.error("verification unavailable", error_type=type(exc).__name__)
            status, code = 503, "unavailable"
            headers, body = _error(503, code, "verification is unavailable; retry shortly")
        await _send(send, status, headers, body)
        self.log.record(scope, status, code, started)

    def verify_now(self, scope: Scope, raw: bytes | None) -> Answer | None:
        """The answer to a whole request body (None: it was over the limit) when it needs
        no I/O, else None."""
        assert self.ctx is not None
        request = self._verify_request(scope, raw)
        if not isinstance(request, _VerifyRequest):
            return request
        result = self.ctx.verifier.verify_now(
            request.key, client_ip=request.client_ip, limiter_id=request.client_ip,
            required_roles=request.roles)
        return None if result is None else _verify_answer(result)

    async def _verify(self, scope: Scope, receive: Receive) -> Answer:
        assert self.ctx is not None
        raw = await _read_body(receive, self.max_body) if scope["method"] == "POST" else b""
        request = self._verify_request(scope, raw)
        if not isinstance(request, _VerifyRequest):
            return request
        result = await self.ctx.verifier.verify(
            request.key, client_ip=request.client_ip, limiter_id=request.client_ip,
            required_roles=request.roles)
        return _verify_answer(result)

    def _verify_request(self, scope: Scope, raw: bytes | None) -> _VerifyRequest | Answer:
        assert self.ctx is not None
        if scope["method"] != "POST":
            return (405, *_error(405, "method_not_allowed", "use POST"), "method_not_allowed")
        if raw is None:
            message = f"request body exceeds {self.max_body} bytes"
            return (413, *_error(413, "payload_too_large", message), "payload_too_large")
        try:
            key, required, claimed_ip = parse_verify_body(raw)
        except BadVerifyRequest as exc:
            return (400, *_error(400, "invalid_request", str(exc)), "invalid_request")
        client = scope.get("client")
        peer: str = client[0] if client else ""
        # A trusted gateway (judged by the TCP peer, never by forwarded headers) speaks for
        # its clients: their address is checked against the key's networks and counted by
        # the failure limiter. Anyone else is judged by their own address.
        if claimed_ip and self.ctx.addresses.is_trusted(peer):
            client_ip = claimed_ip
        else:
            client_ip = self.ctx.addresses.resolve(scope)
        return _VerifyRequest(key, required, client_ip)

    # --- the route of a path, for callers that answer without ASGI (gateway_protocol) ---
    def route(self, path: str) -> str | None:
        """"auth", "verify", or None (anything else, through ``__call__``)."""
        if self._root_path and (path == self._root_path
                                or path.startswith(self._root_path + "/")):
            path = path[len(self._root_path):] or "/"
        return gateway_route(path)

    def answer_now(self, route: str, scope: Scope, body: bytes | None) -> Answer | None:
        """``auth_now`` or ``verify_now``, logged like the ASGI path; None to go there."""
        started = time.perf_counter()
        answer = self.auth_now(scope) if route == "auth" else self.verify_now(scope, body)
        if answer is not None:
            self.log.record(scope, answer[0], answer[3], started)
        return answer


@dataclass(frozen=True, slots=True)
class _AuthRequest:
    key: str
    roles: tuple[str, ...]
    client_ip: str
    jwt: bool


@dataclass(frozen=True, slots=True)
class _VerifyRequest:
    key: str
    roles: list[str]
    client_ip: str


_VERIFY_HEADERS: Headers = [JSON_TYPE, NO_STORE]  # never changed: shared by every answer


def _verify_answer(result: Verification) -> Answer:
    headers = _VERIFY_HEADERS
    if result.code is Code.RATE_LIMITED and result.retry_after:
        headers = [*headers, (b"retry-after", str(result.retry_after).encode())]
    return 200, headers, verification_body(result), result.code.value


def gateway_route(path: str) -> str | None:
    if path == AUTH_PATH or path.startswith("/v1/auth/"):  # Envoy appends the path
        return "auth"
    return "verify" if path == VERIFY_PATH else None


def _rooted(scope: Scope, path: str, root: str) -> tuple[Scope, str]:
    """The request with ``root_path`` set, and the path to route on: requests come with the
    prefix (a proxy that passes it) or without (one that strips it)."""
    scope = {**scope, "root_path": root}
    if path == root or path.startswith(root + "/"):
        return scope, path[len(root):] or "/"
    return scope, path


def verification_body(result: Verification) -> bytes:
    """The JSON answer; a VALID one is serialised once per cached record."""
    record = result.record
    if result.valid and record is not None:
        body: bytes | None = record.memo.get("valid_body")
        if body is None:
            identity = json.dumps(identity_json(record), separators=(", ", ": "))
            body = record.memo["valid_body"] = _VALID_HEAD + identity[1:].encode()
        return body
    return json.dumps(result.to_json()).encode()


def _error(status: int, error: str, message: str) -> tuple[Headers, bytes]:
    return [JSON_TYPE, NO_STORE], json.dumps({"error": error, "message": message}).encode()


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it exceeds ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _send(send: Send, status: int, headers: Headers, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
