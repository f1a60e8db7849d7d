"""``ANY /v1/auth`` over HTTP against a live apikm, as gateways call it.

Each test speaks for its own made-up client address through ``X-Forwarded-For`` (the test
runs on loopback, a trusted proxy by default), so failure counting never leaks between tests.
"""

from __future__ import annotations

import base64
import itertools
import socket
from collections.abc import Callable, Iterator

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from apikm.devstack.keycloak import StackInfo
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.keys import create_key, user_client

pytestmark = pytest.mark.integration

_addresses = (f"198.51.100.{n}" for n in itertools.count(1))


@pytest.fixture
def client_ip() -> str:
    """A fresh end-client address for this test (TEST-NET-2)."""
    return next(_addresses)


def auth(server: ApikmServer, client_ip: str, headers: dict[str, str] | None = None,
         path: str = "/v1/auth", method: str = "GET", **params: str | list[str]
         ) -> httpx.Response:
    return httpx.request(method, f"{server.url}{path}", params=params,
                         headers={"X-Forwarded-For": client_ip, **(headers or {})}, timeout=30)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def alice_key(as_user: Callable[[str], httpx.Client]) -> str:
    key, _ = create_key(as_user("alice"), ["analyst", "geoserver:read"])
    return key


@pytest.mark.parametrize("place", ["x-api-key", "bearer", "basic-password", "basic-user",
                                   "original-uri", "forwarded-uri", "envoy-path"])
def test_key_is_found_everywhere_and_identity_returned(
        apikm: ApikmServer, client_ip: str, alice_key: str, place: str) -> None:
    headers, path, params = _present(alice_key, place)
    response = auth(apikm, client_ip, headers, path, **params)
    assert response.status_code == 200, response.text
    assert response.headers["X-Auth-User"] == "alice"
    assert response.headers["X-Auth-Email"] == "alice@example.org"
    assert response.headers["X-Auth-Roles"] == "analyst,geoserver:read"
    assert response.headers["X-Auth-Groups"] == "/staff/gis"
    assert len(response.headers["X-Auth-User-Id"]) == 36
    assert len(response.headers["X-Auth-Key-Id"]) == 36
    assert "Authorization" not in response.headers  # no upstream JWT unless asked


def _present(key: str, place: str) -> tuple[dict[str, str], str, dict[str, str]]:
    return {
        "x-api-key": ({"X-API-Key": key}, "/v1/auth", {}),
        "bearer": ({"Authorization": f"Bearer {key}"}, "/v1/auth", {}),
        "basic-password": ({"Authorization": basic("anyone", key)}, "/v1/auth", {}),
        "basic-user": ({"Authorization": basic(key, "")}, "/v1/auth", {}),
        "original-uri": ({"X-Original-URI": f"/maps/a.tif?x=1&apikey={key}"}, "/v1/auth", {}),
        "forwarded-uri": ({"X-Forwarded-Uri": f"/maps/a.tif?apikey={key}"}, "/v1/auth", {}),
        "envoy-path": ({}, "/v1/auth/maps/a.tif", {"apikey": key}),
    }[place]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH",
                                    "PROPFIND", "MKCOL"])
def test_any_method(apikm: ApikmServer, client_ip: str, alice_key: str, method: str) -> None:
    response = auth(apikm, client_ip, {"X-API-Key": alice_key}, method=method)
    assert response.status_code == 200
    assert response.headers["X-Auth-User"] == "alice"


def test_large_upload_headers_do_not_change_the_answer(apikm: ApikmServer, client_ip: str,
                                                      alice_key: str) -> None:
    # Envoy and Traefik may pass the protected request's headers, Content-Length included.
    # httpx will not send a Content-Length it does not honour, so speak HTTP by hand.
    host, port = apikm.url.removeprefix("http://").split(":")
    for key, status in ((alice_key, 200), ("apikm_wrong", 401)):
        request = (f"PUT /v1/auth HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n"
                   f"X-Forwarded-For: {client_ip}\r\nContent-Length: 10000000\r\n\r\n")
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            connection.sendall(request.encode())
            status_line = connection.recv(4096).split(b"\r\n", 1)[0]
        assert status_line.split()[1] == str(status).encode()


def test_key_beats_a_foreign_bearer_token(apikm: ApikmServer, client_ip: str, alice_key: str,
                                          token: Callable[[str], str]) -> None:
    headers = {"Authorization": f"Bearer {token('bob')}",
               "X-Original-URI": f"/data?apikey={alice_key}"}
    response = auth(apikm, client_ip, headers)
    assert response.status_code == 200 and response.headers["X-Auth-User"] == "alice"


def test_missing_or_bad_key_is_401_with_both_challenges(apikm: ApikmServer,
                                                        client_ip: str) -> None:
    for headers in ({}, {"X-API-Key": "apikm_notakey"}, {"Authorization": "Basic !!!"},
                    {"X-API-Key": "apikm_" + "A" * 40}):
        response = auth(apikm, client_ip, headers)
        assert response.status_code == 401, headers
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="apikm"') and 'Basic realm="apikm"' in challenge
        assert "X-Auth-User" not in response.headers


