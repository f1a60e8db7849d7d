"""What ``ANY /v1/auth`` decides, as plain functions over the request's headers and query
(the ASGI plumbing is in ``gateway.py``): forward auth for nginx ``auth_request``, Caddy
``forward_auth``, Traefik ForwardAuth and Envoy ``ext_authz`` (HTTP service).

The answer is exactly one of: 200 with identity headers, 401 with ``WWW-Authenticate``, 403,
or 429 with ``Retry-After``. Proxies turn any other status into a 500 for the client, so
nothing else may leave here, not even on an internal error (that denies with 403).

Every refusal says why, in a place each gateway can pass on (nginx drops the body of an
``auth_request`` answer): ``X-Auth-Error`` (the code: ``EXPIRED``, ``INSUFFICIENT_ROLES``,
``missing_key`` ...), ``X-Auth-Error-Description`` (one sentence, naming the missing roles;
safe to put between JSON double quotes), the 401's ``WWW-Authenticate`` ``error`` and
``error_description`` (RFC 6750; none when no key was given at all), and a JSON body. None
of them ever holds the key. All are built once per distinct refusal and kept.

Where the key is looked for, first match wins (a candidate shaped like one of our keys beats
one that is not, so a stray Keycloak bearer token does not hide a key given elsewhere):
1. the ``APIKM_AUTH_HEADER`` headers (default ``X-API-Key``);
2. ``Authorization: Bearer <key>``, or ``Authorization: Basic`` with the key as the password
   (any user name) or, with an empty password, as the user name (``curl -u KEY:``);
3. the ``APIKM_AUTH_QUERY_PARAM`` parameter (default ``apikey``) of the original request's
   URI, from ``X-Original-URI`` (nginx), ``X-Original-URL`` (ingress-nginx's ``auth-url``)
   or ``X-Forwarded-Uri`` (Traefik, Caddy), or of this request's own query (Envoy appends
   the original path and query to the auth URL).

Required roles: every ``role`` query parameter of the auth URL, plus the comma-separated
``X-Auth-Require-Roles`` header (for Envoy, whose auth URL cannot carry a query). Both only
ever add requirements, so a client that smuggles either into its request gains nothing.

``?jwt=1`` on the auth URL (or ``APIKM_AUTH_UPSTREAM_JWT=true``) adds a short-lived access
token for the upstream, as ``Authorization`` and ``X-Auth-Token`` (both ``Bearer <jwt>``), for
the proxy to copy onto the upstream request.

The client address (for key network restrictions and failure counting) is the TCP peer, or,
when the peer is one of ``APIKM_TRUSTED_PROXIES``, what the one header named by
``APIKM_CLIENT_IP_HEADER`` says (``X-Forwarded-For`` walked from the right to the first
untrusted hop, or ``X-Real-IP``); see ``web/clientip.py``.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import parse_qsl, quote

from apikm.config import Settings
from apikm.verify.codes import MESSAGES, Code
from apikm.verify.record import KeyRecord
from apikm.verify.verifier import Verification

MAX_ROLES = 100
MAX_ROLE_LENGTH = 255
ROLES_HEADER = b"x-auth-require-roles"
ORIGINAL_URI_HEADERS = (b"x-original-uri", b"x-original-url", b"x-forwarded-uri")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
ROTATED = "rotated"  # the reason of a secret revoked by rotation (verify/rules.py)

# 401: no usable credential; 403: a good key that may not do this (or an internal error,
# denied closed); 429: the failure limiter or the key's own rate limit.
FORBIDDEN = frozenset({Code.IP_NOT_ALLOWED, Code.INSUFFICIENT_ROLES, Code.STALE})
# Header values must be latin-1 for HTTP; names and groups may be any Unicode, so anything
# outside printable ASCII (and '%' itself) is percent-encoded as UTF-8.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
# A description is also quoted (WWW-Authenticate) and put into JSON by gateways.
_DESCRIPTION_SAFE = _HEADER_SAFE.replace('"', "").replace("\\", "")
# Distinct refusals kept; only roles a client adds through X-Auth-Require-Roles could make
# more of them, and those are built on the fly once the table is full.
MAX_DENIALS = 4096

Headers = Sequence[tuple[bytes, bytes]]  # read only: answers share them
NO_STORE = (b"cache-control", b"no-store")
JSON_TYPE = (b"content-type", b"application/json")


def header_value(text: str) -> str:
    return quote(text, safe=_HEADER_SAFE)


@functools.lru_cache(maxsize=1024)
def parse_query(query_string: bytes) -> tuple[tuple[str, str], ...]:
    """The auth URL's query: the same few strings on every request of a location."""
    return tuple(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))


