"""Genuine Keycloak access tokens for key owners, through the JWT Authorization Grant.

RFC 7523 as Keycloak 26.6+ implements it: apikm is registered in the realm as an identity
provider of type ``jwt-authorization-grant`` (issuer = apikm's base URL, keys from apikm's
JWKS URL), the owner is linked to it (federated identity whose user id is the owner's Keycloak
subject), and apikm, as the confidential client ``APIKM_EXCHANGE_CLIENT_ID``, posts a short,
single-use assertion signed with its current signing key to the realm's token endpoint.
Keycloak then checks the signature, issuer, audience, lifetime, ``jti`` reuse, that the user
exists, is linked, is enabled and has no pending required actions, and issues a token with the
user's roles as the client's scopes map them: only the key's roles, through the role scopes
apikm asks for (see ``narrowing``). ``apikm keycloak setup`` prepares the realm, including
"limit access token expiration" on the identity provider, so the token expires no later than
the assertion, which expires no later than the key.

An owner not linked yet is linked on first use through the admin API, with the client's
service account (which ``setup`` grants ``manage-users`` for that purpose).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import structlog

from apikm.config import Settings
from apikm.identity.service_token import (
    ServiceToken,
    ServiceTokenRefused,
    ServiceTokenUnavailable,
)
from apikm.tokens.signing import SigningKeys
from apikm.verify.record import KeyRecord

log = structlog.get_logger(__name__)

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_ASSERTION_TTL_SECONDS = 300  # Keycloak's default ceiling (jwtAuthorizationGrantMaxAllowed...)
_USER_NOT_LINKED = "User not found"


class KeycloakGrantError(Exception):
    """Keycloak refused or could not be asked; the message is safe to show the key holder."""

    def __init__(self, message: str, *, owner_refused: bool = False,
                 scope_refused: bool = False) -> None:
        super().__init__(message)
        self.owner_refused = owner_refused
        self.scope_refused = scope_refused


@dataclass(frozen=True)
class KeycloakToken:
    access_token: str
    expires_in: int
    scope: str


class KeycloakGrant:
    def __init__(self, settings: Settings, http: httpx.AsyncClient, keys: SigningKeys) -> None:
        self._settings = settings
        self._http = http
        self._keys = keys
        self._token_endpoint = f"{settings.issuer}/protocol/openid-connect/token"
        self._admin_base = (f"{settings.effective_keycloak_admin_url}/admin/realms/"
                            f"{quote(settings.keycloak_realm, safe='')}")
        secret = settings.exchange_client_secret
        self._service_token = ServiceToken(
            http, self._token_endpoint, settings.exchange_client_id,
            secret.get_secret_value(), 10.0) if secret else None

    def assertion(self, subject: str, not_after: float | None = None) -> str:
        """A single-use assertion for ``subject``, expiring with the token apikm wants (its
        lifetime, capped by Keycloak's ceiling) and never after ``not_after`` (the key's end)."""
        now = int(time.time())
        expires = now + min(self._settings.token_ttl_seconds, MAX_ASSERTION_TTL_SECONDS)
        if not_after is not None:
            expires = min(expires, int(not_after))
        return self._keys.sign({
            "iss": self._settings.base_url,
            "sub": subject,
            "aud": self._settings.issuer,
            "iat": now,
            "exp": expires,
            "jti": secrets.token_urlsafe(24),
        })

    async def token_for(self, record: KeyRecord, scope: str | None) -> KeycloakToken:
        if int(record.expires_ts) <= int(time.time()):
            raise KeycloakGrantError("API key has expired", owner_refused=True)
        response = await self._grant(record, scope)
        if _error_description(response) == _USER_NOT_LINKED:
            await self._link(record)
            response = await self._grant(record, scope)
        if response.status_code != 200:
            raise _refusal(response)
        try:  # a 200 that is not a token (a proxy's page, another version) is no token
            body = response.json()
            token = body["access_token"]
            expires_in = int(body.get("expires_in", 0))
            if not isinstance(token, str) or not token:
                raise ValueError("empty access_token")
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("keycloak answered the authorization grant without a token")
            raise KeycloakGrantError("Keycloak answered without a token") from None
        return KeycloakToken(access_token=token, expires_in=expires_in,
                             scope=str(body.get("scope", "")))

    async def _grant(self, record: KeyRecord, scope: str | None) -> httpx.Response:
        form = {"grant_type": JWT_BEARER,
                "assertion": self.assertion(record.owner_id, record.expires_ts),
                "scope": scope or "openid"}
        return await self._post_as_client(self._token_endpoint, form)

    async def _post_as_client(self, url: str, form: dict[str, str]) -> httpx.Response:
        secret = self._settings.exchange_client_secret
        if secret is None:
            raise KeycloakGrantError("keycloak exchange mode needs APIKM_EXCHANGE_CLIENT_SECRET")
        auth = httpx.BasicAuth(self._settings.exchange_client_id, secret.get_secret_value())
        try:
            return await self._http.post(url, data=form, auth=auth, timeout=10.0)
        except httpx.HTTPError as exc:
            log.warning("keycloak unreachable", error_type=type(exc).__name__)
            raise KeycloakGrantError("Keycloak is unreachable") from None

    async def _admin_token(self) -> str:
        if self._service_token is None:
            raise KeycloakGrantError("keycloak exchange mode needs APIKM_EXCHANGE_CLIENT_SECRET")
        try:
            return await self._service_token.get()
        except (ServiceTokenUnavailable, ServiceTokenRefused):
            raise KeycloakGrantError("apikm's service account cannot sign in to Keycloak") \
                from None

    async def _link(self, record: KeyRecord) -> None:
        alias = self._settings.keycloak_idp_alias
        url = f"{self._admin_base}/users/{record.owner_id}/federated-identity/{alias}"
        headers = {"Authorization": f"Bearer {await self._admin_token()}"}
        link = {"identityProvider": alias, "userId": record.owner_id, "userName": record.username}
        try:
            response = await self._http.post(url, json=link, headers=headers, timeout=10.0)
        except httpx.HTTPError:
            raise KeycloakGrantError("Keycloak is unreachable") from None
        # 409: linked meanwhile by another request or replica; that is what we wanted.
        if response.status_code not in (200, 201, 204, 409):
            log.warning("linking owner failed", status=response.status_code, owner=record.owner_id)
            raise KeycloakGrantError("the key's owner could not be linked to apikm in Keycloak")
        log.info("linked owner to apikm identity provider", owner=record.owner_id, alias=alias)


def _error_description(response: httpx.Response) -> str | None:
    if response.status_code != 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    description = body.get("error_description") if isinstance(body, dict) else None
    return str(description) if description else None


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return str(error) if error else None


def _refusal(response: httpx.Response) -> KeycloakGrantError:
    description = _error_description(response)
    if response.status_code == 400 and _error_code(response) == "invalid_scope":
        log.warning("keycloak refused the scopes of the authorization grant: a role of the key "
                    "has no client scope in the realm (run apikm keycloak setup after creating "
                    "roles), or the caller asked for a scope the exchange client lacks")
        return KeycloakGrantError("Keycloak has no client scope for a role of this key, or for "
                                  "a scope asked for; the operator must run "
                                  "`apikm keycloak setup` after creating roles",
                                  scope_refused=True)
    log.warning("keycloak refused the authorization grant", status=response.status_code,
                reason=description)
    if description in ("User is not enabled", "Account is not fully set up", _USER_NOT_LINKED):
        return KeycloakGrantError(f"Keycloak refused the key's owner: {description}",
                                  owner_refused=True)
    return KeycloakGrantError("Keycloak refused the token request")
