"""APIKeyManager's own test scenarios (its ``tests/test_all.py``), rewritten as black-box
tests against apikm with the real Keycloak: new, list, check, revoke, renew, the attribute
merge and Keycloak changes reaching ``iam_roles``. Where apikm deliberately differs (it
refuses what was unsafe), the difference is what is asserted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from apikm.compat.check_key import WRONG
from tests.integration.compat.conftest import (
    KcUser,
    RealmAdmin,
    Users,
    client_address,
    wait_until,
)
from tests.support.apikm_server import ApikmServer

pytestmark = pytest.mark.integration


def check(server: ApikmServer, key: str) -> httpx.Response:
    return httpx.get(f"{server.url}/auth/check_key",
                     headers={"x-api-key": key, "X-Forwarded-For": client_address()})


def new(client: httpx.Client, **params: Any) -> httpx.Response:
    return client.get("/auth/api_key/new", params={"name": "any name", "config": "{}",
                                                   **params})


def test_new_list_and_check_per_user(compat_server: ApikmServer, users: Users) -> None:
    first, second = users.make(("analyst",)), users.make(("editor",))
    for user, role in ((first, "analyst"), (second, "editor")):
        with user.client(compat_server) as client:
            created = new(client, config=json.dumps({"my": "config"}))
            assert created.status_code == 200, created.text
            key = created.json()
            listed = client.get("/auth/api_key/list")
            assert listed.status_code == 200
            logs = listed.json()
            assert len(logs) == 1  # each user sees only their own keys
            entry = logs[0]
            assert entry["name"] == "any name"
            assert entry["is_active"] is True and entry["user_active"] is True
            assert entry["never_expire"] is False
            assert entry["config"] == {"my": "config"}
            assert role in entry["iam_roles"]
            assert entry["all_roles"] is True
            # The old list showed the key's unsalted hash as "api_key"; apikm stores none.
            assert "api_key" not in entry
            answer = check(compat_server, key).json()
            assert answer["user_id"] == user.id
            assert role in answer["iam_roles"]
            assert answer["config"] == {"my": "config"}


def test_me_shows_the_caller(compat_server: ApikmServer, users: Users) -> None:
    user = users.make(("analyst",))
    with user.client(compat_server) as client:
        me = client.get("/auth/me").json()
    assert me["user_id"] == user.id
    assert me["user_login"] == user.username
    assert "analyst" in me["roles"]
    unauthenticated = httpx.get(f"{compat_server.url}/auth/me")
    assert unauthenticated.status_code == 401
    assert "detail" in unauthenticated.json()


def test_revoke_then_renew(compat_server: ApikmServer, users: Users) -> None:
    user = users.make()
    with user.client(compat_server) as client:
        key = new(client).json()
        later = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
        renewed = client.get("/auth/api_key/renew",
                             params={"api-key": key, "expiration-date": later.isoformat()})
        assert renewed.status_code == 200, renewed.text
        assert renewed.json() == f"The new expiration date for the API key is {later}"
        assert check(compat_server, key).status_code == 200
        # Differences: the past and past the longest lifetime are refused, not stored.
        for bad in ("2020-01-01T00:00:00", (datetime.now(UTC) + timedelta(days=4000))
                    .isoformat()):
            refused = client.get("/auth/api_key/renew",
                                 params={"api-key": key, "expiration-date": bad})
            assert refused.status_code == 422
            assert refused.json()["detail"].startswith("expires_at")
        unparsable = client.get("/auth/api_key/renew",
                                params={"api-key": key, "expiration-date": "tomorrow"})
        assert unparsable.json() == {
            "detail": "The expiration date could not be parsed. Please use ISO 8601."}
        assert client.get("/auth/api_key/revoke", params={"api-key": key}).status_code == 200
        assert check(compat_server, key).json() == {"detail": WRONG}
        # Difference: the old service revived a revoked key on renew; apikm refuses.
        revived = client.get("/auth/api_key/renew", params={"api-key": key})
        assert revived.status_code == 422
        assert revived.json() == {"detail": "a revoked key cannot be renewed; create a new key"}
        assert check(compat_server, key).status_code == 403
        unknown = client.get("/auth/api_key/revoke", params={"api-key": "apikm_nope"})
        assert (unknown.status_code, unknown.json()) == (404, {"detail": "API key not found"})


def test_someone_elses_key_cannot_be_revoked_or_renewed(compat_server: ApikmServer,
                                                        users: Users) -> None:
    owner, other = users.make(), users.make()
    with owner.client(compat_server) as client:
        key = new(client).json()
    with other.client(compat_server) as client:
        for path in ("/auth/api_key/revoke", "/auth/api_key/renew"):
            response = client.get(path, params={"api-key": key})
            assert (response.status_code, response.json()) == (404,
                                                               {"detail": "API key not found"})
    assert check(compat_server, key).status_code == 200


def test_unsafe_old_requests_are_refused_clearly(compat_server: ApikmServer,
                                                 users: Users) -> None:
    user = users.make()
    with user.client(compat_server) as client:
        forever = new(client, never_expires="true")
        assert forever.status_code == 422
        assert "apikm keys always expire" in forever.json()["detail"]
        hosts = new(client, allowed_referers=["maps.example.org", "10.0.0.0/8"])
        assert hosts.status_code == 422
        assert "not networks: maps.example.org" in hosts.json()["detail"]
        assert new(client, config="[1, 2]").json()["detail"].startswith(
            "config must be a JSON object")
        assert new(client, name="").json() == {"detail": "name is required"}
        # IP networks are taken, and enforced: the key is refused elsewhere.
        networked = new(client, allowed_referers=["192.0.2.0/24"])
        assert networked.status_code == 200, networked.text
        key = networked.json()
        inside = httpx.get(f"{compat_server.url}/auth/check_key", headers={
            "x-api-key": key, "X-Forwarded-For": "192.0.2.7"})
        assert inside.status_code == 200
        outside = check(compat_server, key)
        assert (outside.status_code, outside.headers["x-apikm-code"]) == (403,
                                                                          "IP_NOT_ALLOWED")
        chosen = new(client, roles=["analyst"])  # apikm's extension: chosen roles
        assert chosen.status_code == 200
        assert check(compat_server, chosen.json()).json()["iam_roles"] == ["analyst"]
        refused = new(client, roles=["admin-of-everything"])
        assert refused.status_code == 403
        assert "admin-of-everything" in refused.json()["detail"]


def test_attributes_merge_over_config_and_reach_every_answer(
        compat_server: ApikmServer, users: Users, realm_admin: RealmAdmin) -> None:
    user = users.make(("analyst",), attributes={"project": ["s2"], "site": ["a", "b"],
                                                "secret_sauce": ["not synced"]})
    with user.client(compat_server) as client:
        key = new(client, config=json.dumps({"project": "mine", "quota": 5})).json()
    expected = {"project": "s2", "site": ["a", "b"], "quota": 5}
    wait_until(lambda: check(compat_server, key).json().get("config") == expected, 20,
               "attributes synced into config")
    verified = httpx.post(f"{compat_server.url}/v1/verify", json={"key": key}).json()
    assert verified["attributes"] == {"project": "s2", "site": ["a", "b"]}
    assert verified["meta"] == {"project": "mine", "quota": 5}
    introspected = httpx.post(f"{compat_server.url}/oauth/introspect",
                              data={"token": key}).json()
    assert introspected["attributes"] == {"project": "s2", "site": ["a", "b"]}
    realm_admin.set_attributes(user.id, {"project": ["s3"]})
    wait_until(lambda: check(compat_server, key).json().get("config", {}).get("project")
               == "s3", 20, "an attribute changed in Keycloak reaches check_key")


def test_keycloak_changes_reach_iam_roles(compat_server: ApikmServer, users: Users,
                                          realm_admin: RealmAdmin) -> None:
    """The old service re-read Keycloak every APIKM_KEYCLOAK_SYNC_FREQ seconds on a check;
    apikm's sync follows Keycloak's events, so changes arrive in about a second."""
    user: KcUser = users.make(("analyst", "editor"))
    with user.client(compat_server) as client:
        key = new(client).json()
    assert "editor" in check(compat_server, key).json()["iam_roles"]
    realm_admin.set_realm_role(user.id, "editor", False)
    wait_until(lambda: "editor" not in check(compat_server, key).json()["iam_roles"], 20,
               "a removed role leaves iam_roles")
    realm_admin.set_realm_role(user.id, "editor", True)
    wait_until(lambda: "editor" in check(compat_server, key).json()["iam_roles"], 20,
               "a role given back returns (the key follows all of its owner's roles)")
    realm_admin.set_enabled(user.id, False)
    wait_until(lambda: check(compat_server, key).status_code == 403, 20,
               "a disabled owner's key is refused")
    realm_admin.set_enabled(user.id, True)
    wait_until(lambda: check(compat_server, key).status_code == 200, 20,
               "enabled again, the key works again")


def test_health_status(compat_server: ApikmServer) -> None:
    response = httpx.get(f"{compat_server.url}/health/status")
    assert (response.status_code, response.json()) == (200, {"healthy": True})
