"""deploy/nginx/apikm-microcache.conf with the real nginx: a burst with one key asks apikm
once, nothing but that key (with that URI, address and roles) rides on the cached answer,
and a revoked key is refused within the cache's second. (The full gateway suite runs
through this config too: tests/e2e/test_gateways.py.)"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from apikm.devstack import keycloak as devstack
from tests.e2e.gateway_fixtures import gateway_setting
from tests.support import gateway_checks as checks
from tests.support.gateways import nginx_gateway
from tests.support.keycloak_tokens import access_token
from tests.support.keys import create_key, user_client

pytestmark = pytest.mark.integration
cached_nginx = functools.partial(nginx_gateway, site_file="apikm-microcache.conf")


@pytest.fixture(scope="module")
def setting() -> Iterator[checks.Setting]:
    with gateway_setting(cached_nginx, failure_limit="1000/minute") as prepared:
        yield prepared


def auth_answers(setting: checks.Setting, code: str) -> int:
    """How many /v1/auth requests apikm answered with ``code`` (its own count)."""
    text = httpx.get(f"{setting.apikm.url}/metrics").text
    found = re.search(rf'apikm_verifications_total{{code="{code}",endpoint="auth"}} (\S+)', text)
    return int(float(found.group(1))) if found else 0


def test_a_burst_with_one_key_asks_apikm_about_once(setting: checks.Setting) -> None:
    before = auth_answers(setting, "VALID")
    with checks.fresh_client(setting) as client:
        started = time.monotonic()
        for _ in range(30):
            response = client.get("/data/dem.tif", headers={"X-API-Key": setting.alice_key,
                                                            "Range": "bytes=0-99"})
            assert response.status_code == 206
        elapsed = time.monotonic() - started
    asked = auth_answers(setting, "VALID") - before
    assert 1 <= asked <= 2 * int(elapsed) + 3, (asked, elapsed)  # two misses a second at most


def test_a_cached_answer_serves_no_other_key(setting: checks.Setting) -> None:
    wrong = "apikm_" + "q" * 40
    with checks.fresh_client(setting) as client:
        wrong_placements = checks.key_placements(wrong)
        for placement, (headers, query) in checks.key_placements(setting.alice_key).items():
            assert client.get("/maps/wms", headers=headers, params=query).status_code == 200
            bad_headers, bad_query = wrong_placements[placement]
            refused = client.get("/maps/wms", headers=bad_headers, params=bad_query)
            assert refused.status_code == 401, placement
        # Same URI and address, no key at all; another spelling of the parameter.
        assert client.get("/maps/wms").status_code == 401
        assert client.get("/maps/wms", params={"apikey": setting.alice_key}).status_code == 200
        assert client.get(f"/maps/wms?api%6Bey={wrong}").status_code == 401
        # Two X-API-Key headers: apikm judges the one nginx caches under (the first).
        assert client.get("/maps/wms", headers=[("X-API-Key", setting.alice_key),
                                                ("X-API-Key", wrong)]).status_code == 200
        assert client.get("/maps/wms", headers=[("X-API-Key", wrong),
                                                ("X-API-Key", setting.alice_key)]
                          ).status_code == 401


def test_a_cached_answer_is_per_required_roles(setting: checks.Setting) -> None:
    with checks.fresh_client(setting) as client:
        # bob's key passes /data/ (any valid key) and is refused by /maps/ (geoserver:read).
        assert client.get("/data/dem.tif", headers={"X-API-Key": setting.bob_key}
                          ).status_code == 200
        assert client.get("/maps/wms", headers={"X-API-Key": setting.bob_key}
                          ).status_code == 403


def test_a_revoked_key_is_refused_within_half_a_second(setting: checks.Setting) -> None:
    owner = user_client(setting.apikm.url, access_token(devstack.up().issuer, "alice"))
    key, created = create_key(owner, ["analyst"])
    with checks.fresh_client(setting) as client:
        assert client.get("/data/dem.tif", headers={"X-API-Key": key}).status_code == 200
        owner.delete(f"/v1/keys/{created['id']}").raise_for_status()
        revoked_at = time.monotonic()
        while client.get("/data/dem.tif", headers={"X-API-Key": key}).status_code == 200:
            assert time.monotonic() - revoked_at < 0.6, "still served from the cache"
            time.sleep(0.01)


def test_a_key_in_a_client_sent_uri_header_is_not_read(setting: checks.Setting) -> None:
    """apikm also reads keys from X-Original-URL and X-Forwarded-Uri (ingress-nginx,
    Traefik): behind this nginx only nginx names the URI, or a client could get a 200 cached
    under no key at all, which the next keyless request from its address would ride on."""
    with checks.fresh_client(setting) as client:
        for header in ("X-Original-URL", "X-Forwarded-Uri"):
            smuggled = client.get("/data/dem.tif", headers={
                header: f"/data/dem.tif?apikey={setting.alice_key}"})
            assert smuggled.status_code == 401, header
        assert client.get("/data/dem.tif").status_code == 401
