"""Token exchange (RFC 8693), JWKS, discovery and introspection against a live apikm.

apikm mode on SQLite and PostgreSQL; keycloak mode against the real Keycloak, whose own
userinfo endpoint must accept the token apikm obtained.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from joserfc import jws, jwt
from joserfc.jwk import KeySet

from apikm.devstack.keycloak import StackInfo
from apikm.tokens.keycloak_setup import SetupOptions, remove_setup, setup_realm
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.keycloak_tokens import admin_token, password_grant
from tests.support.keycloak_users import realm_admin, set_enabled, throwaway_user
from tests.support.keys import create_key, user_client

pytestmark = pytest.mark.integration

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
API_KEY_TYPE = "urn:apikm:params:oauth:token-type:api-key"


def exchange(base_url: str, key: str, **extra: str) -> httpx.Response:
    form = {"grant_type": EXCHANGE, "subject_token": key, "subject_token_type": API_KEY_TYPE,
            **extra}
    return httpx.post(f"{base_url}/oauth/token", data=form, timeout=30)


def validated_claims(base_url: str, token: str) -> dict[str, Any]:
    """Validate as a resource server would: discovery -> JWKS -> signature and issuer."""
    discovery = httpx.get(f"{base_url}/.well-known/openid-configuration").json()
    keys = KeySet.import_key_set(httpx.get(discovery["jwks_uri"]).json())
    decoded = jwt.decode(token, keys, algorithms=["ES256", "RS256"])
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": discovery["issuer"]},
                          exp={"essential": True}).validate(decoded.claims)
    return dict(decoded.claims)


def _unverified(token: str) -> dict[str, Any]:
    """Claims without checking (for tokens of Keycloak, which Keycloak itself checks)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


# --- apikm mode ---------------------------------------------------------------------------


def test_exchanged_token_carries_effective_rights_and_validates(
        apikm: ApikmServer, as_user: Callable[[str], httpx.Client],
        token: Callable[[str], str]) -> None:
    key, created = create_key(as_user("alice"), ["analyst", "geoserver:read"])
    response = exchange(apikm.url, key)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert 0 < body["expires_in"] <= 300
    claims = validated_claims(apikm.url, body["access_token"])
    assert claims["sub"] == _unverified(token("alice"))["sub"]
    assert claims["iss"] == apikm.url
    assert sorted(claims["aud"]) == ["apikm", "geoserver"]
    assert claims["realm_access"] == {"roles": ["analyst"]}  # not editor: not granted
    assert claims["resource_access"] == {"geoserver": {"roles": ["read"]}}
    assert claims["groups"] == ["/staff/gis"]
    assert claims["preferred_username"] == "alice"
    assert claims["email"] == "alice@example.org"
    assert claims["key_id"] == created["id"]
    assert claims["typ"] == "Bearer" and claims["azp"] == "apikm" and claims["jti"]
    assert claims["exp"] - claims["iat"] == 300


def test_audience_can_be_narrowed_to_what_the_key_reaches(
        apikm: ApikmServer, as_user: Callable[[str], httpx.Client]) -> None:
    key, _ = create_key(as_user("alice"), ["geoserver:read"])
    narrowed = exchange(apikm.url, key, audience="geoserver")
    assert narrowed.status_code == 200, narrowed.text
    assert validated_claims(apikm.url, narrowed.json()["access_token"])["aud"] == "geoserver"
    refused = exchange(apikm.url, key, audience="stac")
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_target"


def test_jwt_token_type_on_request(apikm: ApikmServer,
                                   as_user: Callable[[str], httpx.Client]) -> None:
    key, _ = create_key(as_user("bob"), ["stac:read"])
    response = exchange(apikm.url, key,
                        requested_token_type="urn:ietf:params:oauth:token-type:jwt")
    assert response.status_code == 200
    assert response.json()["issued_token_type"] == "urn:ietf:params:oauth:token-type:jwt"