def test_revoked_key_is_401(apikm: ApikmServer, client_ip: str,
                            as_user: Callable[[str], httpx.Client]) -> None:
    alice = as_user("alice")
    key, created = create_key(alice, ["analyst"])
    assert auth(apikm, client_ip, {"X-API-Key": key}).status_code == 200
    alice.delete(f"/v1/keys/{created['id']}")
    response = auth(apikm, client_ip, {"X-API-Key": key})
    assert response.status_code == 401
    assert response.json()["error"] == "REVOKED"


def test_required_roles(apikm: ApikmServer, client_ip: str, alice_key: str) -> None:
    key = {"X-API-Key": alice_key}
    assert auth(apikm, client_ip, key, role=["analyst", "geoserver:read"]).status_code == 200
    # editor: alice has it, the key was not granted it
    denied = auth(apikm, client_ip, key, role=["analyst", "editor"])
    assert denied.status_code == 403 and denied.json()["error"] == "INSUFFICIENT_ROLES"
    header_roles = auth(apikm, client_ip, {**key, "X-Auth-Require-Roles": "geoserver:write"},
                        role="analyst")
    assert header_roles.status_code == 403


def test_network_restriction_uses_forwarded_client(apikm: ApikmServer,
                                                   as_user: Callable[[str], httpx.Client]) -> None:
    key, _ = create_key(as_user("bob"), ["analyst"], allowed_networks=["203.0.113.0/24"])
    assert auth(apikm, "203.0.113.7", {"X-API-Key": key}).status_code == 200
    # only APIKM_CLIENT_IP_HEADER (X-Forwarded-For by default) is believed, never X-Real-IP
    real_ip = auth(apikm, "", {"X-API-Key": key, "X-Real-IP": "203.0.113.8"})
    assert real_ip.status_code == 403 and real_ip.json()["error"] == "IP_NOT_ALLOWED"
    outside = auth(apikm, next(_addresses), {"X-API-Key": key})
    assert outside.status_code == 403 and outside.json()["error"] == "IP_NOT_ALLOWED"


def test_failures_trip_the_limiter_then_429(apikm: ApikmServer, client_ip: str,
                                            alice_key: str) -> None:
    limit = int(apikm.env["APIKM_RATE_LIMIT"].split("/")[0])
    for _ in range(limit):
        assert auth(apikm, client_ip, {"X-API-Key": "apikm_" + "B" * 40}).status_code == 401
    blocked = auth(apikm, client_ip, {"X-API-Key": alice_key})
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0
    assert auth(apikm, next(_addresses), {"X-API-Key": alice_key}).status_code == 200


def test_upstream_jwt_on_request_is_cached_and_follows_the_key(
        apikm: ApikmServer, client_ip: str, as_user: Callable[[str], httpx.Client]) -> None:
    alice = as_user("alice")
    key, created = create_key(alice, ["analyst", "geoserver:read"])
    first = auth(apikm, client_ip, {"X-API-Key": key}, jwt="1")
    assert first.status_code == 200
    bearer = first.headers["Authorization"]
    assert bearer == first.headers["X-Auth-Token"] and bearer.startswith("Bearer ")
    keys = KeySet.import_key_set(httpx.get(f"{apikm.url}/.well-known/jwks.json").json())
    claims = jwt.decode(bearer.removeprefix("Bearer "), keys).claims
    assert claims["iss"] == apikm.url and claims["preferred_username"] == "alice"
    assert claims["resource_access"] == {"geoserver": {"roles": ["read"]}}
    again = auth(apikm, client_ip, {"X-API-Key": key}, jwt="1")
    assert again.headers["Authorization"] == bearer  # not signed again
    alice.patch(f"/v1/keys/{created['id']}", json={"roles": ["analyst"]}).raise_for_status()
    narrowed = auth(apikm, client_ip, {"X-API-Key": key}, jwt="1").headers["Authorization"]
    assert narrowed != bearer
    assert jwt.decode(narrowed.removeprefix("Bearer "), keys).claims["resource_access"] == {}


@pytest.fixture(scope="module")
def untrusting_apikm(keycloak: StackInfo) -> Iterator[ApikmServer]:
    """apikm that trusts no proxy on loopback: X-Forwarded-For must be ignored."""
    with apikm_server(None, keycloak.base_url, trusted_proxies="192.0.2.0/24") as server:
        yield server


def test_forwarded_for_is_ignored_from_untrusted_peers(
        untrusting_apikm: ApikmServer, token: Callable[[str], str]) -> None:
    client = user_client(untrusting_apikm.url, token("bob"))
    key, _ = create_key(client, ["analyst"], allowed_networks=["203.0.113.0/24"])
    spoofed = auth(untrusting_apikm, "203.0.113.7",
                   {"X-API-Key": key, "X-Real-IP": "203.0.113.7"})
    assert spoofed.status_code == 403 and spoofed.json()["error"] == "IP_NOT_ALLOWED"
