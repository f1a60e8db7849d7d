"""A throwaway PostgreSQL cluster from Debian's server binaries, on loopback, for the tests.

``APIKM_TEST_POSTGRES_URL`` points the tests at an existing server instead.
"""

from __future__ import annotations

import asyncio
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from tests.support.ports import free_port


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")
    return Path(found[-1]).parent


def _as_postgres(args: list[str]) -> list[str]:
    # initdb refuses to run as root; CI runs as root, so drop to the postgres account.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass
class PostgresCluster:
    """A private cluster that a test may stop and start again (an outage, on demand)."""

    url: str
    data: Path
    log: Path
    options: str

    def stop(self) -> None:
        subprocess.run(_as_postgres([str(_bin_dir() / "pg_ctl"), "-D", str(self.data), "-m",
                                     "fast", "-w", "stop"]), check=True, capture_output=True)

    def start(self) -> None:
        subprocess.run(_as_postgres([str(_bin_dir() / "pg_ctl"), "-D", str(self.data), "-l",
                                     str(self.log), "-w", "start", "-o", self.options]),
                       check=True, capture_output=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields an asyncpg URL of a fresh, empty database; removes the cluster afterwards."""
    existing = os.environ.get("APIKM_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
    with postgres_cluster() as cluster:
        yield cluster.url


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A fresh cluster of its own (never ``APIKM_TEST_POSTGRES_URL``) with an empty database
    ``apikm``; removed afterwards."""
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="apikm-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()
    run = {"check": True, "capture_output": True}
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "apikm",
                                 "--auth=trust", "-E", "UTF8"]), **run)  # type: ignore[call-overload]
    cluster = PostgresCluster(f"postgresql+asyncpg://apikm@127.0.0.1:{port}/apikm", data,
                              root / "log", f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off")
    try:
        cluster.start()
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                        "-U", "apikm", "apikm"], **run)  # type: ignore[call-overload]
        yield cluster
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast",
                                     "stop"]), check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(url: str) -> str:
    """A new, empty database on the server of ``url`` (an asyncpg URL); returns its URL.

    For tests that count rows: nothing another test wrote is in it.
    """
    server = make_url(url)
    name = f"apikm_{secrets.token_hex(6)}"

    async def create() -> None:
        dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return server.set(database=name).render_as_string(hide_password=False)
