"""A throwaway PostgreSQL cluster from Debian's server binaries, on loopback, for the tests.

``APIKM_TEST_POSTGRES_URL`` points the tests at an existing server instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.ports import free_port


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")
    return Path(found[-1]).parent


def _as_postgres(args: list[str]) -> list[str]:
    # initdb refuses to run as root; CI runs as root, so drop to the postgres account.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields an asyncpg URL of a fresh, empty database; removes the cluster afterwards."""
    existing = os.environ.get("APIKM_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
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
    subprocess.run(_as_postgres([
        str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start",
        "-o", f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off",
    ]), **run)  # type: ignore[call-overload]
    try:
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                        "-U", "apikm", "apikm"], **run)  # type: ignore[call-overload]
        yield f"postgresql+asyncpg://apikm@127.0.0.1:{port}/apikm"
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast",
                                     "stop"]), check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def new_database(base_url: str, prefix: str = "t") -> str:
    """A fresh empty database on the server of ``base_url`` (an asyncpg URL); its URL."""
    import asyncio
    import secrets

    import asyncpg  # type: ignore[import-untyped]

    name = f"{prefix}_{secrets.token_hex(4)}"

    async def run() -> None:
        conn = await asyncpg.connect(base_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(run())
    return f"{base_url.rsplit('/', 1)[0]}/{name}"
