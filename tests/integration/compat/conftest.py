"""A real ``apikm serve`` with its sync on, per database, and throwaway Keycloak users.

The realm is told to keep unmanaged user attributes (Keycloak 24 and later drop attributes
that its user profile does not declare), so tests can give users the attributes that
``APIKM_OAUTH2_ATTRIBUTES`` names.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field

import httpx
import pytest

from apikm.devstack import keycloak as devstack
from apikm.devstack.sync_roles import ensure_sync_roles
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.keycloak_tokens import admin_token, password_grant
from tests.support.keycloak_users import RealmAdmin as BaseRealmAdmin
from tests.support.postgres import fresh_database
from tests.support.replicas import DEMO_SYNC_SECRET

SECRET = DEMO_SYNC_SECRET
ATTRIBUTES = "project,site"


class RealmAdmin(BaseRealmAdmin):
    def keep_unmanaged_attributes(self) -> None:
        profile = self.call("GET", "/users/profile").json()
        if profile.get("unmanagedAttributePolicy") != "ADMIN_EDIT":
            profile["unmanagedAttributePolicy"] = "ADMIN_EDIT"
            self.call("PUT", "/users/profile", json=profile)

    def set_realm_role(self, user_id: str, role: str, held: bool) -> None:
        rep = self.call("GET", f"/roles/{role}").json()
        self.call("POST" if held else "DELETE", f"/users/{user_id}/role-mappings/realm",
                  json=[rep])

    def set_attributes(self, user_id: str, attributes: dict[str, list[str]]) -> None:
        user = self.call("GET", f"/users/{user_id}").json()
        user["attributes"] = {**(user.get("attributes") or {}), **attributes}
        self.call("PUT", f"/users/{user_id}", json=user)

    def set_enabled(self, user_id: str, enabled: bool) -> None:
        self.call("PUT", f"/users/{user_id}", json={"enabled": enabled})


@dataclass
class KcUser:
    id: str
    username: str
    password: str
    issuer: str

    def token(self) -> str:
        return str(password_grant(self.issuer, self.username, self.password)["access_token"])

    def client(self, server: ApikmServer) -> httpx.Client:
        return httpx.Client(base_url=server.url, timeout=30,
                            headers={"Authorization": f"Bearer {self.token()}"})


@dataclass
class Users:
    admin: RealmAdmin
    issuer: str
    made: list[str] = field(default_factory=list)

    def make(self, realm_roles: tuple[str, ...] = ("analyst",),
             attributes: dict[str, list[str]] | None = None) -> KcUser:
        name = f"zz-compat-{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(12)
        created = self.admin.call("POST", "/users", json={
            "username": name, "enabled": True, "email": f"{name}@example.org",
            "emailVerified": True, "firstName": "Compat", "lastName": "Test",
            "attributes": attributes or {},
            "credentials": [{"type": "password", "value": password, "temporary": False}]})
        user_id = created.headers["location"].rsplit("/", 1)[1]
        self.made.append(user_id)
        for role in realm_roles:
            self.admin.set_realm_role(user_id, role, True)
        return KcUser(user_id, name, password, self.issuer)

    def cleanup(self) -> None:
        for user_id in self.made:
            with suppress(httpx.HTTPStatusError):
                self.admin.call("DELETE", f"/users/{user_id}")


@pytest.fixture(scope="module")
def realm_admin(keycloak: devstack.StackInfo) -> RealmAdmin:
    ensure_sync_roles(keycloak.base_url, keycloak.realm, "apikm", admin_token(keycloak.base_url))
    admin = RealmAdmin(keycloak)
    admin.keep_unmanaged_attributes()
    return admin


@pytest.fixture
def users(realm_admin: RealmAdmin, keycloak: devstack.StackInfo) -> Iterator[Users]:
    made = Users(realm_admin, keycloak.issuer)
    yield made
    made.cleanup()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def new_database(request: pytest.FixtureRequest) -> Callable[[], str | None]:
    """A fresh empty database per server (None: the server makes its own SQLite file)."""
    if request.param == "sqlite":
        return lambda: None
    base: str = request.getfixturevalue("postgres_url")
    return lambda: fresh_database(base)


@pytest.fixture(scope="module")
def compat_server(new_database: Callable[[], str | None],
                  keycloak: devstack.StackInfo,
                  realm_admin: RealmAdmin) -> Iterator[ApikmServer]:
    """Sync on (events), attributes synced, 30 failed checks a minute per address."""
    with apikm_server(new_database(), keycloak.base_url, oidc_client_secret=SECRET,
                      rate_limit="30/minute", cache_ttl_seconds="1",
                      oauth2_attributes=ATTRIBUTES, keycloak_sync_freq="300") as server:
        yield server


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.2)


_addresses = itertools.count(1)


def client_address() -> str:
    """An address of its own for a test: failure counts are per address, and loopback (a
    trusted proxy) may name the client in X-Forwarded-For."""
    n = next(_addresses)
    return f"10.77.{n // 250}.{n % 250 + 1}"
