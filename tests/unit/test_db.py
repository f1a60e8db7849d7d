"""SQLite transactions are real: BEGIN from SQLAlchemy, IMMEDIATE for read-then-write writers.

Runs on a real SQLite file. The driver's legacy mode (no BEGIN before a SELECT or a
SAVEPOINT) let a released savepoint commit on its own: a key row without its audit row.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.db import create_engine, sqlite_begin, write_transaction

T = sa.table("t", sa.column("n", sa.Integer))


def test_only_writers_begin_immediate() -> None:
    assert sqlite_begin({"apikm_writer": True}) == "BEGIN IMMEDIATE"
    assert sqlite_begin({}) == "BEGIN"
    assert sqlite_begin({"apikm_writer": False, "other": 1}) == "BEGIN"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    db = tmp_path / "t.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (n INTEGER)")
    return db


@pytest.fixture
async def engine(path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    yield engine
    await engine.dispose()


async def rows(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return list((await conn.scalars(sa.select(T.c.n).order_by(T.c.n))).all())


class Boom(Exception):
    pass


async def test_a_released_savepoint_rolls_back_with_its_transaction(engine: AsyncEngine) -> None:
    with pytest.raises(Boom):
        async with write_transaction(engine) as conn:
            async with conn.begin_nested():
                await conn.execute(sa.insert(T).values(n=1))
            raise Boom  # e.g. the audit insert failed, or the process died here
    assert await rows(engine) == []
    with pytest.raises(Boom):
        async with engine.begin() as conn:  # plain transactions too
            await conn.execute(sa.select(T.c.n))
            async with conn.begin_nested():
                await conn.execute(sa.insert(T).values(n=2))
            raise Boom
    assert await rows(engine) == []


async def test_a_writer_holds_the_write_lock_from_its_first_statement(
        engine: AsyncEngine, path: Path) -> None:
    other_process = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    try:
        async with write_transaction(engine) as conn:
            await conn.execute(sa.select(sa.func.count()).select_from(T))  # only read so far
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other_process.execute("BEGIN IMMEDIATE")
        other_process.execute("BEGIN IMMEDIATE")  # free again after the commit
        other_process.execute("ROLLBACK")
    finally:
        other_process.close()


async def test_readers_take_no_write_lock_and_see_one_snapshot(
        engine: AsyncEngine, path: Path) -> None:
    other_process = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    try:
        async with engine.connect() as reader:
            assert (await reader.scalar(sa.select(sa.func.count()).select_from(T))) == 0
            other_process.execute("BEGIN IMMEDIATE")  # a reader does not stand in the way
            other_process.execute("INSERT INTO t VALUES (7)")
            other_process.execute("COMMIT")
            # repeatable: the reader's transaction keeps its snapshot
            assert (await reader.scalar(sa.select(sa.func.count()).select_from(T))) == 0
        assert await rows(engine) == [7]
    finally:
        other_process.close()


async def test_read_then_write_transactions_serialise(engine: AsyncEngine) -> None:
    async def increment() -> None:
        async with write_transaction(engine) as conn:
            n = await conn.scalar(sa.select(sa.func.coalesce(sa.func.max(T.c.n), 0)))
            await asyncio.sleep(0)  # let the others run in between
            await conn.execute(sa.insert(T).values(n=int(n or 0) + 1))

    await asyncio.gather(*(increment() for _ in range(50)))
    assert await rows(engine) == list(range(1, 51))
