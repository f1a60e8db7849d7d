"""The README's "Using a key" (scripts/using-a-key.sh) run as written, end to end: a token
from the real Keycloak, a key from apikm, a verification, and GDAL reading a GeoTIFF through
real nginx configured with deploy/nginx/apikm.conf."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from apikm.devstack import keycloak as devstack
from tests.support.apikm_server import apikm_server
from tests.support.echo import echo_server
from tests.support.gateways import nginx_gateway

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "using-a-key.sh"


def test_the_readme_path_from_curl_to_gdal() -> None:
    keycloak = devstack.up()
    with apikm_server(None, keycloak.base_url) as apikm, echo_server() as upstream, \
            nginx_gateway(apikm.url, upstream) as gateway:
        env = {**os.environ, "APIKM": apikm.url, "KEYCLOAK": keycloak.base_url,
               "GATEWAY": gateway.url}
        env.pop("APIKM_API_KEY", None)
        done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        # Each JSON answer is a line of its own, so the shell prompt never sticks to it.
        created, verified = json.loads(lines[0]), json.loads(lines[1])
        assert sorted(created["roles"]) == ["analyst", "geoserver:read"]
        assert verified["valid"] is True and verified["user"]["username"] == "alice"
        assert verified["key_id"] == created["id"]
        assert "Driver: GTiff/GeoTIFF" in done.stdout
        assert "Size is 64, 48" in done.stdout
        assert created["key"] not in gateway.log_text()  # the key is no part of nginx's log
