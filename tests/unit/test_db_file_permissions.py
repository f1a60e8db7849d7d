"""The SQLite file and its WAL/SHM companions are created private (0600), whatever the umask."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from apikm.db import create_engine


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_sqlite_files_are_created_private(tmp_path: Path, loose_umask: None) -> None:
    path = tmp_path / "data" / "apikm.db"

    async def run() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            made = sorted(p.name for p in path.parent.iterdir())
            assert made == ["apikm.db", "apikm.db-shm", "apikm.db-wal"]
            for file in path.parent.iterdir():
                assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        await engine.dispose()

    asyncio.run(run())
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_an_existing_database_file_is_left_as_it_is(tmp_path: Path, loose_umask: None) -> None:
    path = tmp_path / "apikm.db"
    path.touch(mode=0o640)

    async def run() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        await engine.dispose()

    asyncio.run(run())
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the operator's choice


def test_memory_databases_need_no_file() -> None:
    async def run() -> None:
        engine = create_engine("sqlite+aiosqlite://")
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT 1")) == 1
        await engine.dispose()

    asyncio.run(run())
