"""``POST /v1/verify`` outcomes against a live apikm (both databases)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from apikm.keys.format import generate_key
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.keys import new_key, verify_key

pytestmark = pytest.mark.integration
Clients = Callable[[str], httpx.Client]


def unique_ip() -> str:
    """A client address of its own per test, so failure counts never mix between tests."""
    raw = uuid.uuid4().int
    return f"10.{raw % 250}.{(raw >> 8) % 250}.{(raw >> 16) % 250 + 1}"


def database_lookups(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    match = re.search(r'^apikm_key_lookups_total\{source="database"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_malformed_and_bad_checksum_are_refused_without_lookup(anonymous: httpx.Client) -> None:
    good = generate_key("apikm").full
    bad_checksum = good[:-1] + ("A" if good[-1] != "A" else "B")
    before = database_lookups(anonymous)
    for key in ("", "hello", bad_checksum, good.replace("apikm_", "other_"), "apikm_" + "é" * 42):
        answer = verify_key(anonymous, key, client_ip=unique_ip())
        assert answer == {"valid": False, "code": "MALFORMED", "message": answer["message"]}
    assert database_lookups(anonymous) == before


def test_unknown_well_formed_key_is_not_found(anonymous: httpx.Client) -> None:
    before = database_lookups(anonymous)
    assert verify_key(anonymous, generate_key("apikm").full, client_ip=unique_ip())["code"] == \
        "NOT_FOUND"
    assert database_lookups(anonymous) == before + 1


def test_expired_key(as_user: Clients, anonymous: httpx.Client) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    key = new_key(as_user("alice"), expires_at=soon)["key"]
    ip = unique_ip()
    assert verify_key(anonymous, key, client_ip=ip)["code"] == "VALID"
    time.sleep(2.2)
    assert verify_key(anonymous, key, client_ip=ip)["code"] == "EXPIRED"
    listed = as_user("alice").get("/v1/keys", params={"status": "expired"}).json()
    assert any(k["public_id"] == str(key)[6:14] for k in listed)


def test_network_restriction_ipv4_and_ipv6(as_user: Clients, anonymous: httpx.Client) -> None:
    key = new_key(as_user("alice"), allowed_networks=["192.0.2.0/24", "2001:db8::/32"])["key"]
    assert verify_key(anonymous, key, client_ip="192.0.2.77")["code"] == "VALID"
    assert verify_key(anonymous, key, client_ip="2001:db8:1::5")["code"] == "VALID"
    assert verify_key(anonymous, key, client_ip="::ffff:192.0.2.8")["code"] == "VALID"
    assert verify_key(anonymous, key, client_ip="198.51.100.1")["code"] == "IP_NOT_ALLOWED"
    # without client_ip the caller's own address (loopback here) is what counts
    assert verify_key(anonymous, key)["code"] == "IP_NOT_ALLOWED"


def test_required_roles(as_user: Clients, anonymous: httpx.Client) -> None:
    key = new_key(as_user("alice"), roles=["analyst", "geoserver:read"])["key"]
    ip = unique_ip()
    assert verify_key(anonymous, key, required_roles=["geoserver:read"], client_ip=ip)["valid"]
    answer = verify_key(anonymous, key, required_roles=["geoserver:read", "geoserver:write"],
                   client_ip=ip)
    assert answer["code"] == "INSUFFICIENT_ROLES" and answer["valid"] is False
    assert answer["missing_roles"] == ["geoserver:write"]


def test_failure_limiter_trips_per_client_address(as_user: Clients,
                                                  anonymous: httpx.Client) -> None:
    good = new_key(as_user("alice"))["key"]
    attacker, bystander = unique_ip(), unique_ip()
    for _ in range(10):  # APIKM_RATE_LIMIT=10/minute in these tests
        assert verify_key(anonymous, generate_key("apikm").full, client_ip=attacker)["code"] == \
            "NOT_FOUND"
    limited = anonymous.post("/v1/verify", json={"key": good, "client_ip": attacker})
    assert limited.json()["code"] == "RATE_LIMITED" and int(limited.headers["retry-after"]) > 0
    # even a good key is refused from the blocked address; another address is unaffected
    assert verify_key(anonymous, good, client_ip=bystander)["code"] == "VALID"


def test_per_key_rate_limit(as_user: Clients, anonymous: httpx.Client) -> None:
    key = new_key(as_user("alice"), rate_limit="3/minute")["key"]
    ip = unique_ip()
    codes = [verify_key(anonymous, key, client_ip=ip)["code"] for _ in range(4)]
    assert codes == ["VALID", "VALID", "VALID", "RATE_LIMITED"]


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'"key"', b"{}", b'{"key": 5}', b'{"key": null}',
    b'{"key": "x", "required_roles": "admin"}', b'{"key": "x", "required_roles": [1]}',
    b'{"key": "x", "client_ip": "999.1.1.1"}', b'{"key": "x", "client_ip": 17}',
    b"\xff\xfe\x00",
])
def test_bad_verify_bodies_get_400_json(anonymous: httpx.Client, body: bytes) -> None:
    response = anonymous.post("/v1/verify", content=body,
                              headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_verify_never_echoes_the_key(anonymous: httpx.Client) -> None:
    key = generate_key("apikm").full
    response = anonymous.post("/v1/verify", json={"key": key, "required_roles": "x"})
    assert response.status_code == 400 and key not in response.text


@pytest.fixture(scope="module")
def untrusting(keycloak: object) -> Iterator[ApikmServer]:
    """apikm that trusts no proxy: the tests' loopback address is an ordinary caller."""
    from apikm.devstack.keycloak import StackInfo

    assert isinstance(keycloak, StackInfo)
    with apikm_server(None, keycloak.base_url, trusted_proxies="192.0.2.1/32",
                      rate_limit="3/minute") as server:
        yield server


def test_untrusted_caller_cannot_claim_a_client_ip(untrusting: ApikmServer,
                                                   keycloak: object) -> None:
    from apikm.devstack.keycloak import StackInfo
    from tests.support.keycloak_tokens import access_token

    assert isinstance(keycloak, StackInfo)
    owner = httpx.Client(base_url=untrusting.url, timeout=30, headers={
        "Authorization": f"Bearer {access_token(keycloak.issuer, 'alice')}"})
    key = new_key(owner, allowed_networks=["192.0.2.0/24"])["key"]
    anyone = httpx.Client(base_url=untrusting.url, timeout=30)
    # the key's network is claimed, but the caller is 127.0.0.1 and not a trusted proxy
    assert verify_key(anyone, key, client_ip="192.0.2.10")["code"] == "IP_NOT_ALLOWED"
    # and failures count against the caller itself, whatever address it claims
    for n in range(3):
        verify_key(anyone, generate_key("apikm").full, client_ip=f"198.51.100.{n}")
    assert verify_key(anyone, key, client_ip="198.51.100.99")["code"] == "RATE_LIMITED"
