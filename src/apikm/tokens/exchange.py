"""RFC 8693 token exchange: a key (``subject_token``) for a short-lived access token.

Two minters, chosen by ``APIKM_EXCHANGE_MODE``:
- ``apikm``: apikm signs a Keycloak-like JWT itself (see ``claims``), published in its JWKS;
- ``keycloak``: apikm obtains a genuine Keycloak token for the owner through the JWT
  Authorization Grant (see ``keycloak_grant``), limited to the key's roles (``narrowing``).
Either way the key is verified first by ``Verifier.verify``: a suspended, expired, revoked or
network-refused key gets ``invalid_grant`` and counts towards the failure limit.

``subject_token_type`` is ``urn:apikm:params:oauth:token-type:api-key``; the unregistered
``urn:ietf:params:oauth:token-type:api_key`` some tools send is accepted as a synonym.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from apikm.config import Settings
from apikm.tokens import narrowing
from apikm.tokens.claims import DEFAULT_SCOPE, access_token_claims, token_audiences
from apikm.tokens.keycloak_grant import KeycloakGrant, KeycloakGrantError
from apikm.tokens.signing import SigningKeys
from apikm.verify.codes import MESSAGES, Code
from apikm.verify.record import KeyRecord
from apikm.verify.verifier import Verifier

log = structlog.get_logger(__name__)

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN, not a secret
API_KEY_TOKEN_TYPE = "urn:apikm:params:oauth:token-type:api-key"  # noqa: S105 - a URN, not a secret
API_KEY_TOKEN_TYPES = frozenset({API_KEY_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:api_key"})
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN, not a secret
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - a URN, not a secret
ISSUABLE_TOKEN_TYPES = frozenset({ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE})
MAX_PARAMETER_LENGTH = 1024


class OAuthError(Exception):
    """An RFC 6749 error response: ``{"error": ..., "error_description": ...}``."""

    def __init__(self, status: int, error: str, description: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class ExchangeRequest:
    key: str
    requested_token_type: str
    audience: str | None
    scope: str | None


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    issued_token_type: str
    scope: str


def parse_exchange(form: Mapping[str, str]) -> ExchangeRequest:
    if any(len(value) > MAX_PARAMETER_LENGTH for value in form.values()):
        raise OAuthError(400, "invalid_request", "a parameter is too long")
    if form.get("grant_type") != TOKEN_EXCHANGE_GRANT:
        raise OAuthError(400, "unsupported_grant_type",
                         f"grant_type must be {TOKEN_EXCHANGE_GRANT}")
    key = form.get("subject_token")
    if not key:
        raise OAuthError(400, "invalid_request", "subject_token (the API key) is required")
    if form.get("subject_token_type") not in API_KEY_TOKEN_TYPES:
        raise OAuthError(400, "invalid_request",
                         f"subject_token_type must be {API_KEY_TOKEN_TYPE}")
    if form.get("actor_token"):
        raise OAuthError(400, "invalid_request", "delegation (actor_token) is not supported")
    requested = form.get("requested_token_type") or ACCESS_TOKEN_TYPE
    if requested not in ISSUABLE_TOKEN_TYPES:
        raise OAuthError(400, "invalid_request",
                         f"requested_token_type must be {ACCESS_TOKEN_TYPE} or {JWT_TOKEN_TYPE}")
    return ExchangeRequest(key=key, requested_token_type=requested,
                           audience=form.get("audience") or None, scope=form.get("scope") or None)


class Minter(Protocol):
    async def mint(self, record: KeyRecord, audience: str | None = None,
                   scope: str | None = None) -> IssuedToken: ...


class ApikmMinter:
    """Signs the token itself; ``audience`` may narrow ``aud`` to one of its usual values."""

    def __init__(self, settings: Settings, keys: SigningKeys) -> None:
        self._issuer = settings.base_url
        self._audiences = settings.token_audience
        self._authorized_party = settings.oidc_client_id
        self._ttl = settings.token_ttl_seconds
        self._keys = keys

    async def mint(self, record: KeyRecord, audience: str | None = None,
                   scope: str | None = None) -> IssuedToken:
        allowed = token_audiences(record, self._audiences)
        if audience is not None and audience not in allowed:
            raise OAuthError(400, "invalid_target",
                             "audience must be one of: " + ", ".join(allowed))
        now = int(time.time())
        claims = access_token_claims(record, issuer=self._issuer,
                                     audience=[audience] if audience else allowed,
                                     authorized_party=self._authorized_party, now=now,
                                     ttl_seconds=self._ttl)
        return IssuedToken(access_token=self._keys.sign(claims), expires_in=claims["exp"] - now,
                           issued_token_type=ACCESS_TOKEN_TYPE, scope=DEFAULT_SCOPE)


WIDER_THAN_KEY = (
    "Keycloak would issue this key's token with roles the key does not carry (a composite "
    "role of the key includes roles the key lacks: grant the key those too; or the realm is "
    "set up wrongly: the operator must run `apikm keycloak setup`); refused")


class KeycloakMinter:
    """Asks Keycloak (JWT Authorization Grant) for a token limited to the key's roles.

    The key's effective roles become the role scopes asked for (see ``narrowing``); the token
    Keycloak returns is read and refused when it carries any role beyond them or outlives the
    key. ``aud`` holds every client the key holds a role of (Keycloak's audience resolver)
    plus ``audience`` when asked for, else the configured audiences; ``audience`` must be one
    of those, as in apikm mode.
    """

    def __init__(self, grant: KeycloakGrant, settings: Settings) -> None:
        self._grant = grant
        self._alias = settings.keycloak_idp_alias
        self._audiences = settings.token_audience

    async def mint(self, record: KeyRecord, audience: str | None = None,
                   scope: str | None = None) -> IssuedToken:
        roles = record.effective_roles
        inexpressible = narrowing.inexpressible_roles(roles, self._alias)
        if inexpressible:
            raise OAuthError(400, "invalid_scope", "Keycloak tokens from apikm cannot carry "
                             + ", ".join(inexpressible) + "; use a key without them")
        allowed = token_audiences(record, self._audiences)
        if audience is not None and audience not in allowed:
            raise OAuthError(400, "invalid_target",
                             "audience must be one of: " + ", ".join(allowed))
        wanted = [audience] if audience is not None else self._audiences
        try:
            requested = narrowing.requested_scope(self._alias, roles, wanted, scope)
        except narrowing.ScopeRequestError as exc:
            raise OAuthError(400, "invalid_scope", str(exc)) from None
        try:
            token = await self._grant.token_for(record, requested)
        except KeycloakGrantError as exc:
            if exc.owner_refused:
                raise OAuthError(400, "invalid_grant", str(exc)) from None
            if exc.scope_refused:
                raise OAuthError(400, "invalid_scope", str(exc)) from None
            raise OAuthError(503, "temporarily_unavailable", str(exc)) from None
        try:
            claims = narrowing.unverified_claims(token.access_token)
        except ValueError:
            log.warning("keycloak answered the authorization grant with a token that is no JWT")
            raise OAuthError(503, "temporarily_unavailable",
                             "Keycloak answered without a readable token") from None
        self._check(record, claims)
        if audience is not None and audience not in narrowing.audiences(claims):
            log.error("keycloak left the audience asked for out of the token: run apikm "
                      "keycloak setup", audience=audience)
            raise OAuthError(503, "temporarily_unavailable",
                             "Keycloak did not issue the audience asked for")
        return IssuedToken(access_token=token.access_token, expires_in=token.expires_in,
                           issued_token_type=ACCESS_TOKEN_TYPE, scope=token.scope)

    def _check(self, record: KeyRecord, claims: Mapping[str, Any]) -> None:
        """Fail closed: nothing wider than the key, nothing longer-lived than the key."""
        beyond = narrowing.roles_beyond(claims, record.effective_roles)
        if beyond:
            narrowing.TOKENS_REFUSED.labels("wider_roles").inc()
            log.error("refused a keycloak token wider than its key: the exchange client must "
                      "have full scope off, no roles and no role scope mappings but apikm's "
                      "(run apikm keycloak setup), or a composite role of the key holds roles "
                      "the key lacks", key_id=record.id, extra_roles=sorted(beyond))
            raise OAuthError(400, "invalid_scope", WIDER_THAN_KEY)
        expires = claims.get("exp")
        if not isinstance(expires, int) or expires > int(record.expires_ts) + 1:
            narrowing.TOKENS_REFUSED.labels("outlives_key").inc()
            log.error("refused a keycloak token that outlives its key: enable "
                      "jwtAuthorizationGrantLimitAccessTokenExp on apikm's identity provider "
                      "(run apikm keycloak setup)", key_id=record.id)
            raise OAuthError(503, "temporarily_unavailable",
                             "Keycloak issued a token that would outlive the key; refused")


class TokenExchange:
    def __init__(self, verifier: Verifier, minter: Minter) -> None:
        self._verifier = verifier
        self._minter = minter

    async def exchange(self, request: ExchangeRequest, client_ip: str | None,
                       limiter_id: str) -> IssuedToken:
        result = await self._verifier.verify(request.key, client_ip=client_ip,
                                             limiter_id=limiter_id, endpoint="exchange")
        if result.code is Code.RATE_LIMITED:
            retry = {"Retry-After": str(result.retry_after)} if result.retry_after else None
            raise OAuthError(429, "slow_down", MESSAGES[result.code], retry)
        if not result.valid or result.record is None:
            raise OAuthError(400, "invalid_grant", MESSAGES[result.code])
        issued = await self._minter.mint(result.record, request.audience, request.scope)
        if request.requested_token_type == JWT_TOKEN_TYPE:
            # Both minters issue JWTs; say so when that is what was asked for.
            return IssuedToken(issued.access_token, issued.expires_in, JWT_TOKEN_TYPE,
                               issued.scope)
        return issued
