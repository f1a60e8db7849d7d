"""Runs the real ``apikm serve`` in a subprocess, as an operator would."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from apikm.encryption import new_key_spec
from tests.support.ports import free_port, wait_http

# One for every server of a test run, as an operator gives all replicas the same key: servers
# sharing a database read each other's signing keys. Tests of mismatched keys pass their own.
ENCRYPTION_KEY = new_key_spec("t1")


@dataclass(frozen=True)
class ApikmServer:
    url: str
    database_url: str
    data_dir: Path
    log_file: Path
    env: dict[str, str]
    pid: int

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the server and its workers, as a crashed node would go."""
        os.killpg(self.pid, signal.SIGKILL)


@contextmanager
def apikm_server(database_url: str | None, keycloak_url: str, realm: str = "demo",
                 **settings: str) -> Iterator[ApikmServer]:
    data_dir = Path(tempfile.mkdtemp(prefix="apikm-test-"))
    port = free_port()
    db_url = database_url or f"sqlite+aiosqlite:///{data_dir / 'apikm.db'}"
    env = {
        **os.environ,
        "APIKM_HOST": "127.0.0.1",
        "APIKM_PORT": str(port),
        "APIKM_DATA_DIR": str(data_dir),
        "APIKM_DATABASE_URL": db_url,
        "APIKM_KEYCLOAK_URL": keycloak_url,
        "APIKM_KEYCLOAK_REALM": realm,
        "APIKM_PEPPERS": f"t1:{secrets.token_urlsafe(24)}",
        "APIKM_ENCRYPTION_KEY": ENCRYPTION_KEY,  # required with PostgreSQL
        "APIKM_USAGE_FLUSH_SECONDS": "0.5",
        "APIKM_LOG_LEVEL": "DEBUG",
        **{f"APIKM_{k.upper()}": v for k, v in settings.items()},
    }
    log_file = data_dir / "apikm.log"
    with log_file.open("wb") as log:
        # Its own process group: the server's workers go with it, whatever happens.
        process = subprocess.Popen([sys.executable, "-m", "apikm.cli", "serve"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = ApikmServer(f"http://127.0.0.1:{port}", db_url, data_dir, log_file, env,
                         process.pid)
    try:
        wait_http(f"{server.url}/healthz", timeout=60, alive=process.poll,
                  log=server.log_text)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        with contextlib.suppress(ProcessLookupError):  # no worker may outlive the test
            os.killpg(process.pid, signal.SIGKILL)
