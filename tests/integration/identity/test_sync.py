"""Keys follow Keycloak: the real sync of ``apikm serve`` against the real Keycloak.

Each scenario uses throwaway users, groups and clients made through the admin API (never the
demo users), gets their tokens by password grant through ``apikm-cli``, creates keys through
the API, changes the user in Keycloak and watches ``/v1/verify`` change its answer. Every
server runs on SQLite and on PostgreSQL.

The outage test puts a loopback TCP proxy between apikm's sync and Keycloak and cuts it:
a real network outage for apikm while the shared Keycloak keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from apikm.devstack import keycloak as devstack
from apikm.devstack.sync_roles import ensure_sync_roles
from apikm.identity.admin_client import AdminCredentials, KeycloakAdmin, MissingPermissions
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.keycloak_tokens import admin_token, password_grant
from tests.support.keycloak_users import RealmAdmin as BaseRealmAdmin
from tests.support.ports import free_port
from tests.support.postgres import fresh_database
from tests.support.replicas import DEMO_SYNC_SECRET

pytestmark = pytest.mark.integration

SECRET = DEMO_SYNC_SECRET
GRACE_SECONDS = 6
FAST = 10.0  # seconds a change may take through the event path (about 1-2 s measured)


# --- Keycloak admin, with a token that outlives the master realm's 60 s tokens ---------
class RealmAdmin(BaseRealmAdmin):
    def role(self, name: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/roles/{name}").json())

    def client_uuid(self, client_id: str) -> str:
        return str(self.call("GET", "/clients", params={"clientId": client_id}).json()[0]["id"])

    def set_realm_role(self, user_id: str, role: str, held: bool) -> None:
        self.call("POST" if held else "DELETE", f"/users/{user_id}/role-mappings/realm",
                  json=[self.role(role)])

    def set_enabled(self, user_id: str, enabled: bool) -> None:
        self.call("PUT", f"/users/{user_id}", json={"enabled": enabled})


@dataclass
class KcUser:
    id: str
    username: str
    password: str


@dataclass
class Throwaways:
    """Users, groups and clients made for one test, removed afterwards."""

    admin: RealmAdmin
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)

    def user(self, realm_roles: list[str], client_roles: dict[str, list[str]] | None = None
             ) -> KcUser:
        name = f"zz-sync-{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(12)
        created = self.admin.call("POST", "/users", json={
            "username": name, "enabled": True, "email": f"{name}@example.org",
            "emailVerified": True, "firstName": "Sync", "lastName": "Test",
            "credentials": [{"type": "password", "value": password, "temporary": False}]})
        user_id = created.headers["location"].rsplit("/", 1)[1]
        self.users.append(user_id)
        for role in realm_roles:
            self.admin.set_realm_role(user_id, role, True)
        for client_id, roles in (client_roles or {}).items():
            uuid = self.admin.client_uuid(client_id)
            found = [self.admin.call("GET", f"/clients/{uuid}/roles/{r}").json() for r in roles]
            self.admin.call("POST", f"/users/{user_id}/role-mappings/clients/{uuid}", json=found)
        return KcUser(user_id, name, password)

    def group(self) -> tuple[str, str]:
        name = f"zz-sync-{secrets.token_hex(4)}"
        created = self.admin.call("POST", "/groups", json={"name": name})
        group_id = created.headers["location"].rsplit("/", 1)[1]
        self.groups.append(group_id)
        return group_id, f"/{name}"

    def cleanup(self) -> None:
        for path in ([f"/users/{u}" for u in self.users] + [f"/groups/{g}" for g in self.groups]
                     + [f"/clients/{c}" for c in self.clients]):
            with suppress(httpx.HTTPStatusError):
                self.admin.call("DELETE", path)


@pytest.fixture(scope="module")
def realm_admin(keycloak: devstack.StackInfo) -> RealmAdmin:
    ensure_sync_roles(keycloak.base_url, keycloak.realm, "apikm", admin_token(keycloak.base_url))
    return RealmAdmin(keycloak)


@pytest.fixture
def throwaway(realm_admin: RealmAdmin) -> Iterator[Throwaways]:
    made = Throwaways(realm_admin)
    yield made
    made.cleanup()


# --- a loopback TCP proxy that can be cut ------------------------------------------------
class TcpProxy:
    """Forwards 127.0.0.1:port to the target; ``cut`` refuses and drops every connection."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self.restore()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def restore(self) -> None:
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=5)

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open.update({writer, up_writer})
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._open.difference_update({writer, up_writer})

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


# --- apikm servers with the sync --------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def new_database(request: pytest.FixtureRequest) -> Callable[[], str | None]:
    """A fresh empty database per server (None: the server makes its own SQLite file)."""
    if request.param == "sqlite":
        return lambda: None
    base: str = request.getfixturevalue("postgres_url")

    return lambda: fresh_database(base)


