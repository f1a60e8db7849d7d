"""Local validation of Keycloak access tokens against the realm's JWKS.

Strict: signature (asymmetric algorithms only), issuer, expiry and not-before with a small
leeway, audience *or* authorized party, and ``typ`` Bearer so an ID token is not taken for an
access token. Signing keys are cached; an unknown ``kid`` triggers one refresh (rate limited),
which is how Keycloak key rotation is followed without restarts.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError
from joserfc.jwk import KeySet

from apikm.identity.principal import Principal, principal_from_claims

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
LEEWAY_SECONDS = 30
JWKS_REFRESH_MIN_INTERVAL = 10.0


class InvalidToken(Exception):
    """The bearer token is not acceptable; the message is safe to return to the caller."""


class JwksCache:
    def __init__(self, url: str, http: httpx.AsyncClient) -> None:
        self._url = url
        self._http = http
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def key_set(self, kid: str | None) -> KeySet:
        keys = self._keys
        if keys is not None and (kid is None or _has_kid(keys, kid)):
            return keys
        async with self._lock:
            fresh_enough = time.monotonic() - self._fetched_at < JWKS_REFRESH_MIN_INTERVAL
            if self._keys is None or not fresh_enough:
                self._keys = await self._fetch()
                self._fetched_at = time.monotonic()
            return self._keys

    async def _fetch(self) -> KeySet:
        try:
            response = await self._http.get(self._url, timeout=5.0)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise InvalidToken("identity provider keys are unavailable") from exc
        # Keycloak also publishes encryption keys ("use": "enc"); only signing keys matter.
        signing = [k for k in data.get("keys", []) if k.get("use", "sig") == "sig"]
        return KeySet.import_key_set({"keys": signing})


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
