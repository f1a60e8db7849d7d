"""The dev stack against a real Keycloak: startup, demo realm contents, least privilege."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apikm.devstack import keycloak
from apikm.devstack.keycloak import ChecksumError, StackInfo, verify_sha256

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack() -> StackInfo:
    # Shared with other test modules: started if needed, never stopped here.
    return keycloak.up()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    # trust_env=False: loopback traffic must not go through an environment proxy.
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        yield client


def _claims(token: str) -> dict[str, Any]:
    """Payload of a JWT, unverified: Keycloak issued it to us over loopback just now."""
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return decoded


def _token_url(stack: StackInfo) -> str:
    return f"{stack.issuer}/protocol/openid-connect/token"


def _password_token(http: httpx.Client, stack: StackInfo, user: str) -> dict[str, Any]:
    resp = http.post(
        _token_url(stack),
        data={
            "grant_type": "password",
            "client_id": "apikm-cli",
            "username": user,
            "password": user,
            "scope": "openid",
        },
    )
    assert resp.status_code == 200, resp.text
    return _claims(resp.json()["access_token"])


def _service_account_token(http: httpx.Client, stack: StackInfo) -> str:
    resp = http.post(
        _token_url(stack),
        data={"grant_type": "client_credentials"},
        auth=("apikm", "apikm-demo-secret"),
    )
    assert resp.status_code == 200, resp.text
    token: str = resp.json()["access_token"]
    return token


def test_up_is_ready_and_idempotent(stack: StackInfo) -> None:
    assert stack.base_url == "http://127.0.0.1:8080"
    assert stack.issuer == "http://127.0.0.1:8080/realms/demo"
    started = time.monotonic()
    again = keycloak.up()
    assert time.monotonic() - started < 5
    assert again == stack
    assert keycloak.status() == stack


def test_discovery(stack: StackInfo, http: httpx.Client) -> None:
    resp = http.get(f"{stack.issuer}/.well-known/openid-configuration")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["issuer"] == stack.issuer
    assert doc["token_endpoint"] == _token_url(stack)


def test_alice_token_audience_roles_groups(stack: StackInfo, http: httpx.Client) -> None:
    claims = _password_token(http, stack, "alice")
    aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    assert "apikm" in aud
    assert claims["iss"] == stack.issuer
    assert {"analyst", "editor", "offline_access"} <= set(claims["realm_access"]["roles"])
    assert set(claims["resource_access"]["geoserver"]["roles"]) == {"read", "write"}
    assert claims["resource_access"]["stac"]["roles"] == ["read"]
    assert claims["groups"] == ["/staff/gis"]
    assert claims["email"] == "alice@example.org"


def test_dana_composite_role_resolves(stack: StackInfo, http: httpx.Client) -> None:
    claims = _password_token(http, stack, "dana")
    assert {"data-manager", "editor"} <= set(claims["realm_access"]["roles"])
    assert claims["resource_access"]["geoserver"]["roles"] == ["write"]


def test_bob_lacks_editor(stack: StackInfo, http: httpx.Client) -> None:
    claims = _password_token(http, stack, "bob")
    assert "editor" not in claims["realm_access"]["roles"]
    assert claims["groups"] == ["/partners"]


def test_service_account_reads_but_cannot_write(stack: StackInfo, http: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {_service_account_token(http, stack)}"}
    users_url = f"{stack.base_url}/admin/realms/{stack.realm}/users"
    # Other tests create throwaway users, so ask for each demo user by exact name.
    found = {}
    for name in ("alice", "bob", "admin", "dana"):
        listed = http.get(users_url, headers=headers, params={"username": name, "exact": "true"})
        assert listed.status_code == 200, listed.text
        found[name] = [u["id"] for u in listed.json()]
    assert all(len(ids) == 1 for ids in found.values()), found
    alice_id = found["alice"][0]
    roles = http.get(f"{users_url}/{alice_id}/role-mappings/realm/composite", headers=headers)
    assert roles.status_code == 200
    groups = http.get(f"{users_url}/{alice_id}/groups", headers=headers)
    assert [g["path"] for g in groups.json()] == ["/staff/gis"]
    events = http.get(f"{stack.base_url}/admin/realms/{stack.realm}/admin-events", headers=headers)
    assert events.status_code == 200
    created = http.post(users_url, headers=headers, json={"username": "mallory", "enabled": True})
    assert created.status_code == 403
    # nor change one: least privilege means read-only
    disabled = http.put(f"{users_url}/{alice_id}", headers=headers, json={"enabled": False})
    assert disabled.status_code == 403


def test_checksum_rejects_corrupted_file(tmp_path: Path) -> None:
    tarball = tmp_path / "dist.tar.gz"
    tarball.write_bytes(b"keycloak distribution")
    pinned = keycloak.sha256_file(tarball)
    verify_sha256(tarball, pinned)
    tarball.write_bytes(b"keycloak distributioN")  # one flipped bit's worth of damage
    with pytest.raises(ChecksumError, match="does not match"):
        verify_sha256(tarball, pinned)