def sync_settings(**overrides: str) -> dict[str, str]:
    return {"oidc_client_secret": SECRET, "rate_limit": "100000/minute",
            "cache_ttl_seconds": "1", **overrides}


@pytest.fixture(scope="module")
def synced(new_database: Callable[[], str | None],
           keycloak: devstack.StackInfo) -> Iterator[ApikmServer]:
    """Events on, full pass rare (so the event path is what a test sees), short grace."""
    with apikm_server(new_database(), keycloak.base_url, **sync_settings(
            keycloak_sync_freq="300", revoke_disabled_after=f"{GRACE_SECONDS}s")) as server:
        yield server


@pytest.fixture(scope="module")
def unsynced(new_database: Callable[[], str | None],
             keycloak: devstack.StackInfo) -> Iterator[ApikmServer]:
    """No sync inside the server: only ``apikm sync --once`` (cron) keeps it current."""
    with apikm_server(new_database(), keycloak.base_url,
                      **sync_settings(sync_enabled="false")) as server:
        yield server


# --- helpers ------------------------------------------------------------------------------
def create_key(server: ApikmServer, stack: devstack.StackInfo, user: KcUser,
               roles: list[str]) -> str:
    token = password_grant(stack.issuer, user.username, user.password)["access_token"]
    return create_key_with(server, str(token), roles)


