"""Sign-in with Keycloak: authorization code flow with PKCE (S256), state and nonce.

apikm is a confidential client (``APIKM_OIDC_CLIENT_ID``, secret in
``APIKM_OIDC_CLIENT_SECRET``). The ID token is checked in full: signature against the realm's
JWKS, issuer, audience (and ``azp`` when there are several), expiry, and the nonce of this very
login. Logout is RP-initiated through Keycloak's end-session endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog
from joserfc import jws, jwt
from joserfc.errors import JoseError

from apikm.config import Settings
from apikm.identity.service_token import (
    ServiceToken,
    ServiceTokenRefused,
    ServiceTokenUnavailable,
)
from apikm.identity.tokens import ALGORITHMS, InvalidToken, JwksCache

log = structlog.get_logger(__name__)

DISCOVERY_TTL_SECONDS = 3600.0


class SignInError(Exception):
    """Sign-in cannot go on; the message is safe to show the user."""


class SessionEnded(Exception):
    """Keycloak no longer honours the refresh token: the user must sign in again."""


@dataclass(frozen=True)
class ProviderMetadata:
    authorization_endpoint: str
    token_endpoint: str
    end_session_endpoint: str | None


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    expires_in: int
    refresh_token: str
    id_token: str | None

    def __repr__(self) -> str:
        return f"TokenSet(expires_in={self.expires_in})"


@dataclass(frozen=True)
class LoginRequest:
    """What the browser must bring back to the callback (kept in an encrypted cookie)."""

    state: str
    nonce: str
    verifier: str
    next_path: str
    redirect_uri: str


def new_login_request(next_path: str, redirect_uri: str) -> LoginRequest:
    # 64 random bytes -> 86 characters: inside RFC 7636's 43..128 for the verifier.
    return LoginRequest(state=secrets.token_urlsafe(32), nonce=secrets.token_urlsafe(32),
                        verifier=secrets.token_urlsafe(64), next_path=next_path,
                        redirect_uri=redirect_uri)


def code_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OidcClient:
    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.issuer
        self.client_id = settings.oidc_client_id
        self.leeway = settings.token_leeway_seconds
        secret = settings.oidc_client_secret
        self._secret = secret.get_secret_value() if secret is not None else None
        self._metadata: ProviderMetadata | None = None
        self._fetched_at = 0.0
        self._service_token: ServiceToken | None = None
        if self._secret is None:
            log.warning("web UI sign-in is off: set APIKM_OIDC_CLIENT_SECRET")

    @property
    def configured(self) -> bool:
        return self._secret is not None

    async def metadata(self, http: httpx.AsyncClient) -> ProviderMetadata:
        fresh = time.monotonic() - self._fetched_at < DISCOVERY_TTL_SECONDS
        if self._metadata is not None and fresh:
            return self._metadata
        try:
            response = await http.get(f"{self.issuer}/.well-known/openid-configuration",
                                      timeout=5.0)
            response.raise_for_status()
            doc = response.json()
            self._metadata = ProviderMetadata(
                authorization_endpoint=str(doc["authorization_endpoint"]),
                token_endpoint=str(doc["token_endpoint"]),
                end_session_endpoint=doc.get("end_session_endpoint"),
            )
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("OIDC discovery failed", error_type=type(exc).__name__)
            raise SignInError("Keycloak cannot be reached right now; try again shortly.") \
                from None
        self._fetched_at = time.monotonic()
        return self._metadata

    def authorization_url(self, meta: ProviderMetadata, login: LoginRequest) -> str:
        query = urlencode({
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": login.redirect_uri,
            "scope": "openid",
            "state": login.state,
            "nonce": login.nonce,
            "code_challenge": code_challenge(login.verifier),
            "code_challenge_method": "S256",
        })
        return f"{meta.authorization_endpoint}?{query}"

    async def exchange_code(self, http: httpx.AsyncClient, code: str,
                            login: LoginRequest) -> TokenSet:
        return await self._token_request(http, {
            "grant_type": "authorization_code", "code": code,
            "redirect_uri": login.redirect_uri, "code_verifier": login.verifier,
        }, on_refusal=SignInError("Keycloak refused the sign-in; please try again."))

    async def refresh(self, http: httpx.AsyncClient, refresh_token: str) -> TokenSet:
        return await self._token_request(
            http, {"grant_type": "refresh_token", "refresh_token": refresh_token},
            on_refusal=SessionEnded())

    async def _token_request(self, http: httpx.AsyncClient, form: dict[str, str],
                             on_refusal: Exception) -> TokenSet:
        if self._secret is None:
            raise SignInError("Sign-in is not configured: set APIKM_OIDC_CLIENT_SECRET.")
        meta = await self.metadata(http)
        try:
            response = await http.post(meta.token_endpoint, timeout=10.0, data={
                **form, "client_id": self.client_id, "client_secret": self._secret})
        except httpx.HTTPError:
            raise SignInError("Keycloak cannot be reached right now; try again shortly.") \
                from None
        if response.status_code in (400, 401):
            # invalid_grant: code reused or expired, refresh token revoked, session ended.
            log.info("token request refused", grant=form["grant_type"],
                     error=_error_code(response))
            raise on_refusal
        try:
            response.raise_for_status()
            body = response.json()
            return TokenSet(access_token=str(body["access_token"]),
                            expires_in=int(body.get("expires_in", 60)),
                            refresh_token=str(body["refresh_token"]),
                            id_token=str(body["id_token"]) if body.get("id_token") else None)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            raise SignInError("Keycloak gave an unexpected answer; try again shortly.") \
                from None

    async def service_token(self, http: httpx.AsyncClient) -> str | None:
        """apikm's own service-account token (client credentials), or None if refused."""
        if self._secret is None:
            return None
        try:
            if self._service_token is None:
                meta = await self.metadata(http)
                self._service_token = ServiceToken(http, meta.token_endpoint, self.client_id,
                                                   self._secret, timeout=5.0)
            return await self._service_token.get()
        except (SignInError, ServiceTokenUnavailable, ServiceTokenRefused):
            return None

    async def validate_id_token(self, jwks: JwksCache, id_token: str,
                                nonce: str) -> dict[str, Any]:
        try:
            header = jws.extract_compact(id_token.encode("ascii")).protected
            keys = await jwks.key_set(header.get("kid"))
            claims = jwt.decode(id_token, keys, algorithms=ALGORITHMS).claims
            jwt.JWTClaimsRegistry(
                leeway=self.leeway,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.client_id},
                exp={"essential": True},
                iat={"essential": True},
                sub={"essential": True},
            ).validate(claims)
        except (JoseError, ValueError, UnicodeError, InvalidToken) as exc:
            log.warning("ID token refused", error_type=type(exc).__name__)
            raise SignInError("The sign-in answer from Keycloak could not be verified.") \
                from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            raise SignInError("The sign-in answer was issued to another application.")
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise SignInError("The sign-in answer does not belong to this sign-in (nonce).")
        return claims

    def end_session_url(self, meta: ProviderMetadata, id_token_hint: str | None,
                        post_logout_redirect_uri: str) -> str | None:
        if meta.end_session_endpoint is None:
            return None
        params = {"client_id": self.client_id,
                  "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        return f"{meta.end_session_endpoint}?{urlencode(params)}"


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", "unknown"))
    except ValueError:
        return "unknown"
