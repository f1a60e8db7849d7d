"""The README's "Using a key" (scripts/using-a-key.sh) run as written, end to end: a token
from the real Keycloak, a key from apikm, a verification, and GDAL reading the demo's
GeoTIFF through the demo gateway (real nginx with deploy/nginx/apikm.conf), started by the
very code `apikm demo gateway` and scripts/dev.sh run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from apikm.devstack import gateway as demo
from apikm.devstack import keycloak as devstack
from tests.support.apikm_server import apikm_server
from tests.support.keycloak_tokens import access_token
from tests.support.keys import create_key, user_client
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "using-a-key.sh"


def test_the_readme_path_from_curl_to_gdal() -> None:
    keycloak = devstack.up()
    directory = Path(tempfile.mkdtemp(prefix="apikm-demo-"))
    with apikm_server(None, keycloak.base_url) as apikm:
        gateway = demo.start(apikm.url, free_port(), directory)
        try:
            env = {**os.environ, "APIKM": apikm.url, "KEYCLOAK": keycloak.base_url,
                   "GATEWAY": gateway.url}
            env.pop("APIKM_API_KEY", None)
            done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True,
                                  text=True, timeout=120, check=False)
            logs = gateway.log_text()
        finally:
            assert demo.stop(directory)
    assert done.returncode == 0, done.stdout + done.stderr + logs
    lines = done.stdout.splitlines()
    # Each JSON answer is a line of its own, so the shell prompt never sticks to it.
    created, verified = json.loads(lines[0]), json.loads(lines[1])
    assert sorted(created["roles"]) == ["analyst", "geoserver:read"]
    assert verified["valid"] is True and verified["user"]["username"] == "alice"
    assert verified["key_id"] == created["id"]
    assert "Driver: GTiff/GeoTIFF" in done.stdout
    assert "Size is 64, 48" in done.stdout
    assert '"GET /data/dem.tif HTTP/1.1" 206' in logs  # GDAL's range reads, through nginx
    assert created["key"] not in logs  # the key is in no nginx log (?apikey= included)


def test_the_demo_gateway_runs_the_shipped_files_with_local_addresses() -> None:
    site = (ROOT / "deploy" / "nginx" / "apikm.conf").read_text()
    rendered = demo.render_site(site, "http://127.0.0.1:8123", 8124, Path("/srv/demo"))
    assert "listen 127.0.0.1:8124;" in rendered and "server 127.0.0.1:8123;" in rendered
    assert "root /srv/demo;" in rendered
    # Shipped: clear of the dev stack (Keycloak on 8080, its management port 9000).
    assert "listen 8088;" in site and "server 127.0.0.1:8000;" in site
    assert ":8080" not in site and ":9000" not in site
    assert "include apikm.conf;" in (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()


def test_apikm_demo_gateway_starts_and_stops_nginx(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "APIKM_DATA_DIR": str(tmp_path / "var")}
    command = [sys.executable, "-m", "apikm.cli", "demo"]
    started = subprocess.run([*command, "gateway", "--port", str(port), "--apikm",
                              "http://127.0.0.1:9"], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"http://127.0.0.1:{port}/data/dem.tif" in started.stdout
        assert (tmp_path / "var" / "demo" / "srv" / "data" / "dem.tif").exists()
        # Up, in front of an apikm that is not there: a JSON refusal, never the file.
        answer = httpx.get(f"http://127.0.0.1:{port}/data/dem.tif", timeout=10)
        assert answer.status_code == 500 and answer.json()["error"] == "unavailable"
    finally:
        stopped = subprocess.run([*command, "down"], env=env, capture_output=True, text=True,
                                 timeout=60, check=False)
    assert stopped.stdout.strip() == "stopped"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=5)


def test_the_demo_gateway_writes_no_key_to_its_logs(tmp_path: Path) -> None:
    """nginx's error log quotes request lines: when apikm cannot be reached, and for a file
    that is not there (GDAL's side-car probes). Neither may write a key given as ?apikey=."""
    keycloak = devstack.up()
    with apikm_server(None, keycloak.base_url) as apikm:
        gateway = demo.start(apikm.url, free_port(), tmp_path)
        try:
            with user_client(apikm.url, access_token(keycloak.issuer, "alice")) as alice:
                key, _created = create_key(alice, ["analyst"])
            answers = [httpx.get(f"{gateway.url}{path}?apikey={key}", timeout=10).status_code
                       for path in ("/data/dem.tif", "/data/dem.tif.aux.xml",
                                    "/data/nope/x.ovr")]
            assert answers == [200, 404, 404]
        finally:
            demo.stop(tmp_path)
    down = demo.start("http://127.0.0.1:9", free_port(), tmp_path)  # apikm not there
    try:
        answer = httpx.get(f"{down.url}/data/dem.tif?apikey={key}", timeout=10)
        assert answer.status_code == 500 and answer.json()["error"] == "unavailable"
    finally:
        demo.stop(tmp_path)
    logs = down.log_text()
    assert '"GET /data/dem.tif HTTP/1.1" 500' in logs  # the access log, without the query
    assert key not in logs and "apikey=" not in logs


def test_a_stale_pid_file_never_stops_another_process(tmp_path: Path) -> None:
    """After a crash or a reboot the pid in var/demo/nginx/nginx.pid may be anyone's."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "nginx").mkdir()
        (tmp_path / "nginx" / "nginx.pid").write_text(f"{bystander.pid}\n")
        assert demo.stop(tmp_path) is False
        assert bystander.poll() is None  # still running
        gateway = demo.start("http://127.0.0.1:9", free_port(), tmp_path)  # stops first
        assert bystander.poll() is None
        assert demo.stop(tmp_path) is True and demo.stop(tmp_path) is False
        with pytest.raises(httpx.ConnectError):
            httpx.get(gateway.url, timeout=5)
    finally:
        bystander.kill()
        bystander.wait()


def test_demo_gateway_says_why_it_cannot_start(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    env = {**os.environ, "APIKM_DATA_DIR": str(blocked / "var")}
    started = subprocess.run([sys.executable, "-m", "apikm.cli", "demo", "gateway", "--port",
                              str(free_port())], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert started.returncode == 1
    assert "Traceback" not in started.stderr and "cannot prepare" in started.stderr