def create_key_with(server: ApikmServer, token: object, roles: list[str]) -> str:
    response = httpx.post(f"{server.url}/v1/keys", json={"name": "sync", "roles": roles},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def verify(server: ApikmServer, key: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/v1/verify", json={"key": key, **body}, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check`` held; fails the test after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def audit(server: ApikmServer, stack: devstack.StackInfo, owner_id: str) -> list[dict[str, Any]]:
    token = password_grant(stack.issuer, "admin")["access_token"]
    response = httpx.get(f"{server.url}/v1/admin/audit", params={"owner_id": owner_id},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
    response.raise_for_status()
    return [e for e in response.json() if e["actor_id"] == "sync"]


def readyz_sync(server: ApikmServer) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/readyz", timeout=30)
    assert response.status_code == 200  # Keycloak trouble never makes apikm unready
    return dict(response.json()["sync"])


# --- the fast path ------------------------------------------------------------------------
def test_removed_role_leaves_the_key_and_comes_back(
        synced: ApikmServer, keycloak: devstack.StackInfo, throwaway: Throwaways) -> None:
    user = throwaway.user(["analyst", "editor"], {"geoserver": ["read"]})
    key = create_key(synced, keycloak, user, ["analyst", "editor", "geoserver:read"])
    assert verify(synced, key)["roles"] == ["analyst", "editor", "geoserver:read"]

    throwaway.admin.set_realm_role(user.id, "editor", False)
    delay = wait_until(lambda: verify(synced, key)["roles"] == ["analyst", "geoserver:read"],
                       FAST, "editor removed from the key")
    print(f"role removal reached the key in {delay:.2f}s")
    refused = verify(synced, key, required_roles=["editor"])
    assert (refused["code"], refused["missing_roles"]) == ("INSUFFICIENT_ROLES", ["editor"])

    throwaway.admin.set_realm_role(user.id, "editor", True)
    wait_until(lambda: "editor" in verify(synced, key)["roles"], FAST, "editor back")
    # A role the owner gains but never granted to the key stays out of it.
    throwaway.admin.set_realm_role(user.id, "data-manager", True)
    time.sleep(3)
    assert verify(synced, key)["roles"] == ["analyst", "editor", "geoserver:read"]


def test_new_key_naming_another_client_is_confirmed_at_once(
        synced: ApikmServer, keycloak: devstack.StackInfo, throwaway: Throwaways) -> None:
    user = throwaway.user(["analyst"], {"stac": ["read"]})
    token = password_grant(keycloak.issuer, user.username, user.password)["access_token"]
    first = create_key_with(synced, token, ["analyst"])
    time.sleep(2.5)  # the sync reads the new owner: realm roles only, no key names a client
    assert verify(synced, first)["roles"] == ["analyst"]
    # Same (now older) token: it no longer updates the owner, so only the sync can vouch
    # for the stac role the new key carries.
    second = create_key_with(synced, token, ["stac:read"])
    wait_until(lambda: verify(synced, second)["roles"] == ["stac:read"], FAST,
               "the new key's client role confirmed")


def test_joined_group_appears_on_the_key(
        synced: ApikmServer, keycloak: devstack.StackInfo, throwaway: Throwaways) -> None:
    user = throwaway.user(["analyst"])
    key = create_key(synced, keycloak, user, ["analyst"])
    group_id, path = throwaway.group()
    throwaway.admin.call("PUT", f"/users/{user.id}/groups/{group_id}")
    wait_until(lambda: path in verify(synced, key)["groups"], FAST, f"group {path} on key")


def test_disabled_owner_is_suspended_and_comes_back_when_enabled(
        synced: ApikmServer, keycloak: devstack.StackInfo, throwaway: Throwaways) -> None:
    user = throwaway.user(["analyst"])
    key = create_key(synced, keycloak, user, ["analyst"])
    assert verify(synced, key)["code"] == "VALID"

    throwaway.admin.set_enabled(user.id, False)
    delay = wait_until(lambda: verify(synced, key)["code"] == "USER_DISABLED", FAST,
                       "USER_DISABLED")
    print(f"disabling reached the key in {delay:.2f}s")
    throwaway.admin.set_enabled(user.id, True)
    wait_until(lambda: verify(synced, key)["code"] == "VALID", FAST, "VALID again")
    actions = [e["action"] for e in audit(synced, keycloak, user.id)]
    assert actions == ["reactivate", "suspend"]  # newest first


def test_owner_disabled_past_the_grace_period_is_revoked_for_good(
        synced: ApikmServer, keycloak: devstack.StackInfo, throwaway: Throwaways) -> None:
    user = throwaway.user(["analyst"])
    key = create_key(synced, keycloak, user, ["analyst"])
    throwaway.admin.set_enabled(user.id, False)
    wait_until(lambda: verify(synced, key)["code"] == "USER_DISABLED", FAST, "suspended")
    wait_until(lambda: verify(synced, key)["code"] == "REVOKED", GRACE_SECONDS + FAST,
               "revoked after the grace period")
    reason = f"owner disabled in Keycloak for more than {GRACE_SECONDS}s"
    assert verify(synced, key)["reason"] == reason
    throwaway.admin.set_enabled(user.id, True)
    time.sleep(3)
    assert verify(synced, key)["code"] == "REVOKED"
    revocations = [e for e in audit(synced, keycloak, user.id) if e["action"] == "revoke"]
    assert [e["details"]["reason"] for e in revocations] == [reason]


def test_deleted_owner_keys_are_revoked(
        synced: ApikmServer, keycloak: devstack.StackInfo, throwaway: Throwaways) -> None:
    user = throwaway.user(["analyst"])
    key = create_key(synced, keycloak, user, ["analyst"])
    throwaway.admin.call("DELETE", f"/users/{user.id}")
    delay = wait_until(lambda: verify(synced, key)["code"] == "REVOKED", FAST, "revoked")
    print(f"deletion reached the key in {delay:.2f}s")
    assert verify(synced, key)["reason"] == "owner deleted in Keycloak"
    assert [e["details"]["reason"] for e in audit(synced, keycloak, user.id)] == [
        "owner deleted in Keycloak"]


def test_health_is_in_readyz_and_metrics(synced: ApikmServer) -> None:
    health = readyz_sync(synced)
    assert health["state"] == "leader" and health["consecutive_errors"] == 0
    assert health["lag_seconds"] is not None and health["lag_seconds"] < FAST
    assert health["last_full_pass_at"] is not None
    metrics = httpx.get(f"{synced.url}/metrics", timeout=30).text
    for name in ("apikm_sync_last_success_timestamp_seconds", "apikm_sync_lag_seconds",
                 "apikm_sync_leader 1.0", "apikm_sync_full_pass_seconds"):
        assert name in metrics


# --- full pass, cron, lease ---------------------------------------------------------------
def run_sync_once(server: ApikmServer, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "apikm.cli", "sync", "--once"], capture_output=True, text=True,
        timeout=120, check=False,
        env={**server.env, "APIKM_OIDC_CLIENT_SECRET": SECRET, "APIKM_LOG_LEVEL": "WARNING",
             **env})


def test_full_pass_repairs_a_change_no_event_delivered(
        unsynced: ApikmServer, keycloak: devstack.StackInfo, throwaway: Throwaways) -> None:
    user = throwaway.user(["analyst", "editor"])
    key = create_key(unsynced, keycloak, user, ["analyst", "editor"])
    throwaway.admin.set_realm_role(user.id, "editor", False)
    time.sleep(2)
    assert "editor" in verify(unsynced, key)["roles"]  # nothing has told apikm yet
    # The admin event of that change is never read: only the full pass can repair it.
    done = run_sync_once(unsynced)
    assert done.returncode == 0, done.stderr
    assert "synced 1 owners" in done.stdout and "1 changed" in done.stdout
    wait_until(lambda: verify(unsynced, key)["roles"] == ["analyst"], 3, "editor gone")


def test_sync_once_stands_aside_while_a_server_leads(synced: ApikmServer) -> None:
    wait_until(lambda: readyz_sync(synced)["state"] == "leader", FAST, "server leads")
    done = run_sync_once(synced)
    assert done.returncode == 0, done.stderr
    assert "sync skipped" in done.stdout and readyz_sync(synced)["leader"] in done.stdout


def test_one_replica_leads_and_a_standby_takes_over(
        new_database: Callable[[], str | None], keycloak: devstack.StackInfo) -> None:
    first_server = apikm_server(new_database(), keycloak.base_url, **sync_settings())
    first = first_server.__enter__()
    first_running = True
    try:
        wait_until(lambda: readyz_sync(first)["state"] == "leader", FAST, "first leads")
        with apikm_server(first.database_url, keycloak.base_url, **sync_settings()) as second:
            wait_until(lambda: readyz_sync(second)["state"] == "standby", FAST, "standby")
            assert readyz_sync(second)["leader"] == readyz_sync(first)["leader"]
            wait_until(lambda: readyz_sync(second)["last_full_pass_at"] is not None, FAST,
                       "the standby reports the leader's health")
            first_server.__exit__(None, None, None)  # the leader steps down at shutdown
            first_running = False
            delay = wait_until(lambda: readyz_sync(second)["state"] == "leader", FAST,
                               "the standby took over")
            print(f"standby took over {delay:.1f}s after the leader stopped")
    finally:
        if first_running:
            first_server.__exit__(None, None, None)


# --- Keycloak away ------------------------------------------------------------------------
def test_keycloak_outage_answers_until_stale_then_recovers(
        new_database: Callable[[], str | None], keycloak: devstack.StackInfo,
        throwaway: Throwaways) -> None:
    target = urlsplit(keycloak.base_url)
    staleness = 15
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 80) as proxy, apikm_server(
            new_database(), keycloak.base_url, **sync_settings(
                keycloak_admin_url=proxy.url, keycloak_sync_freq="5",
                max_staleness=f"{staleness}s")) as server:
        user = throwaway.user(["analyst"])
        key = create_key(server, keycloak, user, ["analyst"])
        wait_until(lambda: readyz_sync(server)["last_full_pass_owners"] == 1, FAST,
                   "a full pass saw the owner")
        proxy.cut()
        cut_at = time.monotonic()
        wait_until(lambda: readyz_sync(server)["consecutive_errors"] > 0, FAST, "errors seen")
        assert verify(server, key)["code"] == "VALID"  # answered from the synced state
        wait_until(lambda: verify(server, key)["code"] == "STALE", staleness + FAST, "STALE")
        stale_after = time.monotonic() - cut_at
        assert stale_after > 2  # not at once: verification kept answering meanwhile
        health = readyz_sync(server)
        assert health["state"] == "failing" and health["last_error"]

        proxy.restore()
        recovered = wait_until(lambda: verify(server, key)["code"] == "VALID", 30, "recovered")
        print(f"STALE {stale_after:.1f}s after the cut; VALID {recovered:.1f}s after repair")
        wait_until(lambda: readyz_sync(server)["consecutive_errors"] == 0, FAST, "healthy")
        assert readyz_sync(server)["state"] == "leader"


# --- least privilege ----------------------------------------------------------------------
async def test_missing_service_account_roles_are_named(
        keycloak: devstack.StackInfo, throwaway: Throwaways) -> None:
    client_id = f"zz-sync-{secrets.token_hex(4)}"
    secret = secrets.token_urlsafe(16)
    created = throwaway.admin.call("POST", "/clients", json={
        "clientId": client_id, "secret": secret, "publicClient": False,
        "serviceAccountsEnabled": True, "standardFlowEnabled": False})
    uuid = created.headers["location"].rsplit("/", 1)[1]
    throwaway.clients.append(uuid)
    account = throwaway.admin.call("GET", f"/clients/{uuid}/service-account-user").json()
    management = throwaway.admin.client_uuid("realm-management")
    view_users = throwaway.admin.call("GET", f"/clients/{management}/roles/view-users").json()
    throwaway.admin.call("POST", f"/users/{account['id']}/role-mappings/clients/{management}",
                         json=[view_users])
    async with httpx.AsyncClient() as http:
        admin = KeycloakAdmin(AdminCredentials(keycloak.base_url, keycloak.realm, client_id,
                                               secret), http)
        with pytest.raises(MissingPermissions) as refused:
            await admin.check_permissions()
    assert refused.value.missing == ("view-clients", "view-events")
    assert "view-clients, view-events" in str(refused.value)
    assert os.environ.get("APIKM_OIDC_CLIENT_SECRET") != secret  # never leaked into env
