"""Alerts on suspicious key use (issue 13) and secret generations (issue 14, point 5), against
a live apikm on both databases: first use from a new network after a key's first day, a
retired secret presented after its overlap (and, with the policy, the key revoked), a limit
tripped; each written once, as an audit event, by the background writer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from apikm.devstack import keycloak as devstack
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.keys import age_key, new_key, user_client, verify_key

pytestmark = pytest.mark.integration
Clients = Callable[[str], httpx.Client]
FLUSHES = 1.6  # a few of the tests' 0.5 s flush intervals: whatever is due is written by then


def unique_ip() -> str:
    raw = uuid.uuid4().int
    return f"10.{raw % 250}.{(raw >> 8) % 250}.{(raw >> 16) % 250 + 1}"


def alerts(owner: httpx.Client, key_id: str, action: str | None = None) -> list[dict[str, Any]]:
    response = owner.get(f"/v1/keys/{key_id}/alerts")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return [a for a in found if action is None or a["action"] == action]


def settled_alerts(owner: httpx.Client, key_id: str, action: str,
                   expected: int) -> list[dict[str, Any]]:
    """The alerts once ``expected`` are there and a few more flushes added nothing."""
    deadline = time.monotonic() + 10
    while len(alerts(owner, key_id, action)) < expected:
        assert time.monotonic() < deadline, alerts(owner, key_id)
        time.sleep(0.1)
    time.sleep(FLUSHES)
    return alerts(owner, key_id, action)


def auth_from(client: httpx.Client, key: str, address: str) -> int:
    """Forward auth as nginx asks it, naming the client in X-Forwarded-For (the test runs on
    loopback, a trusted proxy)."""
    return client.get("/v1/auth", headers={"X-API-Key": key,
                                           "X-Forwarded-For": address}).status_code


def test_first_use_from_a_new_network_after_the_first_day(
        apikm: ApikmServer, as_user: Clients, anonymous: httpx.Client) -> None:
    alice = as_user("alice")
    created = new_key(alice)
    age_key(apikm, created["id"])
    for address in ("10.1.2.3", "10.1.2.99", "10.1.3.1", "2001:db8:1:2::5",
                    "2001:db8:1:ffff::1", "10.1.2.3"):
        assert auth_from(anonymous, created["key"], address) == 200
    found = settled_alerts(alice, created["id"], "new_network", 3)
    seen = sorted((a["details"]["network"], a["details"]["address"]) for a in found)
    assert seen == [("10.1.2.0/24", "10.1.2.3"), ("10.1.3.0/24", "10.1.3.1"),
                    ("2001:db8:1::/48", "2001:db8:1:2::5")]
    assert {a["actor_id"] for a in found} == {"apikm"}
    assert all(a["details"]["at"] and a["owner_id"] == created["owner_id"] for a in found)


def test_a_young_key_learns_its_networks_without_alerts(
        apikm: ApikmServer, as_user: Clients, anonymous: httpx.Client) -> None:
    alice = as_user("alice")
    created = new_key(alice)
    assert auth_from(anonymous, created["key"], "10.44.5.6") == 200  # its first day
    time.sleep(FLUSHES)
    age_key(apikm, created["id"])
    assert auth_from(anonymous, created["key"], "10.44.5.7") == 200  # known network
    assert auth_from(anonymous, created["key"], "10.44.6.1") == 200  # new one
    found = settled_alerts(alice, created["id"], "new_network", 1)
    assert [a["details"]["network"] for a in found] == ["10.44.6.0/24"]


def test_a_retired_secret_answers_revoked_and_raises_one_alert(
        as_user: Clients, anonymous: httpx.Client) -> None:
    alice = as_user("alice")
    created = new_key(alice)
    assert created["generation"] == 1 and created["secret_hint"].endswith(created["key"][-4:])
    second = alice.post(f"/v1/keys/{created['id']}/rotate", json={"overlap_seconds": 0}).json()
    third = alice.post(f"/v1/keys/{created['id']}/rotate", json={"overlap_seconds": 0}).json()
    assert (second["generation"], third["generation"]) == (2, 3)
    assert third["secret_hint"] == third["hint"] + third["key"][-4:]
    ip, other_ip = unique_ip(), unique_ip()
    for _ in range(3):  # generation 1, two rotations ago: not NOT_FOUND
        answer = verify_key(anonymous, created["key"], client_ip=ip)
        assert answer["code"] == "REVOKED" and answer["reason"] == "rotated", answer
    # once per key and address an hour: generation 2 from the same address adds nothing
    assert verify_key(anonymous, second["key"], client_ip=ip)["reason"] == "rotated"
    assert verify_key(anonymous, second["key"], client_ip=other_ip)["reason"] == "rotated"
    assert verify_key(anonymous, third["key"], client_ip=ip)["code"] == "VALID"
    found = settled_alerts(alice, created["id"], "secret_reuse", 2)
    assert sorted((a["details"]["generation"], a["details"]["address"], a["details"]["revoked"])
                  for a in found) == sorted([(1, ip, False), (2, other_ip, False)])
    assert alice.get(f"/v1/keys/{created['id']}").json()["status"] == "active"


def test_a_revoked_keys_retired_secrets_answer_revoked_without_alert(
        as_user: Clients, anonymous: httpx.Client) -> None:
    alice = as_user("alice")
    created = new_key(alice)
    second = alice.post(f"/v1/keys/{created['id']}/rotate",
                        json={"overlap_seconds": 3600}).json()
    third = alice.post(f"/v1/keys/{created['id']}/rotate",
                       json={"overlap_seconds": 3600}).json()
    assert alice.delete(f"/v1/keys/{created['id']}").status_code == 200
    for secret in (created["key"], second["key"], third["key"]):
        answer = verify_key(anonymous, secret, client_ip=unique_ip())
        assert answer["code"] == "REVOKED" and answer["reason"] == "revoked by owner", answer
    time.sleep(FLUSHES)
    assert alerts(alice, created["id"], "secret_reuse") == []


def test_key_rate_limit_tripped_is_alerted_once(as_user: Clients,
                                                anonymous: httpx.Client) -> None:
    alice = as_user("alice")
    created = new_key(alice, rate_limit="2/minute")
    ip = unique_ip()
    codes = [verify_key(anonymous, created["key"], client_ip=ip)["code"] for _ in range(5)]
    assert codes == ["VALID", "VALID", "RATE_LIMITED", "RATE_LIMITED", "RATE_LIMITED"]
    found = settled_alerts(alice, created["id"], "limit_tripped", 1)
    assert [(a["details"]["limit"], a["details"]["address"]) for a in found] == [
        ("key_rate", ip)]


def test_failures_of_a_key_blocking_its_address_are_alerted_once(
        as_user: Clients, anonymous: httpx.Client) -> None:
    alice = as_user("alice")
    created = new_key(alice, allowed_networks=["192.0.2.0/24"])
    ip = unique_ip()
    codes = [verify_key(anonymous, created["key"], client_ip=ip)["code"] for _ in range(12)]
    assert codes == ["IP_NOT_ALLOWED"] * 10 + ["RATE_LIMITED"] * 2  # APIKM_RATE_LIMIT=10/minute
    found = settled_alerts(alice, created["id"], "limit_tripped", 1)
    assert [(a["details"]["limit"], a["details"]["address"]) for a in found] == [
        ("failures", ip)]


def test_alerts_of_another_users_key_are_not_found(as_user: Clients) -> None:
    created = new_key(as_user("alice"))
    assert as_user("bob").get(f"/v1/keys/{created['id']}/alerts").status_code == 404


# --- APIKM_REVOKE_ON_SECRET_REUSE -------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def revoking(request: pytest.FixtureRequest,
             keycloak: devstack.StackInfo) -> Iterator[ApikmServer]:
    database = request.getfixturevalue("postgres_url") if request.param == "postgresql" \
        else None
    if database is not None:
        from tests.support.postgres import fresh_database

        database = fresh_database(database)
    with apikm_server(database, keycloak.base_url, revoke_on_secret_reuse="true") as server:
        yield server


def test_with_the_policy_a_reused_secret_revokes_its_key(
        revoking: ApikmServer, token: Callable[[str], str]) -> None:
    with user_client(revoking.url, token("alice")) as alice, \
            httpx.Client(base_url=revoking.url) as anyone:
        created = new_key(alice)
        rotated = alice.post(f"/v1/keys/{created['id']}/rotate", json={}).json()
        assert verify_key(anyone, rotated["key"])["code"] == "VALID"
        ip = unique_ip()
        assert verify_key(anyone, created["key"], client_ip=ip)["reason"] == "rotated"
        found = settled_alerts(alice, created["id"], "secret_reuse", 1)
        assert [(a["details"]["generation"], a["details"]["revoked"]) for a in found] == [
            (1, True)]
        key = alice.get(f"/v1/keys/{created['id']}").json()
        assert (key["status"], key["revoked_reason"], key["revoked_by"]) == (
            "revoked", "secret_reuse", "apikm")
        answer = verify_key(anyone, rotated["key"])
        assert answer["code"] == "REVOKED" and answer["reason"] == "secret_reuse"


# --- two replicas on one PostgreSQL ------------------------------------------------------
def test_two_replicas_write_each_alert_once(
        postgres_url: str, keycloak: devstack.StackInfo, token: Callable[[str], str]) -> None:
    from tests.support.replicas import replica_pair

    with replica_pair(postgres_url, keycloak.base_url) as (a, b), \
            user_client(a.url, token("alice")) as alice, \
            httpx.Client(base_url=a.url) as on_a, httpx.Client(base_url=b.url) as on_b:
        created = new_key(alice)
        age_key(a, created["id"])
        rotated = alice.post(f"/v1/keys/{created['id']}/rotate", json={}).json()
        ip = unique_ip()
        for client in (on_a, on_b, on_a, on_b):  # both replicas see both events
            assert auth_from(client, rotated["key"], "10.66.1.2") == 200
            assert verify_key(client, created["key"], client_ip=ip)["reason"] == "rotated"
        assert [a["details"]["network"] for a in
                settled_alerts(alice, created["id"], "new_network", 1)] == ["10.66.1.0/24"]
        assert [a["details"]["address"] for a in
                settled_alerts(alice, created["id"], "secret_reuse", 1)] == [ip]
