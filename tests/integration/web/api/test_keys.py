"""The key API against the real Keycloak and both databases."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.keys import new_key, verify_key

pytestmark = pytest.mark.integration
Clients = Callable[[str], httpx.Client]


def test_whole_lifecycle(as_user: Clients, anonymous: httpx.Client) -> None:
    alice = as_user("alice")
    created = new_key(alice, roles=["analyst", "geoserver:read"], description="laptop",
                      meta={"project": "ndvi", "tier": 2}, allowed_networks=["127.0.0.0/8"])
    key, key_id = created["key"], created["id"]
    assert isinstance(key, str) and key.startswith("apikm_")
    assert created["hint"] == f"apikm_{created['public_id']}..."
    assert created["status"] == "active" and created["roles"] == ["analyst", "geoserver:read"]

    # the secret is shown once: never again in reads or lists
    read = alice.get(f"/v1/keys/{key_id}").json()
    assert "key" not in read and read["meta"] == {"project": "ndvi", "tier": 2}
    assert key not in alice.get("/v1/keys").text
    assert key_id in [k["id"] for k in alice.get("/v1/keys").json()]

    answer = verify_key(anonymous, key, required_roles=["geoserver:read"], client_ip="127.0.0.5")
    assert answer["valid"] is True and answer["code"] == "VALID"
    assert answer["user"]["username"] == "alice"
    assert answer["user"]["email"] == "alice@example.org"
    assert answer["roles"] == ["analyst", "geoserver:read"]
    assert answer["meta"] == {"project": "ndvi", "tier": 2} and answer["key_id"] == key_id

    updated = alice.patch(f"/v1/keys/{key_id}", json={"name": "renamed", "roles": ["analyst"]})
    assert updated.status_code == 200 and updated.json()["name"] == "renamed"
    assert verify_key(anonymous, key, required_roles=["geoserver:read"],
                  client_ip="127.0.0.5")["code"] == "INSUFFICIENT_ROLES"

    revoked = alice.delete(f"/v1/keys/{key_id}")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert verify_key(anonymous, key, client_ip="127.0.0.5")["code"] == "REVOKED"
    assert key_id in [k["id"] for k in alice.get("/v1/keys?status=revoked").json()]
    assert key_id not in [k["id"] for k in alice.get("/v1/keys?status=active").json()]

    audit = alice.get(f"/v1/keys/{key_id}/audit").json()
    assert [event["action"] for event in audit] == ["revoke", "update", "create"]
    assert all(event["actor_name"] == "alice" for event in audit)


def test_usage_is_counted_in_batches(as_user: Clients, anonymous: httpx.Client) -> None:
    alice = as_user("alice")
    created = new_key(alice)
    for _ in range(3):
        assert verify_key(anonymous, created["key"], client_ip="10.9.8.7")["valid"] is True
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while datetime.now(UTC) < deadline:
        read = alice.get(f"/v1/keys/{created['id']}").json()
        if read["use_count"] == 3:
            break
    assert read["use_count"] == 3 and read["last_used_ip"] == "10.9.8.7"
    assert read["last_used_at"] is not None
    usage = alice.get(f"/v1/keys/{created['id']}/usage").json()
    assert usage == [{"day": datetime.now(UTC).date().isoformat(), "count": 3}]


def test_other_users_keys_are_invisible_and_untouchable(as_user: Clients) -> None:
    alice, bob = as_user("alice"), as_user("bob")
    key_id = new_key(alice)["id"]
    assert key_id not in [k["id"] for k in bob.get("/v1/keys").json()]
    for response in (
        bob.get(f"/v1/keys/{key_id}"),
        bob.patch(f"/v1/keys/{key_id}", json={"name": "mine now"}),
        bob.delete(f"/v1/keys/{key_id}"),
        bob.post(f"/v1/keys/{key_id}/rotate", json={}),
        bob.get(f"/v1/keys/{key_id}/usage"),
        bob.get(f"/v1/keys/{key_id}/audit"),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "not_found"
    assert alice.get(f"/v1/keys/{key_id}").json()["status"] == "active"


def test_roles_beyond_the_callers_are_refused(as_user: Clients) -> None:
    bob = as_user("bob")
    response = bob.post("/v1/keys", json={"name": "grab", "roles": ["analyst", "editor",
                                                                    "geoserver:write"]})
    assert response.status_code == 403
    assert response.json()["refused"] == ["editor", "geoserver:write"]
    assert bob.get("/v1/keys").json() == [] or all(
        k["name"] != "grab" for k in bob.get("/v1/keys").json())


def test_composite_roles_can_be_granted(as_user: Clients) -> None:
    # dana holds data-manager, a composite of editor and geoserver:write
    created = new_key(as_user("dana"), roles=["editor", "geoserver:write"])
    assert created["roles"] == ["editor", "geoserver:write"]


def test_patch_can_only_narrow(as_user: Clients) -> None:
    alice = as_user("alice")
    created = new_key(alice, roles=["analyst"])
    widened = alice.patch(f"/v1/keys/{created['id']}", json={"roles": ["analyst", "editor"]})
    assert widened.status_code == 403 and widened.json()["refused"] == ["editor"]
    later = (datetime.fromisoformat(str(created["expires_at"])) + timedelta(days=1)).isoformat()
    extended = alice.patch(f"/v1/keys/{created['id']}", json={"expires_at": later})
    assert extended.status_code == 422 and extended.json()["field"] == "expires_at"


def test_expiry_policy(as_user: Clients) -> None:
    alice = as_user("alice")
    created = new_key(alice)
    expires = datetime.fromisoformat(str(created["expires_at"]))
    assert abs(expires - (datetime.now(UTC) + timedelta(hours=360))) < timedelta(minutes=1)
    too_late = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    response = alice.post("/v1/keys", json={"name": "forever", "expires_at": too_late})
    assert response.status_code == 422 and "maximum lifetime" in response.json()["message"]


def test_rotation_with_overlap_keeps_old_secret_for_a_while(
        as_user: Clients, anonymous: httpx.Client) -> None:
    alice = as_user("alice")
    created = new_key(alice)
    rotated = alice.post(f"/v1/keys/{created['id']}/rotate", json={"overlap_seconds": 2})
    assert rotated.status_code == 200
    new_secret = rotated.json()["key"]
    assert new_secret != created["key"] and rotated.json()["public_id"] == created["public_id"]
    assert verify_key(anonymous, new_secret, client_ip="10.0.0.1")["code"] == "VALID"
    assert verify_key(anonymous, created["key"], client_ip="10.0.0.1")["code"] == "VALID"
    time.sleep(2.5)
    old = verify_key(anonymous, created["key"], client_ip="10.0.0.1")
    assert old["code"] == "REVOKED" and old["reason"] == "rotated"
    assert verify_key(anonymous, new_secret, client_ip="10.0.0.1")["code"] == "VALID"


def test_revoking_during_an_overlap_stops_both_secrets_as_revoked(
        as_user: Clients, anonymous: httpx.Client) -> None:
    alice = as_user("alice")
    created = new_key(alice)
    new_secret = alice.post(f"/v1/keys/{created['id']}/rotate",
                            json={"overlap_seconds": 3600}).json()["key"]
    assert verify_key(anonymous, created["key"], client_ip="10.0.0.4")["code"] == "VALID"
    revoked = alice.delete(f"/v1/keys/{created['id']}").json()
    assert revoked["previous_secret_expires_at"] is not None  # the overlap ended with it
    for secret in (created["key"], new_secret):  # the old one too: REVOKED, not NOT_FOUND
        answer = verify_key(anonymous, secret, client_ip="10.0.0.4")
        assert answer["code"] == "REVOKED" and answer["reason"] == "revoked by owner", answer


def test_rotation_without_overlap_kills_old_secret_at_once(
        as_user: Clients, anonymous: httpx.Client) -> None:
    alice = as_user("alice")
    created = new_key(alice)
    assert verify_key(anonymous, created["key"], client_ip="10.0.0.2")["valid"]  # now cached
    new_secret = alice.post(f"/v1/keys/{created['id']}/rotate").json()["key"]
    # the old secret stops at once (the verification cache cleared), and is known as a
    # retired one: REVOKED "rotated", not NOT_FOUND (issue 14, point 5)
    old = verify_key(anonymous, created["key"], client_ip="10.0.0.2")
    assert old["code"] == "REVOKED" and old["reason"] == "rotated", old
    assert verify_key(anonymous, new_secret, client_ip="10.0.0.2")["code"] == "VALID"


def test_admin_sees_and_revokes_any_key(as_user: Clients, anonymous: httpx.Client) -> None:
    bob, admin = as_user("bob"), as_user("admin")
    created = new_key(bob)
    listed = admin.get("/v1/admin/keys", params={"owner_id": created["owner_id"]}).json()
    assert created["id"] in [k["id"] for k in listed]
    revoked = admin.delete(f"/v1/admin/keys/{created['id']}", params={"reason": "leaked"})
    assert revoked.status_code == 200 and revoked.json()["revoked_reason"] == "leaked"
    assert verify_key(anonymous, created["key"], client_ip="10.0.0.3")["code"] == "REVOKED"
    audit = admin.get("/v1/admin/audit", params={"key_id": created["id"]}).json()
    assert audit[0]["action"] == "revoke" and audit[0]["actor_name"] == "admin"
    assert audit[0]["details"] == {"reason": "leaked"}


def test_non_admin_is_refused_admin_endpoints(as_user: Clients) -> None:
    alice = as_user("alice")
    for response in (alice.get("/v1/admin/keys"), alice.get("/v1/admin/audit"),
                     alice.delete(f"/v1/admin/keys/{uuid.uuid4()}")):
        assert response.status_code == 403
        assert "apikm-admin" in response.json()["message"]


def test_me_lists_grantable_roles(as_user: Clients) -> None:
    me = as_user("alice").get("/v1/me").json()
    assert me["username"] == "alice" and not me["is_admin"]
    assert {"analyst", "editor", "geoserver:read", "geoserver:write"} <= set(me["roles"])
    assert as_user("admin").get("/v1/me").json()["is_admin"] is True
