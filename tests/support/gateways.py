"""Debian's nginx and Caddy, run as our own processes with the configs from ``deploy/``.

The operator-facing files use example addresses (apikm on 127.0.0.1:8000, the service on
127.0.0.1:8090, files under /srv, the gateway on 8088
(nginx) and 8081 (Caddy)); the tests swap in their own, so what is tested is the very block an
operator copies.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from apikm.devstack.gateway import make_geotiff
from tests.support.ports import free_port, wait_http

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@dataclass(frozen=True)
class Gateway:
    url: str
    srv: Path  # files under srv/data/ are served at /data/
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _world_readable_tree() -> Path:
    # nginx workers started by root run as an unprivileged user: let them read the files.
    root = Path(tempfile.mkdtemp(prefix="apikm-gw-"))
    root.chmod(0o755)
    (root / "data").mkdir(mode=0o755)
    make_geotiff(root / "data" / "dem.tif")
    (root / "data" / "dem.tif").chmod(0o644)
    return root


def _host_port(url: str) -> str:
    return urlsplit(url).netloc


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def _wait_gateway(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    wait_http(f"{url}/__ready", timeout=30, ok=(200, 401, 404),
              alive=process.poll, log=lambda: log.read_text(errors="replace"))


@contextmanager
def _running(process: subprocess.Popen[bytes], port: int, log: Path, work: Path,
             srv: Path) -> Iterator[Gateway]:
    """Wait for a started gateway, hand it out, then stop it and remove its files."""
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_gateway(url, process, log)
        yield Gateway(url, srv, log)
    finally:
        _stop(process)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(srv, ignore_errors=True)


@contextmanager
def nginx_gateway(apikm_url: str, upstream_url: str, extra: str = "", http_extra: str = "",
                  site_file: str = "apikm.conf") -> Iterator[Gateway]:
    """nginx with ``deploy/nginx/<site_file>``; ``extra`` is added to its server block and
    ``http_extra`` before it (http level), with ``{srv}`` standing for the served tree."""
    srv = _world_readable_tree()
    work = Path(tempfile.mkdtemp(prefix="apikm-nginx-"))
    port = free_port()
    site = (DEPLOY / "nginx" / site_file).read_text()
    site = (site.replace("127.0.0.1:8000", _host_port(apikm_url))
                .replace("127.0.0.1:8090", _host_port(upstream_url))
                .replace("listen 8088;", f"listen 127.0.0.1:{port};")
                .replace("root /srv;", f"root {srv};")
                .replace("/var/cache/nginx/apikm", f"{work}/cache"))
    if extra:
        end = site.rindex("}")
        site = site[:end] + extra.replace("{srv}", str(srv)) + "\n" + site[end:]
    site = http_extra.replace("{srv}", str(srv)) + "\n" + site
    (work / "apikm.conf").write_text(site)
    temp = "\n".join(f"    {kind}_temp_path {work}/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (work / "nginx.conf").write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {work}/access.log;
    include /etc/nginx/mime.types;        # as Debian's nginx.conf does
    default_type application/octet-stream;
{temp}
    include {work}/apikm.conf;
}}
""")
    log = work / "error.log"
    process = subprocess.Popen(["nginx", "-c", str(work / "nginx.conf"), "-p", str(work),
                                "-e", str(log)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    with _running(process, port, log, work, srv) as gateway:
        yield gateway


@contextmanager
def caddy_gateway(apikm_url: str, upstream_url: str) -> Iterator[Gateway]:
    srv = _world_readable_tree()
    work = Path(tempfile.mkdtemp(prefix="apikm-caddy-"))
    port = free_port()
    config = (DEPLOY / "caddy" / "Caddyfile").read_text()
    config = (config.replace("127.0.0.1:8000", _host_port(apikm_url))
                    .replace("127.0.0.1:8090", _host_port(upstream_url))
                    .replace(":8081 {", f"http://127.0.0.1:{port} {{")
                    .replace("root * /srv", f"root * {srv}"))
    global_options = "{\n\tadmin off\n\tauto_https off\n}\n"
    (work / "Caddyfile").write_text(global_options + config)
    log = work / "caddy.log"
    env = {**os.environ, "HOME": str(work), "XDG_DATA_HOME": str(work / "data"),
           "XDG_CONFIG_HOME": str(work / "config")}
    with log.open("wb") as output:
        process = subprocess.Popen(["caddy", "run", "--config", str(work / "Caddyfile"),
                                    "--adapter", "caddyfile"], env=env, cwd=work,
                                   stdout=output, stderr=subprocess.STDOUT)
    with _running(process, port, log, work, srv) as gateway:
        yield gateway


def client_from(address: str, base_url: str) -> httpx.Client:
    """An HTTP client whose connections come from ``address`` (any of 127.0.0.0/8).

    Gateways see distinct client addresses per test, so apikm's per-address failure counting
    keeps tests apart.
    """
    return httpx.Client(base_url=base_url, timeout=30,
                        transport=httpx.HTTPTransport(local_address=address))
