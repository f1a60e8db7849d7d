"""The demo gateway: Debian's nginx with ``deploy/nginx/apikm.conf`` in front of apikm and a
sample GeoTIFF, so a newcomer reads a raster through a real gateway in one step.

``start`` writes the shipped wrapper (``deploy/nginx/nginx.conf``) and ``apikm.conf`` to
``<directory>/nginx/`` with this machine's addresses (apikm, the gateway's port, the served
tree), makes ``<directory>/srv/data/dem.tif`` with GDAL, and starts nginx in the background
(its pid file there); ``stop`` ends it. ``apikm demo gateway`` and ``scripts/dev.sh`` use it,
and so does the test that runs the README's ``scripts/using-a-key.sh``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

DEMO_PORT = 8088
# The files as shipped: the gateway on 8088, apikm on 127.0.0.1:8000, files under /srv.
_SHIPPED = {"listen": "listen 8088;", "apikm": "server 127.0.0.1:8000;", "root": "root /srv;"}


class DemoError(RuntimeError):
    """The demo gateway could not be prepared, started or stopped."""


@dataclass(frozen=True)
class DemoGateway:
    url: str
    directory: Path

    @property
    def nginx_dir(self) -> Path:
        return self.directory / "nginx"

    def log_text(self) -> str:
        """nginx's error and access logs, for a look (or a test) at what they hold."""
        logs = (self.nginx_dir / name for name in ("error.log", "access.log"))
        return "".join(p.read_text(errors="replace") for p in logs if p.exists())


def shipped_configs() -> Path:
    """``deploy/nginx`` of this checkout (the demo runs from a clone), else of the
    working directory."""
    here = Path(__file__).resolve().parents[3] / "deploy" / "nginx"
    return here if (here / "apikm.conf").exists() else Path.cwd() / "deploy" / "nginx"


def make_geotiff(path: Path) -> None:
    """A small georeferenced single-band GeoTIFF (64 x 48, EPSG:4326), made by GDAL itself."""
    if shutil.which("gdal_create") is None:
        raise DemoError("gdal_create not found: install GDAL (Debian: gdal-bin)")
    path.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["gdal_create", "-q", "-of", "GTiff", "-outsize", "64", "48",
                           "-bands", "1", "-ot", "Byte", "-burn", "42", "-a_srs", "EPSG:4326",
                           "-a_ullr", "5", "48", "6", "47", str(path)],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise DemoError(f"gdal_create could not make {path}: {made.stderr.strip()}")


def render_site(shipped: str, apikm_url: str, port: int, srv: Path) -> str:
    """``apikm.conf`` with this machine's addresses; every shipped address must be there,
    so a changed file fails loudly instead of running with the wrong one."""
    missing = [text for text in _SHIPPED.values() if text not in shipped]
    if missing:
        raise DemoError(f"deploy/nginx/apikm.conf no longer holds {', '.join(missing)}")
    return (shipped.replace(_SHIPPED["listen"], f"listen 127.0.0.1:{port};")
                   .replace(_SHIPPED["apikm"], f"server {urlsplit(apikm_url).netloc};")
                   .replace(_SHIPPED["root"], f"root {srv};"))


def _prepare(directory: Path, apikm_url: str, port: int) -> Path:
    configs = shipped_configs()
    srv = directory / "srv"
    if not (srv / "data" / "dem.tif").exists():
        make_geotiff(srv / "data" / "dem.tif")
    nginx_dir = directory / "nginx"
    nginx_dir.mkdir(parents=True, exist_ok=True)
    site = render_site((configs / "apikm.conf").read_text(), apikm_url, port, srv.resolve())
    (nginx_dir / "apikm.conf").write_text(site)
    shutil.copyfile(configs / "nginx.conf", nginx_dir / "nginx.conf")
    return nginx_dir


def _pid(nginx_dir: Path) -> int | None:
    """The demo nginx's master, if it runs. A pid file left by a crash or a reboot may name
    a process that has nothing to do with nginx now: only a process started on this very
    configuration counts (nginx keeps its command line in its title)."""
    try:
        pid = int((nginx_dir / "nginx.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return None  # gone meanwhile (or no /proc: never signal what cannot be checked)
    return pid if "nginx" in command and str(nginx_dir / "nginx.conf") in command else None


def start(apikm_url: str = "http://127.0.0.1:8000", port: int = DEMO_PORT,
          directory: Path = Path("var/demo"), timeout: float = 20) -> DemoGateway:
    """Start (or restart, with these settings) nginx in front of ``apikm_url``."""
    if shutil.which("nginx") is None:
        raise DemoError("nginx not found: install it (Debian: nginx), or run scripts/dev.sh")
    directory = directory.resolve()
    stop(directory)
    try:
        nginx_dir = _prepare(directory, apikm_url, port)
    except OSError as exc:  # a data directory that cannot be written, say
        raise DemoError(f"cannot prepare {directory}: {exc.strerror or exc}") from None
    command = ["nginx", "-p", f"{nginx_dir}/", "-c", str(nginx_dir / "nginx.conf"),
               "-e", str(nginx_dir / "error.log")]
    if os.geteuid() == 0:  # workers would run as nobody, who cannot enter a private var/
        command += ["-g", "user root;"]
    started = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if started.returncode != 0:  # nginx daemonises: a zero exit means it is serving
        raise DemoError(f"nginx did not start: {started.stderr.strip()}")
    gateway = DemoGateway(f"http://127.0.0.1:{port}", directory)
    _wait(gateway.url, timeout)
    return gateway


def _wait(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"{url}/", timeout=2)
            return
        except httpx.HTTPError as exc:
            if time.monotonic() > deadline:
                raise DemoError(f"nginx does not answer on {url}: {exc}") from None
            time.sleep(0.1)


def stop(directory: Path = Path("var/demo"), timeout: float = 10) -> bool:
    """Stop the demo nginx of ``directory``; False if none was running."""
    nginx_dir = directory.resolve() / "nginx"
    pid = _pid(nginx_dir)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)  # nginx's fast shutdown; the workers go with the master
    deadline = time.monotonic() + timeout
    while _pid(nginx_dir) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid(nginx_dir) == pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return True
