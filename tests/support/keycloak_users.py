"""Throwaway Keycloak users for tests that change users (never touch the demo users)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from apikm.devstack.keycloak import StackInfo
from tests.support.keycloak_tokens import admin_token


@dataclass(frozen=True)
class ThrowawayUser:
    id: str
    username: str
    password: str
    email: str


def realm_admin(base_url: str, realm: str = "demo") -> httpx.Client:
    return httpx.Client(base_url=f"{base_url}/admin/realms/{realm}", timeout=30,
                        headers={"Authorization": f"Bearer {admin_token(base_url)}"})


@contextmanager
def throwaway_user(base_url: str, realm_roles: tuple[str, ...] = ("analyst",),
                   realm: str = "demo") -> Iterator[ThrowawayUser]:
    """A complete, enabled user with a password and the given realm roles; deleted after."""
    username = f"tmp-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    email = f"{username}@example.org"
    with realm_admin(base_url, realm) as admin:
        created = admin.post("/users", json={
            "username": username, "enabled": True, "email": email, "emailVerified": True,
            "firstName": "Temp", "lastName": "User",
            "credentials": [{"type": "password", "value": password, "temporary": False}],
        })
        created.raise_for_status()
        user_id = created.headers["Location"].rsplit("/", 1)[-1]
        try:
            roles = [admin.get(f"/roles/{name}").raise_for_status().json()
                     for name in realm_roles]
            admin.post(f"/users/{user_id}/role-mappings/realm", json=roles).raise_for_status()
            yield ThrowawayUser(user_id, username, password, email)
        finally:
            admin.delete(f"/users/{user_id}")


def set_enabled(base_url: str, user_id: str, enabled: bool, realm: str = "demo") -> None:
    with realm_admin(base_url, realm) as admin:
        user = admin.get(f"/users/{user_id}").raise_for_status().json()
        user["enabled"] = enabled
        admin.put(f"/users/{user_id}", json=user).raise_for_status()


def change_client_urls(base_url: str, url: str, add: bool, realm: str = "demo",
                       client_id: str = "apikm") -> None:
    """Add (or remove) ``url/*`` as redirect and post-logout URI of the sign-in client.

    The demo realm's ``apikm`` client only redirects to port 8000; servers under test run on
    free ports. Only the given URL is touched, so tests running side by side do not clash.
    """
    with realm_admin(base_url, realm) as client:
        found = client.get("/clients", params={"clientId": client_id}).raise_for_status().json()
        path = f"/clients/{found[0]['id']}"
        rep = client.get(path).raise_for_status().json()
        redirect = f"{url}/*"
        uris = [u for u in rep.get("redirectUris", []) if u != redirect]
        attributes = rep.setdefault("attributes", {})
        logout = [u for u in attributes.get("post.logout.redirect.uris", "").split("##")
                  if u and u != redirect]
        if add:
            uris.append(redirect)
            logout.append(redirect)
        rep["redirectUris"] = uris
        attributes["post.logout.redirect.uris"] = "##".join(logout)
        client.put(path, json=rep).raise_for_status()


@contextmanager
def sign_in_allowed(base_url: str, *urls: str, realm: str = "demo") -> Iterator[None]:
    """Keycloak redirects back to these apikm servers while the block runs."""
    for url in urls:
        change_client_urls(base_url, url, add=True, realm=realm)
    try:
        yield
    finally:
        for url in urls:
            change_client_urls(base_url, url, add=False, realm=realm)


class RealmAdmin:
    """The realm's admin API with a token renewed before the master realm's 60 s expire;
    test modules subclass it with the calls they need."""

    def __init__(self, stack: StackInfo) -> None:
        self._stack = stack
        self._token, self._fetched = "", 0.0
        self.http = httpx.Client(base_url=f"{stack.base_url}/admin/realms/{stack.realm}",
                                 timeout=30, trust_env=False)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if time.monotonic() - self._fetched > 30:
            self._token, self._fetched = admin_token(self._stack.base_url), time.monotonic()
        response = self.http.request(method, path, headers={
            "Authorization": f"Bearer {self._token}"}, **kwargs)
        response.raise_for_status()
        return response