class ForwardAuthRules:
    """Where the key is, which roles are required, what the answer looks like."""

    def __init__(self, settings: Settings) -> None:
        self._key_headers = tuple(name.lower().encode("latin-1") for name in settings.auth_header)
        self._query_param = settings.auth_query_param
        self._key_start = settings.key_prefix + "_"
        self.always_jwt = settings.auth_upstream_jwt
        self._attribute_headers = settings.auth_attribute_headers
        realm = settings.auth_realm.replace('"', "")
        self._bearer = f'Bearer realm="{realm}"'
        self._basic = f'Basic realm="{realm}", charset="UTF-8"'
        self._denials: dict[tuple[int, str, tuple[str, ...]], tuple[Headers, bytes]] = {}

    # --- finding the key ----------------------------------------------------------------
    def find_key(self, headers: dict[bytes, bytes],
                 query: tuple[tuple[str, str], ...]) -> str | None:
        # The configured header, as a gateway sends it, is by far the common case.
        value = headers.get(self._key_headers[0]) if self._key_headers else None
        if value and value.startswith(self._key_start.encode()):
            return value.decode("latin-1").strip()
        first: str | None = None
        for candidate in self._candidates(headers, query):
            if candidate.startswith(self._key_start):
                return candidate
            first = first or candidate
        return first

    def _candidates(self, headers: dict[bytes, bytes],
                    query: tuple[tuple[str, str], ...]) -> Iterator[str]:
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
            if uri:  # its query, as urlsplit() finds it but without raising ("//[?apikey=")
                query_string = uri.decode("latin-1").partition("#")[0].partition("?")[2]
                yield from self._query_keys(parse_qsl(query_string, keep_blank_values=True))
        yield from self._query_keys(query)

    def _query_keys(self, pairs: Iterable[tuple[str, str]]) -> Iterator[str]:
        for name, value in pairs:
            if name == self._query_param and value.strip():
                yield value.strip()

    @staticmethod
    def wants_jwt(query: tuple[tuple[str, str], ...]) -> bool:
        return any(name == "jwt" and value.lower() in TRUE_WORDS for name, value in query)

    # --- answers ------------------------------------------------------------------------
    def identity_headers(self, record: KeyRecord) -> Headers:
        """The 200 answer's headers, built once per cached record."""
        cached: Headers | None = record.memo.get("auth_headers")
        if cached is None:
            built = [
                (b"x-auth-user", header_value(record.username).encode()),
                (b"x-auth-user-id", header_value(record.owner_id).encode()),
                (b"x-auth-email", header_value(record.email or "").encode()),
                (b"x-auth-roles",
                 header_value(",".join(sorted(record.effective_roles))).encode()),
                (b"x-auth-groups", header_value(",".join(record.owner_groups)).encode()),
                (b"x-auth-key-id", record.id.encode()),
            ]
            if self._attribute_headers:  # X-Auth-Attr-<name>: values comma-separated
                built += attribute_headers(record.owner_attributes)
            # A tuple of bytes pairs: the collector stops tracking it (see KeyStore).
            cached = record.memo["auth_headers"] = (*built, NO_STORE)
        return cached

    def refusal(self, result: Verification) -> tuple[int, Headers, bytes]:
        """Status, headers and body refusing a key that did not verify."""
        code = result.code
        status = self.status_for(code)
        if status == 429:
            return (status, *self.denial(status, code.value, result.retry_after or 60))
        if code is Code.INSUFFICIENT_ROLES:
            return (status, *self.denial(status, code.value, detail=result.missing_roles))
        if code is Code.REVOKED and result.reason == ROTATED:
            return (status, *self.denial(status, code.value, detail=(ROTATED,)))
        return (status, *self.denial(status, code.value))

    def denial(self, status: int, code: str, retry_after: int | None = None,
               detail: tuple[str, ...] = ()) -> tuple[Headers, bytes]:
        """Headers and JSON body of a 401/403/429 (never a secret in it); ``detail``: the
        missing roles of ``INSUFFICIENT_ROLES``, or ``("rotated",)`` for ``REVOKED``."""
        if retry_after is not None:
            headers, body = self.denial(status, code)
            return [*headers, (b"retry-after", str(retry_after).encode())], body
        cached = self._denials.get((status, code, detail))
        if cached is None:
            cached = self._build_denial(status, code, detail)
            if len(self._denials) < MAX_DENIALS:
                self._denials[(status, code, detail)] = cached
        return cached

    def _build_denial(self, status: int, code: str, detail: tuple[str, ...]
                      ) -> tuple[Headers, bytes]:
        message = MESSAGES[Code(code)] if code in Code.__members__ else _MESSAGES[code]
        answer: dict[str, object] = {"error": code, "message": message}
        if code == Code.INSUFFICIENT_ROLES and detail:
            message = answer["message"] = f"API key lacks the required roles: {', '.join(detail)}"
            answer["missing_roles"] = list(detail)
        elif code == Code.REVOKED and detail == (ROTATED,):
            message = answer["message"] = ("API key has been revoked: its secret was rotated "
                                           "(use the new one)")
        description = quote(message, safe=_DESCRIPTION_SAFE)
        headers = [JSON_TYPE, NO_STORE, (b"x-auth-error", code.encode()),
                   (b"x-auth-error-description", description.encode())]
        if status == 401:
            bearer = self._bearer
            if code != "missing_key":  # RFC 6750: no error when no credential was sent
                bearer += f', error="invalid_token", error_description="{description}"'
            headers.append((b"www-authenticate", f"{bearer}, {self._basic}".encode()))
        return headers, json.dumps(answer).encode()

    @staticmethod
    def status_for(code: Code) -> int:
        if code is Code.RATE_LIMITED:
            return 429
        return 403 if code in FORBIDDEN else 401


