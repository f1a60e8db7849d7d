"""Local validation of Keycloak access tokens against the realm's JWKS.

Strict: signature (asymmetric algorithms only), issuer, expiry and not-before with a small
leeway, audience *or* authorized party, and ``typ`` Bearer so an ID token is not taken for an
access token. Signing keys are cached; an unknown ``kid`` triggers one refresh (rate limited),
which is how Keycloak key rotation is followed without restarts; a failing Keycloak is asked
again only after a growing pause (see ``JwksCache``).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import httpx
import structlog
from joserfc import jws, jwt
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError
from joserfc.jwk import KeySet

from apikm.identity.principal import Principal, principal_from_claims

log = structlog.get_logger(__name__)

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
LEEWAY_SECONDS = 30
JWKS_REFRESH_MIN_INTERVAL = 10.0
JWKS_FAILURE_BACKOFF = (1.0, 30.0)  # seconds: first, longest
JWKS_FETCH_TIMEOUT = 5.0


class InvalidToken(Exception):
    """The bearer token is not acceptable; the message is safe to return to the caller."""


class JwksCache:
    """The realm's signing keys. One fetch at a time (everyone else waits for it); a failed
    fetch is remembered for a growing while (``backoff``: 1 s, doubling up to 30 s) so a
    failing Keycloak is not asked again by every token; and a ``kid`` it does not know makes
    it fetch at most once per ``refresh_interval``."""

    def __init__(self, url: str, http: httpx.AsyncClient, *,
                 refresh_interval: float = JWKS_REFRESH_MIN_INTERVAL,
                 backoff: tuple[float, float] = JWKS_FAILURE_BACKOFF,
                 timeout: float = JWKS_FETCH_TIMEOUT) -> None:
        self._url = url
        self._http = http
        self._refresh_interval = refresh_interval
        self._backoff = backoff
        self._timeout = timeout
        self._keys: KeySet | None = None
        self._fetched_at = -math.inf  # last successful fetch (monotonic)
        self._failures = 0  # failed fetches in a row
        self._retry_at = -math.inf  # no fetch before this after a failure
        self._inflight: asyncio.Task[KeySet] | None = None

    async def key_set(self, kid: str | None) -> KeySet:
        keys = self._keys
        if keys is not None and (kid is None or _has_kid(keys, kid)):
            return keys
        if self._inflight is None:
            now = time.monotonic()
            if now < self._retry_at:
                raise InvalidToken("identity provider keys are unavailable")
            if keys is not None and now - self._fetched_at < self._refresh_interval:
                return keys  # an unknown kid, but the keys are fresh: it is not Keycloak's
            self._inflight = asyncio.create_task(self._refresh(), name="jwks-fetch")
            self._inflight.add_done_callback(self._landed)
        try:
            # shield: a caller that gives up (client gone) must not cancel everyone's fetch
            return await asyncio.shield(self._inflight)
        except InvalidToken:  # one exception object per waiter, not one shared by all
            raise InvalidToken("identity provider keys are unavailable") from None

    def _landed(self, task: asyncio.Task[KeySet]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiter gave up

    async def _refresh(self) -> KeySet:
        try:
            keys = await self._fetch()
        except InvalidToken:
            self._failures += 1
            first, longest = self._backoff
            self._retry_at = time.monotonic() + min(first * 2 ** (self._failures - 1), longest)
            raise
        self._keys, self._fetched_at = keys, time.monotonic()
        self._failures, self._retry_at = 0, -math.inf
        return keys

    async def _fetch(self) -> KeySet:
        try:
            response = await self._http.get(self._url, timeout=self._timeout)
            response.raise_for_status()
            data = response.json()
            # Keycloak also publishes encryption keys ("use": "enc"); only signing keys matter.
            signing = [k for k in data["keys"] if k.get("use", "sig") == "sig"]
            return KeySet.import_key_set({"keys": signing})
        except (httpx.HTTPError, ValueError, JoseError, LookupError, TypeError,
                AttributeError) as exc:  # unreachable, refused, or not a key set
            log.warning("identity provider keys unavailable", url=self._url,
                        error_type=type(exc).__name__)
            raise InvalidToken("identity provider keys are unavailable") from exc


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys.keys)


class TokenValidator:
    def __init__(self, issuer: str, audience: str, http: httpx.AsyncClient,
                 leeway: int = LEEWAY_SECONDS) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.jwks = JwksCache(f"{issuer}/protocol/openid-connect/certs", http)

    async def validate(self, token: str, client_ip: str | None = None) -> Principal:
        try:
            header = jws.extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError):
            raise InvalidToken("malformed bearer token") from None
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken("unsupported token signature algorithm")
        keys = await self.jwks.key_set(header.get("kid"))
        try:
            decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
        except (JoseError, ValueError):
            raise InvalidToken("token signature is not valid") from None
        claims = decoded.claims
        self._check_claims(claims)
        return principal_from_claims(claims, client_ip)

    def _check_claims(self, claims: dict[str, Any]) -> None:
        registry = jwt.JWTClaimsRegistry(
            leeway=self.leeway,
            iss={"essential": True, "value": self.issuer},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise InvalidToken(_claim_message(exc)) from None
        if claims.get("typ") != "Bearer":  # Keycloak marks access tokens; ID tokens are "ID"
            raise InvalidToken("not an access token")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.audience not in audiences and claims.get("azp") != self.audience:
            raise InvalidToken("token is not meant for this service (audience)")


def _claim_message(exc: JoseError) -> str:
    if isinstance(exc, ExpiredTokenError):
        return "token has expired"
    if isinstance(exc, ClaimError):  # wrong iss, missing sub, not yet valid (nbf/iat), ...
        return f"token claim rejected: {exc.description}"
    return "token rejected"
