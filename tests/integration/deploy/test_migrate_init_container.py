"""What the chart's migration init container relies on: pods starting together may each run
`apikm migrate` on the same empty PostgreSQL at once. Whichever loses a race fails and rolls
back (one transaction, transactional DDL); Kubernetes re-runs it, and it then finds the
schema current. Here: four at once, failed ones re-run like kubelet would, until all pass."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from apikm.migrations import alembic_config
from tests.support.postgres import postgres_server

pytestmark = pytest.mark.integration

APIKM = str(Path(sys.executable).with_name("apikm"))
PODS = 4
RESTARTS = 5


async def schema_revision(url: str) -> tuple[list[str], int]:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        versions = [row[0] for row in await connection.fetch(
            "SELECT version_num FROM alembic_version")]
        tables = await connection.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        return versions, tables
    finally:
        await connection.close()


def test_pods_migrating_at_once_end_on_the_head_revision(tmp_path: Path) -> None:
    with postgres_server() as url:
        env = {**os.environ, "APIKM_DATABASE_URL": url, "APIKM_DATA_DIR": str(tmp_path)}
        pending = list(range(PODS))
        failures = 0
        for _ in range(RESTARTS):
            runs = {pod: subprocess.Popen([APIKM, "migrate"], env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    for pod in pending}
            pending = []
            for pod, process in runs.items():
                _out, err = process.communicate(timeout=120)
                if process.returncode != 0:
                    failures += 1
                    pending.append(pod)
                    # A lost race, not a broken migration.
                    assert any(sign in err for sign in (
                        "IntegrityError", "already exists", "expected to match one row",
                        "deadlock detected")), err
            if not pending:
                break
        assert not pending, f"pods {pending} still fail after {RESTARTS} runs"

        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        versions, tables = asyncio.run(schema_revision(url))
        assert versions == [head]
        assert tables > 1
        again = subprocess.run([APIKM, "migrate"], env=env, capture_output=True, text=True,
                               check=False, timeout=120)
        assert again.returncode == 0 and "database is up to date" in again.stdout
        print(f"{failures} lost race(s) among {PODS} concurrent migrations")