def attribute_headers(attributes: dict[str, object]) -> list[tuple[bytes, bytes]]:
    """``X-Auth-Attr-<name>`` per attribute (names are checked header tokens); several
    values are joined with commas, each percent-encoded like the other identity headers."""
    headers: list[tuple[bytes, bytes]] = []
    for name, value in sorted(attributes.items()):
        values = value if isinstance(value, list) else [value]
        joined = ",".join(header_value(str(v)).replace(",", "%2C") for v in values)
        headers.append((f"x-auth-attr-{name.lower()}".encode("latin-1"), joined.encode()))
    return headers


_MESSAGES = {
    "missing_key": "an API key is required",
    "bad_roles": "too many or too long required roles",
    "unavailable": "authorization could not be decided",
    "jwt_refused": "no upstream token for this key: Keycloak cannot issue one limited to "
                   "the key's roles (POST /oauth/token with the key says why)",
}


def credential_from_authorization(value: str) -> str | None:
    scheme, _, credential = value.strip().partition(" ")
    credential = credential.strip()
    if not credential:
        return None
    if scheme.lower() == "bearer":
        return credential
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credential, validate=True)
        except ValueError:  # binascii.Error, or characters outside ASCII
            return None
        # The key is the password (or the user name, for ``curl -u KEY:``). Any user name
        # is accepted, so its encoding must not matter: each part is decoded on its own.
        user, _, password = decoded.partition(b":")
        try:
            return (password or user).decode("utf-8") or None
        except UnicodeDecodeError:
            return None
    return None


def required_roles(query: tuple[tuple[str, str], ...],
                   headers: dict[bytes, bytes]) -> tuple[str, ...] | None:
    """Roles from ``?role=`` and ``X-Auth-Require-Roles``; None when over the limits."""
    listed = headers.get(ROLES_HEADER)
    if not listed:
        return _roles(query, ())  # the auth URL's query: the same on every request
    extra = tuple(r.strip() for r in listed.decode("latin-1").split(",") if r.strip())
    return _roles(query, extra[:MAX_ROLES + 1])


@functools.lru_cache(maxsize=1024)
def _roles(query: tuple[tuple[str, str], ...], extra: tuple[str, ...]) -> tuple[str, ...] | None:
    roles = {value.strip() for name, value in query if name == "role" and value.strip()}
    roles.update(extra)
    if len(roles) > MAX_ROLES or any(len(role) > MAX_ROLE_LENGTH for role in roles):
        return None
    return tuple(sorted(roles))
