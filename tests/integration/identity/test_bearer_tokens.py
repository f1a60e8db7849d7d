"""Bearer tokens for the key API: only genuine, current Keycloak access tokens meant for apikm.

Every token here comes from the real Keycloak by a real grant, except the forged one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from apikm.devstack.keycloak import StackInfo
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.keycloak_tokens import access_token, admin_token, password_grant

pytestmark = pytest.mark.integration


def keys_status(server_url: str, token: str) -> httpx.Response:
    return httpx.get(f"{server_url}/v1/keys", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def strict(keycloak: StackInfo) -> Iterator[ApikmServer]:
    """apikm on SQLite with no clock leeway, so an expired token is refused at once."""
    with apikm_server(None, keycloak.base_url, token_leeway_seconds="0") as server:
        yield server


@pytest.fixture(scope="module")
def short_lived_client(keycloak: StackInfo) -> Iterator[str]:
    """A throwaway public client whose access tokens live 3 seconds and carry aud=apikm."""
    admin = {"Authorization": f"Bearer {admin_token(keycloak.base_url)}"}
    base = f"{keycloak.base_url}/admin/realms/{keycloak.realm}/clients"
    client_id = f"short-{uuid.uuid4().hex[:8]}"
    response = httpx.post(base, headers=admin, json={
        "clientId": client_id, "publicClient": True, "directAccessGrantsEnabled": True,
        "standardFlowEnabled": False, "attributes": {"access.token.lifespan": "3"},
        "protocolMappers": [{"name": "aud", "protocol": "openid-connect",
                             "protocolMapper": "oidc-audience-mapper",
                             "config": {"included.client.audience": "apikm",
                                        "access.token.claim": "true"}}],
    })
    assert response.status_code == 201, response.text
    location = response.headers["location"]
    yield client_id
    httpx.delete(location, headers={"Authorization": f"Bearer {admin_token(keycloak.base_url)}"})


def test_genuine_token_is_accepted(strict: ApikmServer, keycloak: StackInfo) -> None:
    assert keys_status(strict.url, access_token(keycloak.issuer, "alice")).status_code == 200


def test_missing_or_garbage_token_is_401(strict: ApikmServer) -> None:
    response = httpx.get(f"{strict.url}/v1/keys")
    assert response.status_code == 401 and "Bearer" in response.headers["www-authenticate"]
    for garbage in ("abc", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 5000):
        response = keys_status(strict.url, garbage)
        assert response.status_code == 401, garbage
        assert response.json()["error"] == "invalid_token"


def test_forged_token_is_401(strict: ApikmServer, keycloak: StackInfo) -> None:
    real = access_token(keycloak.issuer, "alice")
    claims = jwt.decode(real, _any_key_set(keycloak)).claims
    kid = jwt.decode(real, _any_key_set(keycloak)).header["kid"]
    forged = jwt.encode({"alg": "RS256", "kid": kid},
                        {**claims, "realm_access": {"roles": ["apikm-admin"]}},
                        RSAKey.generate_key(2048))
    response = keys_status(strict.url, forged)
    assert response.status_code == 401 and "signature" in response.json()["message"]


def test_expired_token_is_401(strict: ApikmServer, keycloak: StackInfo,
                              short_lived_client: str) -> None:
    grant = password_grant(keycloak.issuer, "alice", client_id=short_lived_client)
    token = str(grant["access_token"])
    assert keys_status(strict.url, token).status_code == 200
    time.sleep(4.5)
    response = keys_status(strict.url, token)
    assert response.status_code == 401 and "expired" in response.json()["message"]


def test_wrong_audience_is_401(strict: ApikmServer, keycloak: StackInfo) -> None:
    # admin-cli of the master realm issues genuine tokens that are not meant for apikm
    # (and come from another issuer); a token of the demo realm's account console client
    # has the right issuer but not the audience.
    token = admin_token(keycloak.base_url)
    assert keys_status(strict.url, token).status_code == 401
    other = _token_without_apikm_audience(keycloak)
    response = keys_status(strict.url, other)
    assert response.status_code == 401 and "audience" in response.json()["message"]


def test_wrong_issuer_is_401(keycloak: StackInfo) -> None:
    # Same Keycloak, same signing keys, but apikm is told the issuer is at "localhost":
    # a validly signed token from 127.0.0.1 must be refused on the issuer claim alone.
    with apikm_server(None, keycloak.base_url.replace("127.0.0.1", "localhost")) as server:
        response = keys_status(server.url, access_token(keycloak.issuer, "alice"))
    assert response.status_code == 401 and "iss" in response.json()["message"]


def _any_key_set(keycloak: StackInfo) -> object:
    from joserfc.jwk import KeySet

    certs = httpx.get(f"{keycloak.issuer}/protocol/openid-connect/certs").json()
    return KeySet.import_key_set({"keys": [k for k in certs["keys"] if k.get("use") == "sig"]})


def _token_without_apikm_audience(keycloak: StackInfo) -> str:
    admin = {"Authorization": f"Bearer {admin_token(keycloak.base_url)}"}
    base = f"{keycloak.base_url}/admin/realms/{keycloak.realm}/clients"
    client_id = f"noaud-{uuid.uuid4().hex[:8]}"
    created = httpx.post(base, headers=admin, json={
        "clientId": client_id, "publicClient": True, "directAccessGrantsEnabled": True,
        "standardFlowEnabled": False})
    assert created.status_code == 201, created.text
    try:
        return str(password_grant(keycloak.issuer, "alice", client_id=client_id)["access_token"])
    finally:
        httpx.delete(created.headers["location"], headers=admin)
