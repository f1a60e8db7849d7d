"""Real tokens from the real Keycloak: password grant through the demo realm's CLI client."""

from __future__ import annotations

import time

import httpx

DEMO_PASSWORDS = {"alice": "alice", "bob": "bob", "admin": "admin", "dana": "dana"}


def password_grant(issuer: str, username: str, password: str | None = None,
                   client_id: str = "apikm-cli") -> dict[str, object]:
    response = httpx.post(
        f"{issuer}/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": client_id, "username": username,
              "password": password or DEMO_PASSWORDS[username], "scope": "openid"},
        timeout=30,
    )
    response.raise_for_status()
    body: dict[str, object] = response.json()
    return body


_cache: dict[tuple[str, str], tuple[float, str]] = {}


def access_token(issuer: str, username: str) -> str:
    """A user's access token, reused while it has more than a minute to live."""
    cached = _cache.get((issuer, username))
    if cached and cached[0] > time.monotonic() + 60:
        return cached[1]
    grant = password_grant(issuer, username)
    token = str(grant["access_token"])
    _cache[(issuer, username)] = (time.monotonic() + float(str(grant["expires_in"])), token)
    return token


def admin_token(base_url: str, username: str = "kcadmin", password: str = "kcadmin") -> str:
    response = httpx.post(
        f"{base_url}/realms/master/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": "admin-cli", "username": username,
              "password": password},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])