def test_revoked_and_expired_keys_get_nothing(
        apikm: ApikmServer, as_user: Callable[[str], httpx.Client]) -> None:
    alice = as_user("alice")
    revoked, created = create_key(alice, ["analyst"])
    assert alice.delete(f"/v1/keys/{created['id']}").status_code == 200
    soon = datetime.now(UTC) + timedelta(seconds=2)
    expiring, _ = create_key(alice, ["analyst"], expires_at=soon.isoformat())
    assert exchange(apikm.url, expiring).status_code == 200
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.5)
    for key in (revoked, expiring):
        response = exchange(apikm.url, key)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_grant"
        assert "access_token" not in response.json()


@pytest.mark.parametrize(("form", "error"), [
    ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
    ({"grant_type": EXCHANGE, "subject_token_type": API_KEY_TYPE}, "invalid_request"),
    ({"grant_type": EXCHANGE, "subject_token": "apikm_x",
      "subject_token_type": "urn:ietf:params:oauth:token-type:access_token"}, "invalid_request"),
    ({"grant_type": EXCHANGE, "subject_token": "apikm_x", "subject_token_type": API_KEY_TYPE,
      "requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
     "invalid_request"),
])
def test_malformed_exchange_requests(apikm: ApikmServer, form: dict[str, str],
                                     error: str) -> None:
    response = httpx.post(f"{apikm.url}/oauth/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_exchange_rejects_json_and_repeated_parameters(apikm: ApikmServer) -> None:
    as_json = httpx.post(f"{apikm.url}/oauth/token", json={"grant_type": EXCHANGE})
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    repeated = httpx.post(f"{apikm.url}/oauth/token", content=(
        f"grant_type={EXCHANGE}&grant_type={EXCHANGE}").encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert repeated.status_code == 400 and "repeated" in repeated.json()["error_description"]


def test_signing_key_rotation_keeps_previous_key_published(
        apikm: ApikmServer, as_user: Callable[[str], httpx.Client]) -> None:
    key, _ = create_key(as_user("bob"), ["analyst"])
    before = exchange(apikm.url, key).json()["access_token"]
    kid_before = jws.extract_compact(before.encode()).protected["kid"]
    rotated = subprocess.run([sys.executable, "-m", "apikm.cli", "signing-keys", "rotate"],
                             env=apikm.env, check=True, capture_output=True, text=True)
    time.sleep(0.5)  # the server reloads on the change event the rotation wrote
    after = exchange(apikm.url, key).json()["access_token"]
    kid_after = jws.extract_compact(after.encode()).protected["kid"]
    assert kid_after != kid_before and kid_after in rotated.stdout
    published = [k["kid"] for k in httpx.get(f"{apikm.url}/.well-known/jwks.json").json()["keys"]]
    assert published[:2] == [kid_after, kid_before]
    validated_claims(apikm.url, before)  # tokens signed before the rotation still validate
    validated_claims(apikm.url, after)
    assert not (apikm.data_dir / "signing-keys").exists()  # in the database, encrypted


def test_discovery_document(apikm: ApikmServer) -> None:
    document = httpx.get(f"{apikm.url}/.well-known/openid-configuration").json()
    assert document["issuer"] == apikm.url
    assert document["token_endpoint"] == f"{apikm.url}/oauth/token"
    assert document["introspection_endpoint"] == f"{apikm.url}/oauth/introspect"
    assert document["grant_types_supported"] == [EXCHANGE]


# --- introspection ------------------------------------------------------------------------


def test_introspection_from_loopback(apikm: ApikmServer,
                                     as_user: Callable[[str], httpx.Client]) -> None:
    alice = as_user("alice")
    key, created = create_key(alice, ["analyst", "stac:read"])
    active = httpx.post(f"{apikm.url}/oauth/introspect", data={"token": key}).json()
    assert active["active"] is True
    assert active["sub"] == created["owner_id"] and active["username"] == "alice"
    assert active["key_id"] == created["id"]
    assert active["roles"] == ["analyst", "stac:read"]
    assert active["resource_access"] == {"stac": {"roles": ["read"]}}
    alice.delete(f"/v1/keys/{created['id']}")
    assert httpx.post(f"{apikm.url}/oauth/introspect", data={"token": key}).json() == {
        "active": False}
    assert httpx.post(f"{apikm.url}/oauth/introspect", data={"token": "nonsense"}).json() == {
        "active": False}


def test_introspection_without_client_ip_judges_the_caller(
        apikm: ApikmServer, as_user: Callable[[str], httpx.Client]) -> None:
    alice = as_user("alice")
    inside, _ = create_key(alice, ["analyst"], allowed_networks=["127.0.0.0/8"])
    outside, _ = create_key(alice, ["analyst"], allowed_networks=["10.9.9.0/24"])
    url = f"{apikm.url}/oauth/introspect"
    assert httpx.post(url, data={"token": inside}).json()["active"] is True
    assert httpx.post(url, data={"token": outside}).json() == {"active": False}
    # a named client_ip still decides
    assert httpx.post(url, data={"token": outside, "client_ip": "10.9.9.7"}).json()["active"]
    assert httpx.post(url, data={"token": inside, "client_ip": "10.9.9.7"}).json() == {
        "active": False}


@pytest.fixture(scope="module")
def guarded_apikm(keycloak: StackInfo) -> Iterator[ApikmServer]:
    """Introspection open to no network: only Keycloak bearers with the role may ask."""
    with apikm_server(None, keycloak.base_url, introspect_networks="192.0.2.0/24") as server:
        yield server


def test_introspection_needs_a_trusted_network_or_the_role(
        guarded_apikm: ApikmServer, keycloak: StackInfo, token: Callable[[str], str]) -> None:
    url = f"{guarded_apikm.url}/oauth/introspect"
    key, _ = create_key(user_client(guarded_apikm.url, token("alice")), ["analyst"])
    anonymous = httpx.post(url, data={"token": key})
    assert anonymous.status_code == 401 and "WWW-Authenticate" in anonymous.headers
    without_role = httpx.post(url, data={"token": key},
                              headers={"Authorization": f"Bearer {token('bob')}"})
    assert without_role.status_code == 403
    with _realm_role(keycloak, "apikm-introspect"), throwaway_user(
            keycloak.base_url, ("apikm-introspect",)) as service:
        bearer = password_grant(keycloak.issuer, service.username, service.password)
        allowed = httpx.post(url, data={"token": key},
                             headers={"Authorization": f"Bearer {bearer['access_token']}"})
    assert allowed.status_code == 200
    assert allowed.json()["active"] is True and allowed.json()["username"] == "alice"


@contextmanager
def _realm_role(keycloak: StackInfo, name: str) -> Iterator[None]:
    """Ensure a realm role exists; remove it afterwards only if this test created it."""
    with realm_admin(keycloak.base_url) as admin:
        created = admin.get(f"/roles/{name}").status_code == 404
        if created:
            admin.post("/roles", json={"name": name}).raise_for_status()
    try:
        yield
    finally:
        if created:
            with realm_admin(keycloak.base_url) as admin:
                admin.delete(f"/roles/{name}")


# --- keycloak mode ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keycloak_mode_apikm(keycloak: StackInfo) -> Iterator[ApikmServer]:
    """apikm in keycloak exchange mode with its own exchange client and identity provider,
    set up in the realm by the same code as ``apikm keycloak setup`` (which creates the
    client), removed afterwards."""
    suffix = secrets.token_hex(4)
    alias, client_id, secret = f"apikm-test-{suffix}", f"apikm-xchg-{suffix}", \
        secrets.token_urlsafe(16)
    with apikm_server(None, keycloak.base_url, exchange_mode="keycloak",
                      keycloak_idp_alias=alias, exchange_client_id=client_id,
                      exchange_client_secret=secret) as server:
        options = SetupOptions(
            keycloak_url=keycloak.base_url, realm="demo", alias=alias, issuer=server.url,
            jwks_url=f"{server.url}/.well-known/jwks.json", client_id=client_id,
            signing_alg="ES256", client_secret=secret, audiences=("apikm",))
        changes = setup_realm(options, admin_token(keycloak.base_url))
        assert any("created" in change for change in changes)
        assert setup_realm(options, admin_token(keycloak.base_url)) == []  # idempotent
        try:
            yield server
        finally:
            remove_setup(options, admin_token(keycloak.base_url))
            with realm_admin(keycloak.base_url) as admin:
                for client in admin.get("/clients", params={"clientId": client_id}).json():
                    admin.delete(f"/clients/{client['id']}")


def full_key(client: httpx.Client) -> tuple[str, dict[str, Any]]:
    """A key granted every role its owner holds."""
    return create_key(client, client.get("/v1/me").json()["roles"])


def test_keycloak_mode_token_is_accepted_by_keycloak(
        keycloak_mode_apikm: ApikmServer, keycloak: StackInfo,
        token: Callable[[str], str]) -> None:
    key, _ = full_key(user_client(keycloak_mode_apikm.url, token("alice")))
    response = exchange(keycloak_mode_apikm.url, key)
    assert response.status_code == 200, response.text + keycloak_mode_apikm.log_text()[-3000:]
    issued = response.json()["access_token"]
    claims = _unverified(issued)
    assert claims["iss"] == keycloak.issuer
    assert claims["sub"] == _unverified(token("alice"))["sub"]
    assert {"analyst", "editor"} <= set(claims["realm_access"]["roles"])  # the key's: all
    assert sorted(claims["resource_access"]["geoserver"]["roles"]) == ["read", "write"]
    userinfo = httpx.get(f"{keycloak.issuer}/protocol/openid-connect/userinfo",
                         headers={"Authorization": f"Bearer {issued}"})
    assert userinfo.status_code == 200
    assert userinfo.json()["preferred_username"] == "alice"


def test_keycloak_mode_links_owner_and_refuses_disabled_owner(
        keycloak_mode_apikm: ApikmServer, keycloak: StackInfo) -> None:
    alias = keycloak_mode_apikm.env["APIKM_KEYCLOAK_IDP_ALIAS"]
    with throwaway_user(keycloak.base_url, ("analyst",)) as user:
        bearer = password_grant(keycloak.issuer, user.username, user.password)["access_token"]
        key, _ = full_key(user_client(keycloak_mode_apikm.url, str(bearer)))
        first = exchange(keycloak_mode_apikm.url, key)
        assert first.status_code == 200, first.text
        with realm_admin(keycloak.base_url) as admin:
            links = admin.get(f"/users/{user.id}/federated-identity").json()
        assert {"identityProvider": alias, "userId": user.id} == {
            k: v for k, v in links[0].items() if k in ("identityProvider", "userId")}
        set_enabled(keycloak.base_url, user.id, False)
        refused = exchange(keycloak_mode_apikm.url, key)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_grant"
        assert "access_token" not in refused.json()


def test_keycloak_mode_refuses_revoked_key_without_asking_keycloak(
        keycloak_mode_apikm: ApikmServer, token: Callable[[str], str]) -> None:
    client = user_client(keycloak_mode_apikm.url, token("bob"))
    key, created = create_key(client, ["analyst"])
    client.delete(f"/v1/keys/{created['id']}")
    response = exchange(keycloak_mode_apikm.url, key)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant",
                               "error_description": "API key has been revoked"}


def test_keycloak_mode_narrows_a_key_narrower_than_its_owner(
        keycloak_mode_apikm: ApikmServer, token: Callable[[str], str]) -> None:
    """alice holds editor, geoserver:write, ...; her analyst key's Keycloak token carries
    analyst only, for the exchange and for forward auth's upstream JWT alike (more in
    test_keycloak_narrowed.py)."""
    alice = user_client(keycloak_mode_apikm.url, token("alice"))
    narrow, _ = create_key(alice, ["analyst"])
    response = exchange(keycloak_mode_apikm.url, narrow)
    assert response.status_code == 200, response.text
    claims = _unverified(response.json()["access_token"])
    assert claims["realm_access"] == {"roles": ["analyst"]}
    assert not claims.get("resource_access")
    auth = f"{keycloak_mode_apikm.url}/v1/auth"
    granted = httpx.get(auth, params={"jwt": "1"}, headers={"X-API-Key": narrow})
    assert granted.status_code == 200, granted.text
    upstream = _unverified(granted.headers["authorization"].removeprefix("Bearer "))
    assert upstream["realm_access"] == {"roles": ["analyst"]}
