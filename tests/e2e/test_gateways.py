"""Debian's nginx (``auth_request``, deploy/nginx/apikm.conf) and Caddy (``forward_auth``,
deploy/caddy/Caddyfile) in front of a static file server and an echo service, apikm deciding
every request. Every test runs once through each gateway."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest

from tests.e2e.gateway_fixtures import gateway_setting
from tests.support import gateway_checks as checks
from tests.support.gateways import caddy_gateway, nginx_gateway

pytestmark = pytest.mark.integration
GATEWAYS = {"nginx": nginx_gateway, "caddy": caddy_gateway,
            "nginx-microcache": functools.partial(nginx_gateway,
                                                  site_file="apikm-microcache.conf")}


@pytest.fixture(scope="module", params=sorted(GATEWAYS))
def setting(request: pytest.FixtureRequest) -> Iterator[checks.Setting]:
    with gateway_setting(GATEWAYS[request.param]) as prepared:
        yield prepared


@pytest.mark.parametrize("placement", ["header", "bearer", "basic", "query"])
def test_key_passes_with_identity_and_jwt_upstream(setting: checks.Setting,
                                                   placement: str) -> None:
    checks.check_key_passes_with_identity_upstream(setting, placement)


def test_spoofed_identity_headers_are_replaced(setting: checks.Setting) -> None:
    checks.check_spoofed_identity_headers_are_replaced(setting)


def test_missing_bad_revoked_and_insufficient_keys_are_refused(setting: checks.Setting) -> None:
    checks.check_refusals(setting)


def test_refusals_say_why(setting: checks.Setting) -> None:
    checks.check_refusals_say_why(setting)


def test_static_file_with_ranges(setting: checks.Setting) -> None:
    checks.check_static_file(setting)


def test_failure_limit_reaches_the_client_as_429(setting: checks.Setting) -> None:
    checks.check_failure_limit_gives_429(setting)


def test_nginx_keeps_a_query_key_out_of_the_upstream_url(nginx: checks.Setting) -> None:
    key = nginx.alice_key
    for query in ({"apikey": key}, {"layer": "dem", "apikey": key, "format": "png"},
                  {"apikey": key, "format": "png"}):
        with checks.fresh_client(nginx) as client:
            response = client.get("/maps/wms", params=query)
        assert response.status_code == 200, response.text
        path = response.json()["path"]
        assert key not in path and "apikey" not in path
        assert all(f"{name}={value}" in path for name, value in query.items()
                   if name != "apikey")


@pytest.fixture(scope="module")
def nginx() -> Iterator[checks.Setting]:
    with gateway_setting(nginx_gateway) as prepared:
        yield prepared


def test_nginx_strips_every_apikey_from_the_upstream_url(nginx: checks.Setting) -> None:
    """A map replaces one match: "apikey=K&apikey=" used to hand K to the upstream."""
    key = nginx.alice_key
    for query in (f"apikey={key}&apikey=", f"apikey={key}&apikey=x", f"apikey=x&apikey={key}",
                  f"a=1&apikey={key}&b=2&apikey={key}", f"api%6Bey={key}&a=1",
                  f"%61pikey={key}&apikey=&a=1"):
        with checks.fresh_client(nginx) as client:
            response = client.get(f"/maps/wms?{query}")
        assert response.status_code == 200, (query, response.text)
        path = response.json()["path"]
        assert key not in path and "pikey" not in path and "%6B" not in path, path
    with checks.fresh_client(nginx) as client:
        third = client.get(f"/maps/wms?apikey={key}&apikey=1&apikey=2")
    assert third.status_code == 400 and key not in third.text
    assert third.headers["content-type"] == "application/json"


def test_nginx_error_bodies_are_json_whatever_the_file_type(nginx: checks.Setting) -> None:
    limit = int(nginx.apikm.env["APIKM_RATE_LIMIT"].split("/")[0])
    with checks.fresh_client(nginx) as client:
        missing = client.get("/data/dem.tif")
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/json"
        assert missing.json()["error"] == "missing_key"
        assert missing.headers.get_list("www-authenticate") == [
            'Bearer realm="apikm", Basic realm="apikm", charset="UTF-8"']
        for _ in range(limit):
            client.get("/data/dem.tif", headers={"X-API-Key": "apikm_" + "z" * 40})
        blocked = client.get("/data/dem.tif", headers={"X-API-Key": nginx.alice_key})
    assert blocked.status_code == 429
    assert blocked.headers["content-type"] == "application/json"  # not image/tiff
    assert blocked.json()["error"] == "RATE_LIMITED" and int(blocked.headers["retry-after"]) > 0
