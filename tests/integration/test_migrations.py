"""The Alembic migrations build exactly the tables the code declares, on both databases."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import apikm.alerts.tables
import apikm.cluster.tables
import apikm.identity.tables
import apikm.keys.tables
import apikm.notify.tables
import apikm.tokens.tables
import apikm.verify.tables
from apikm.db import create_engine, metadata
from apikm.migrations import upgrade

pytestmark = pytest.mark.integration
_ = (apikm.alerts.tables, apikm.cluster.tables, apikm.identity.tables, apikm.notify.tables,
     apikm.tokens.tables, apikm.verify.tables)


def differences(url: str) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_engine(url)
        async with engine.connect() as conn:
            def compare(sync_conn: sa.Connection) -> list[Any]:
                context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                return list(compare_metadata(context, metadata))
            found = await conn.run_sync(compare)
        await engine.dispose()
        return found

    return asyncio.run(run())


def test_sqlite_schema_matches_the_code() -> None:
    url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'm.db'}"
    upgrade(url)
    assert differences(url) == []


def test_postgresql_schema_matches_the_code(postgres_url: str) -> None:
    # The session's PostgreSQL database is migrated by the apikm fixture or here; both
    # leave it at head, and upgrading again is a no-op.
    upgrade(postgres_url)
    assert differences(postgres_url) == []
