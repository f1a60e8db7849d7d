"""The key store on a real SQLite database: concurrent misses for one key share one query, a
busy key is re-read in the background before its entry expires (so its users never wait for
the database), a lookup that started before a change is never shared after it, and a read on
the spot (on the event loop) never waits for a lock."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.db import create_engine, create_sqlite_reader
from apikm.identity.tables import owners
from apikm.keys.tables import api_keys
from apikm.migrations import upgrade
from apikm.verify.metrics import STATS
from apikm.verify.record import KeyRecord
from apikm.verify.sqlite_lookup import SqliteLookup
from apikm.verify.store import NOT_NOW, KeyStore

pytestmark = pytest.mark.integration
HASH = "h" * 64


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'apikm.db'}"
    upgrade(url)
    return url


@pytest.fixture
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    made = create_engine(database)
    now = datetime.now(UTC)
    async with made.begin() as conn:
        await conn.execute(sa.insert(owners).values(
            user_id="u1", username="alice", email=None, roles=["analyst"], groups=[],
            enabled=True, synced_at=now, source="sync"))
        await conn.execute(sa.insert(api_keys).values(
            id=str(uuid.uuid4()), owner_id="u1", name="k", description="", roles=["analyst"],
            allowed_networks=[], meta={}, rate_limit=None, secret_hash=HASH, pepper_id="p1",
            status="active", expires_at=now + timedelta(days=1), created_at=now,
            created_by="u1", updated_at=now, use_count=0, public_id="AbCd1234"))
    yield made
    await made.dispose()


def database_lookups() -> int:
    return STATS.lookups["database"]


async def test_concurrent_misses_for_one_key_share_one_query(engine: AsyncEngine) -> None:
    store = KeyStore(engine, ttl_seconds=5)
    before = database_lookups()
    answers = await asyncio.gather(*(store.find([HASH]) for _ in range(50)))
    assert database_lookups() - before == 1
    assert all(found is not None and found[0] == HASH for found in answers)
    assert store.cached(HASH) is not None


async def test_a_busy_key_is_refreshed_before_it_expires(engine: AsyncEngine) -> None:
    store = KeyStore(engine, ttl_seconds=0.4)
    assert await store.find([HASH]) is not None
    await asyncio.sleep(0.34)  # past REFRESH_AT of its lifetime
    before = database_lookups()
    assert store.cached(HASH) is not None  # answers at once, and starts a refresh
    assert store.cached(HASH) is not None  # ... only one
    await asyncio.sleep(0.05)
    assert database_lookups() - before == 1
    await asyncio.sleep(0.2)  # 0.59 s after the first read: alive thanks to the refresh
    assert store.cached(HASH) is not None


async def test_a_refresh_that_finds_the_key_gone_drops_it(engine: AsyncEngine) -> None:
    store = KeyStore(engine, ttl_seconds=0.4)
    assert await store.find([HASH]) is not None
    async with engine.begin() as conn:  # gone without an event (say, deleted by hand)
        await conn.execute(sa.delete(api_keys))
    await asyncio.sleep(0.34)
    assert store.cached(HASH) is not None  # still within its lifetime; refresh started
    await asyncio.sleep(0.05)
    assert store.cached(HASH) is None


async def test_a_lookup_started_before_a_change_is_not_shared_after_it(
        engine: AsyncEngine) -> None:
    store = KeyStore(engine, ttl_seconds=5)
    before = database_lookups()
    first = asyncio.ensure_future(store.find([HASH]))
    await asyncio.sleep(0)  # its query is under way
    store.forget_key("any")  # a change (an event) arrives meanwhile
    second = await store.find([HASH])
    await first
    assert database_lookups() - before == 2  # the second read the database again
    assert second is not None


# --- reads on the spot (SQLite) -----------------------------------------------------------
@pytest.fixture
def reader(database: str) -> Iterator[sa.Engine]:
    made = create_sqlite_reader(database)
    assert made is not None
    yield made
    made.dispose()


async def test_a_miss_is_read_on_the_spot_and_cached(engine: AsyncEngine,
                                                     reader: sa.Engine) -> None:
    store = KeyStore(engine, ttl_seconds=5, reader=reader)
    before = database_lookups()
    found = store.find_now([HASH])
    assert found is not NOT_NOW and found is not None
    assert found[0] == HASH and isinstance(found[1], KeyRecord) and found[1].username == "alice"
    assert store.cached(HASH) is found[1]
    assert database_lookups() - before == 1
    store.close()


async def test_a_miss_without_a_live_key_is_read_once_for_both_ways(
        engine: AsyncEngine, reader: sa.Engine) -> None:
    """The gateway protocol reads on the spot, then hands a refusal to the ASGI way, which
    asks again: one read for both; a later request reads again, and nothing is cached."""
    store = KeyStore(engine, ttl_seconds=5, reader=reader)
    before = database_lookups()
    assert store.find_now(["u" * 64]) is None
    assert store.find_now(["u" * 64]) is None
    assert database_lookups() - before == 1
    assert store.find_now(["u" * 64]) is None
    assert database_lookups() - before == 2
    assert len(store) == 0
    store.close()


async def test_a_read_on_the_spot_never_waits_and_hands_failures_to_the_threaded_way(
        engine: AsyncEngine, reader: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's connection never waits for a lock (busy timeout 0, so SQLite answers
    "database is locked" at once); such a refusal, or any failed read, is NOT_NOW, and the
    threaded way (which may wait) answers."""
    store = KeyStore(engine, ttl_seconds=5, reader=reader)
    try:
        on_loop = store._loop_db
        with reader.connect() as probe:  # the pool's connections wait up to 30 s ...
            assert probe.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert on_loop.execute("PRAGMA busy_timeout").fetchone() == (0,)  # ... the loop's not
        read = SqliteLookup.first_on

        def locked(lookup: SqliteLookup, connection: object, hashes: list[str]) -> object:
            if connection is on_loop:
                raise sqlite3.OperationalError("database is locked")
            return read(lookup, connection, hashes)

        monkeypatch.setattr(SqliteLookup, "first_on", locked)
        assert store.find_now([HASH]) is NOT_NOW
        found = await store.find([HASH])  # threads use SqliteLookup.first's own connection
        assert found is not None and found[0] == HASH
    finally:
        store.close()
