"""Fetch, verify, start and stop a real Keycloak with the demo realm, for dev and tests.

Everything lives under the apikm cache (``~/.cache/apikm`` or ``APIKM_CACHE_DIR``): the
downloaded distribution, its extracted tree (whose ``data/`` holds the dev database), the log
and a small JSON state file. The state file, not the calling process, owns the server, so
``down()`` works from any process and ``up()`` reuses an instance another process started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx

from apikm.devstack.java import cache_dir, find_java_home

KEYCLOAK_VERSION = "26.7.3"
# SHA-256 of keycloak-quarkus-dist-26.7.3.tar.gz. Maven only checks its own SHA-1 sidecar
# files, so we pin the artifact's digest ourselves before unpacking anything.
KEYCLOAK_DIST_SHA256 = "77657f30b7e90d70f727712ce1c967f430fd6a5e9f458d32d8c6df0635345f47"
KEYCLOAK_ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:tar.gz"
DEMO_REALM = "demo"
ADMIN_USERNAME = "kcadmin"
ADMIN_PASSWORD = "kcadmin"  # noqa: S105 - dev-only bootstrap admin, bound to loopback
# RFC 7523 JWT Authorization Grant: apikm's exchange flow uses it to obtain genuine Keycloak
# tokens for key owners. A preview feature in 26.5/26.6, on by default in 26.7; named here
# so the dependency is explicit and survives a version change.
FEATURES = ("jwt-authorization-grant",)
HOST = "127.0.0.1"
_STOP_GRACE_S = 30.0


class DevstackError(RuntimeError):
    """The dev Keycloak could not be prepared, started or stopped."""


class ChecksumError(DevstackError):
    """A downloaded file does not have the pinned SHA-256."""


@dataclass(frozen=True)
class StackInfo:
    base_url: str
    realm: str
    issuer: str
    admin_username: str
    admin_password: str
    pid: int | None
    log_file: Path


@dataclass(frozen=True)
class _Paths:
    cache: Path
    tarball: Path
    dist: Path
    log: Path
    state: Path
    lock: Path


def _paths() -> _Paths:
    cache = cache_dir()
    return _Paths(
        cache=cache,
        tarball=cache / "dl" / f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.tar.gz",
        dist=cache / f"keycloak-{KEYCLOAK_VERSION}",
        log=cache / "keycloak.log",
        state=cache / "keycloak.pid",
        lock=cache / "keycloak.lock",
    )


# --- download, verify, extract ---------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise ChecksumError unless ``path`` has SHA-256 ``expected``."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"{path}: SHA-256 {actual} does not match the pinned {expected}; refusing to use "
            "it. Delete the file to download it again."
        )


def _download(tarball: Path) -> None:
    """Fetch the distribution with Maven (the ordinary client for that repository)."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("mvn") is None:
        raise DevstackError("Maven (mvn) is needed to download Keycloak; install it first")
    # Download next to the target and rename, so an interrupted run leaves no partial file
    # under the final name.
    with tempfile.TemporaryDirectory(dir=tarball.parent) as tmp:
        cmd = [
            "mvn",
            "-q",
            "-B",
            "dependency:copy",
            f"-Dartifact={KEYCLOAK_ARTIFACT}",
            f"-DoutputDirectory={tmp}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        fetched = Path(tmp) / tarball.name
        if done.returncode != 0 or not fetched.is_file():
            raise DevstackError(
                f"mvn could not fetch {KEYCLOAK_ARTIFACT}:\n{done.stdout}{done.stderr}"
            )
        fetched.replace(tarball)


def _extract(tarball: Path, dist: Path) -> None:
    """Unpack into a temporary sibling and rename, so a half-extracted tree is never used."""
    with tempfile.TemporaryDirectory(dir=dist.parent) as tmp, tarfile.open(tarball) as tar:
        # The "data" filter rejects absolute paths, links out of the tree and device files.
        tar.extractall(tmp, filter="data")
        (Path(tmp) / dist.name).rename(dist)


def ensure_dist() -> Path:
    """Return the extracted Keycloak tree, downloading and verifying it when needed."""
    p = _paths()
    if (p.dist / "bin" / "kc.sh").is_file():
        return p.dist
    if not p.tarball.is_file():
        _download(p.tarball)
    verify_sha256(p.tarball, KEYCLOAK_DIST_SHA256)
    _extract(p.tarball, p.dist)
    return p.dist


def _install_realm(dist: Path) -> None:
    """Put the demo realm where --import-realm looks for it.

    Import skips realms that already exist, so when the realm file changed since the last
    start we drop the dev database; otherwise edits to demo-realm.json would be ignored.
    """
    source = resources.files("apikm.devstack").joinpath("demo-realm.json").read_bytes()
    target = dist / "data" / "import" / "demo-realm.json"
    if target.is_file() and target.read_bytes() == source:
        return
    shutil.rmtree(dist / "data" / "h2", ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source)


# --- process bookkeeping ---------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    pid: int
    port: int
    management_port: int


def _read_state(p: _Paths) -> _State | None:
    try:
        raw = json.loads(p.state.read_text())
        return _State(int(raw["pid"]), int(raw["port"]), int(raw["management_port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(p: _Paths, state: _State) -> None:
    tmp = p.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(state)))
    tmp.replace(p.state)


def _alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (containers may lack a reaping init)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        # Field 3 is the state; the command name before it may contain spaces.
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _is_ours(pid: int, dist: Path) -> bool:
    """Guard against a recycled pid: the process must be kc.sh from our extracted tree."""
    if not _alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    with contextlib.suppress(OSError):
        return str(dist) in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return True  # no /proc (e.g. macOS): trust the state file


@contextlib.contextmanager
def _locked(p: _Paths) -> Iterator[None]:
    """Serialise up()/down() across processes (parallel test workers, CLI)."""
    p.cache.mkdir(parents=True, exist_ok=True)
    with p.lock.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _info(p: _Paths, port: int, pid: int | None) -> StackInfo:
    base_url = f"http://{HOST}:{port}"
    return StackInfo(
        base_url=base_url,
        realm=DEMO_REALM,
        issuer=f"{base_url}/realms/{DEMO_REALM}",
        admin_username=ADMIN_USERNAME,
        admin_password=ADMIN_PASSWORD,
        pid=pid,
        log_file=p.log,
    )


# --- readiness -------------------------------------------------------------------------


def _ready(info: StackInfo, management_port: int) -> bool:
    """Management health says ready and the demo realm answers discovery."""
    # trust_env=False: a proxy from the environment must never see loopback traffic.
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        try:
            health = client.get(f"http://{HOST}:{management_port}/health/ready")
            if health.status_code != 200:
                return False
            discovery = client.get(f"{info.issuer}/.well-known/openid-configuration")
        except httpx.HTTPError:
            return False
    return discovery.status_code == 200


def _log_tail(log: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _wait_ready(info: StackInfo, management_port: int, deadline: float) -> None:
    assert info.pid is not None
    while time.monotonic() < deadline:
        if not _alive(info.pid):
            raise DevstackError(f"Keycloak exited during startup:\n{_log_tail(info.log_file)}")
        if _ready(info, management_port):
            return
        time.sleep(0.5)
    raise DevstackError(
        f"Keycloak (pid {info.pid}) not ready in time; it is left running, see {info.log_file}"
    )


# --- start / stop ----------------------------------------------------------------------


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise DevstackError(f"{HOST}:{port} is already in use by another program") from exc


def _server_args(port: int, management_port: int) -> list[str]:
    return [
        "start-dev",
        "--import-realm",
        f"--http-host={HOST}",
        f"--http-port={port}",
        f"--http-management-host={HOST}",
        f"--http-management-port={management_port}",
        "--health-enabled=true",
        # A fixed hostname pins the issuer: tokens fetched via "localhost" or "127.0.0.1"
        # must carry the same `iss`, or apikm's issuer check would reject half of them.
        f"--hostname=http://{HOST}:{port}",
        f"--features={','.join(FEATURES)}",
    ]


def _server_env(java_home: Path) -> dict[str, str]:
    # Drop inherited Keycloak settings (KC_DB, KC_HOSTNAME, ...) so the dev stack is the
    # same on every machine.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KC_", "KEYCLOAK_"))}
    env.update(
        JAVA_HOME=str(java_home),
        KC_BOOTSTRAP_ADMIN_USERNAME=ADMIN_USERNAME,
        KC_BOOTSTRAP_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    return env


# Started through a throw-away Python process: Keycloak then is not our child, so it is
# reparented (no zombie if it dies while we live, no "still running" warning when our Popen
# object is collected), and it sits in its own session so terminal signals to the caller
# do not reach it.
_TRAMPOLINE = """
import subprocess, sys
log = open(sys.argv[1], "ab")
proc = subprocess.Popen(sys.argv[3:], cwd=sys.argv[2], stdin=subprocess.DEVNULL,
                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
print(proc.pid)
"""


def _launch(p: _Paths, dist: Path, java_home: Path, port: int, management_port: int) -> int:
    if p.log.exists():
        p.log.replace(p.log.with_suffix(".log.1"))
    cmd = [str(dist / "bin" / "kc.sh"), *_server_args(port, management_port)]
    done = subprocess.run(
        [sys.executable, "-c", _TRAMPOLINE, str(p.log), str(dist), *cmd],
        env=_server_env(java_home),
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


def _stop(pid: int) -> None:
    """SIGTERM the process group (kc.sh and its java), then SIGKILL after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + _STOP_GRACE_S
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if not _alive(pid):
            return
    raise DevstackError(f"Keycloak (pid {pid}) survived SIGKILL")


def _running(p: _Paths) -> _State | None:
    state = _read_state(p)
    if state is None or not _is_ours(state.pid, p.dist):
        return None
    return state


def status() -> StackInfo | None:
    """The running instance if it is up and ready, else None."""
    p = _paths()
    state = _running(p)
    if state is None:
        return None
    info = _info(p, state.port, state.pid)
    return info if _ready(info, state.management_port) else None


def up(port: int = 8080, management_port: int = 9000, timeout: float = 300) -> StackInfo:
    """Start Keycloak with the demo realm, or reuse the instance already running.

    An instance on other ports is restarted on the requested ones. The server is detached:
    it outlives the caller and is stopped with ``down()``.
    """
    deadline = time.monotonic() + timeout
    p = _paths()
    with _locked(p):
        state = _running(p)
        if state is not None and (state.port, state.management_port) == (port, management_port):
            info = _info(p, port, state.pid)
            # It may still be starting (launched by another process that gave up waiting).
            _wait_ready(info, management_port, deadline)
            return info
        if state is not None:
            _stop(state.pid)
        _check_port_free(port)
        _check_port_free(management_port)
        java_home = find_java_home()
        dist = ensure_dist()
        _install_realm(dist)
        pid = _launch(p, dist, java_home, port, management_port)
        _write_state(p, _State(pid, port, management_port))
        info = _info(p, port, pid)
        _wait_ready(info, management_port, deadline)
        return info


def down() -> bool:
    """Stop the instance recorded in the state file. True if something was stopped."""
    p = _paths()
    with _locked(p):
        state = _running(p)
        if state is not None:
            _stop(state.pid)
        p.state.unlink(missing_ok=True)
        return state is not None
