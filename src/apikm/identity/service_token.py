"""A confidential client's own access token (client credentials), cached until shortly
before it expires. Used wherever apikm calls Keycloak as itself: the sync's admin reads,
linking owners for the keycloak exchange mode, reading role descriptions for the UI."""

from __future__ import annotations

import asyncio
import time

import httpx

REFRESH_MARGIN_S = 30.0
MIN_LIFETIME_S = 5.0


class ServiceTokenUnavailable(Exception):
    """Keycloak could not be reached, or answered with a server error."""


class ServiceTokenRefused(Exception):
    """Keycloak refused the client's credentials (wrong secret, no service account)."""


class ServiceToken:
    def __init__(self, http: httpx.AsyncClient, token_url: str, client_id: str,
                 client_secret: str, timeout: float = 10.0) -> None:
        self._http = http
        self._token_url = token_url
        self._client_id = client_id
        self._secret = client_secret
        self._timeout = timeout
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        if self._token and time.monotonic() < self._expires:
            return self._token
        async with self._lock:  # one sign-in, however many callers are waiting
            if self._token and time.monotonic() < self._expires:
                return self._token
            self._token, lifetime = await self._fetch()
            self._expires = time.monotonic() + max(MIN_LIFETIME_S, lifetime - REFRESH_MARGIN_S)
            return self._token

    def forget(self) -> None:
        """Drop the cached token (Keycloak said 401: revoked or expired early)."""
        self._token = None

    async def _fetch(self) -> tuple[str, float]:
        data = {"grant_type": "client_credentials", "client_id": self._client_id,
                "client_secret": self._secret}
        try:
            response = await self._http.post(self._token_url, data=data, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise ServiceTokenUnavailable(
                f"Keycloak token endpoint unreachable: {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise ServiceTokenUnavailable(f"Keycloak token endpoint: HTTP {response.status_code}")
        if response.status_code != 200:
            raise ServiceTokenRefused(
                f"Keycloak refused the client credentials of '{self._client_id}' "
                f"(HTTP {response.status_code})")
        try:
            body = response.json()
            return str(body["access_token"]), float(body.get("expires_in", 60))
        except (ValueError, KeyError, TypeError):
            raise ServiceTokenUnavailable("Keycloak token endpoint gave no token") from None
