"""What every gateway in front of apikm must do, checked through the real gateway.

Used by ``tests/e2e/test_gateways.py`` (nginx and Caddy) with the configs from
``deploy/``: ``/maps/`` proxies to an echo service and needs ``geoserver:read`` (plus an
upstream JWT), ``/data/`` serves files and needs ``analyst``.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support.apikm_server import ApikmServer
from tests.support.gateways import Gateway, client_from

_sources = (f"127.0.{n // 250}.{n % 250 + 2}" for n in itertools.count(1))


@dataclass(frozen=True)
class Setting:
    apikm: ApikmServer
    gateway: Gateway
    alice_key: str  # analyst + geoserver:read
    bob_key: str  # analyst only
    revoked_key: str


@contextmanager
def fresh_client(setting: Setting) -> Iterator[httpx.Client]:
    """A client from a loopback address no other check used (failures counted apart)."""
    with client_from(next(_sources), setting.gateway.url) as client:
        yield client


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def key_placements(key: str) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """name -> (headers, query) presenting the key that way."""
    return {
        "header": ({"X-API-Key": key}, {}),
        "bearer": ({"Authorization": f"Bearer {key}"}, {}),
        "basic": ({"Authorization": _basic("gis", key)}, {}),
        "query": ({}, {"apikey": key}),
    }


def _echoed(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    headers: dict[str, Any] = response.json()["headers"]
    return headers


def check_key_passes_with_identity_upstream(setting: Setting, placement: str) -> None:
    headers, query = key_placements(setting.alice_key)[placement]
    with fresh_client(setting) as client:
        seen = _echoed(client.get("/maps/wms", headers=headers, params=query))
    assert seen["x-auth-user"] == "alice"
    assert seen["x-auth-email"] == "alice@example.org"
    assert seen["x-auth-roles"] == "analyst,geoserver:read"
    assert seen["x-auth-groups"] == "/staff/gis"
    assert "x-api-key" not in seen  # the key is not handed on
    claims = upstream_jwt_claims(setting, seen["authorization"])
    assert claims["preferred_username"] == "alice"
    assert claims["resource_access"] == {"geoserver": {"roles": ["read"]}}
    assert claims["sub"] == seen["x-auth-user-id"]


def upstream_jwt_claims(setting: Setting, authorization: str) -> dict[str, Any]:
    """The upstream's view: the bearer token validates against apikm's published keys."""
    assert authorization.startswith("Bearer ")
    jwks = httpx.get(f"{setting.apikm.url}/.well-known/jwks.json").json()
    decoded = jwt.decode(authorization.removeprefix("Bearer "), KeySet.import_key_set(jwks))
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": setting.apikm.url},
                          exp={"essential": True}).validate(decoded.claims)
    return dict(decoded.claims)


def check_spoofed_identity_headers_are_replaced(setting: Setting) -> None:
    spoof = {"X-API-Key": setting.alice_key, "X-Auth-User": "admin", "X-Auth-Roles": "apikm-admin",
             "X-Auth-Key-Id": "forged"}
    with fresh_client(setting) as client:
        seen = _echoed(client.get("/maps/wms", headers=spoof))
    assert seen["x-auth-user"] == "alice" and seen["x-auth-roles"] == "analyst,geoserver:read"
    assert seen["x-auth-key-id"] != "forged"


def check_refusals(setting: Setting) -> None:
    with fresh_client(setting) as client:
        missing = client.get("/maps/wms")
        assert missing.status_code == 401
        assert 'Basic realm="apikm"' in missing.headers["WWW-Authenticate"]
        assert client.get("/maps/wms", headers={"X-API-Key": "apikm_" + "x" * 40}
                          ).status_code == 401
        assert client.get("/maps/wms", params={"apikey": setting.revoked_key}).status_code == 401
        # bob's key is good but lacks geoserver:read
        assert client.get("/maps/wms", headers={"X-API-Key": setting.bob_key}).status_code == 403
        assert client.get("/data/dem.tif", headers={"X-API-Key": setting.bob_key}
                          ).status_code == 200


def check_refusals_say_why(setting: Setting) -> None:
    """Behind the gateway too, a refusal names its reason (header and JSON body), never
    with the key in it."""
    with fresh_client(setting) as client:
        answers = {
            "missing_key": client.get("/data/dem.tif"),
            "REVOKED": client.get("/data/dem.tif", params={"apikey": setting.revoked_key}),
            "INSUFFICIENT_ROLES": client.get("/maps/wms", headers={"X-API-Key": setting.bob_key}),
        }
    for code, response in answers.items():
        assert response.status_code == (403 if code == "INSUFFICIENT_ROLES" else 401), code
        assert response.headers["content-type"] == "application/json", code
        assert response.headers["x-auth-error"] == code
        body = response.json()
        assert body["error"] == code and body["message"], body
        assert setting.revoked_key not in response.text and setting.bob_key not in response.text
    assert answers["REVOKED"].json()["message"] == "API key has been revoked"
    challenge = answers["REVOKED"].headers["www-authenticate"]
    assert 'error="invalid_token", error_description="API key has been revoked"' in challenge
    assert "geoserver:read" in answers["INSUFFICIENT_ROLES"].json()["message"]


def check_static_file(setting: Setting) -> None:
    original = (setting.gateway.srv / "data" / "dem.tif").read_bytes()
    with fresh_client(setting) as client:
        whole = client.get("/data/dem.tif", params={"apikey": setting.alice_key})
        assert whole.status_code == 200 and whole.content == original
        part = client.get("/data/dem.tif", headers={"X-API-Key": setting.alice_key,
                                                    "Range": "bytes=0-15"})
        assert part.status_code == 206 and part.content == original[:16]
        head = client.head("/data/dem.tif", headers={"X-API-Key": setting.alice_key})
        assert head.status_code == 200
        assert int(head.headers["Content-Length"]) == len(original)
        assert client.get("/data/dem.tif").status_code == 401


def check_failure_limit_gives_429(setting: Setting) -> None:
    limit = int(setting.apikm.env["APIKM_RATE_LIMIT"].split("/")[0])
    with fresh_client(setting) as client:
        for _ in range(limit):
            bad = client.get("/maps/wms", headers={"X-API-Key": "apikm_" + "y" * 40})
            assert bad.status_code == 401
        blocked = client.get("/maps/wms", headers={"X-API-Key": setting.alice_key})
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) > 0
    with fresh_client(setting) as other:  # another client is not affected
        assert other.get("/maps/wms", headers={"X-API-Key": setting.alice_key}
                         ).status_code == 200
