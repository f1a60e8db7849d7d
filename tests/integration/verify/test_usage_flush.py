"""The usage flush on a real database: one key whose values the database refuses must not
hold back anyone else's counts, and no count is lost or written twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.db import create_engine
from apikm.keys.tables import api_keys, key_usage_daily
from apikm.migrations import upgrade
from apikm.verify.usage import UsageRecorder

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh database at the schema's head."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'usage.db'}"
    else:
        base: str = request.getfixturevalue("postgres_url")
        name = f"usage_{secrets.token_hex(4)}"

        async def create() -> None:
            conn = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://"))
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        url = f"{base.rsplit('/', 1)[0]}/{name}"
    upgrade(url)
    return url


def _key_row(key_id: str) -> dict[str, object]:
    now = dt.datetime.now(dt.UTC)
    return {"id": key_id, "public_id": secrets.token_hex(4), "owner_id": "owner",
            "name": "k", "roles": [], "allowed_networks": [], "meta": {},
            "secret_hash": secrets.token_hex(32), "pepper_id": "p", "created_at": now,
            "created_by": "owner", "updated_at": now,
            "expires_at": now + dt.timedelta(days=1)}


async def stored_usage(engine: AsyncEngine) -> tuple[dict[str, Any], dict[str, int]]:
    """Each key's row (use count, last use and address) and its daily counts summed."""
    async with engine.connect() as conn:
        rows = {r.id: r for r in await conn.execute(
            sa.select(api_keys.c.id, api_keys.c.use_count, api_keys.c.last_used_ip,
                      api_keys.c.last_used_at))}
        daily = dict((await conn.execute(sa.select(
            key_usage_daily.c.key_id, sa.func.sum(key_usage_daily.c.count))
            .group_by(key_usage_daily.c.key_id))).all())
    return rows, daily


def test_a_refused_value_holds_back_no_other_key(database_url: str) -> None:
    async def scenario() -> None:
        engine = create_engine(database_url)
        good, zoned, other = (str(uuid.uuid4()) for _ in range(3))
        gone = str(uuid.uuid4())  # counted, then deleted before the flush
        async with engine.begin() as conn:
            await conn.execute(sa.insert(api_keys), [_key_row(k) for k in (good, zoned, other)])
        usage = UsageRecorder(engine, interval=3600)
        now = time.time()
        for n in range(3):
            usage.record(good, now + n, "198.51.100.1")
            usage.record(zoned, now + n, "fe80::1%" + "eth" * 30)  # longer than the column
            usage.record(gone, now + n, "198.51.100.2")
            usage.record(other, now + n, "not an address at all, and far too long " * 3)
        await usage.flush()
        # a second round must add exactly its own counts
        usage.record(good, now + 10, "2001:db8::1")
        usage.record(zoned, now + 10, "198.51.100.3")
        await usage.flush()
        assert await usage.flush() == 0  # nothing kept back to be written again

        rows, daily = await stored_usage(engine)
        await engine.dispose()
        assert rows[good].use_count == 4 and rows[good].last_used_ip == "2001:db8::1"
        assert rows[zoned].use_count == 4 and rows[zoned].last_used_ip == "198.51.100.3"
        assert rows[other].use_count == 3 and rows[other].last_used_ip is None
        assert rows[other].last_used_at is not None
        assert daily == {good: 4, zoned: 4, other: 3}

    asyncio.run(scenario())


def test_one_key_refused_by_the_database_is_dropped_alone(database_url: str) -> None:
    """A key deleted before its counts were written: its daily row breaks the foreign key.
    The batch is retried key by key; the others' counts are written once."""
    async def scenario() -> None:
        engine = create_engine(database_url)
        keys = [str(uuid.uuid4()) for _ in range(3)]
        async with engine.begin() as conn:
            await conn.execute(sa.insert(api_keys), [_key_row(k) for k in keys])
        usage = UsageRecorder(engine, interval=3600)
        gone = str(uuid.uuid4())
        now = time.time()
        for key_id in [*keys, gone, *keys]:
            usage.record(key_id, now, "198.51.100.9")
        await usage.flush()
        assert await usage.flush() == 0
        async with engine.connect() as conn:
            counts = dict((await conn.execute(sa.select(api_keys.c.id, api_keys.c.use_count)))
                          .all())
            daily = dict((await conn.execute(sa.select(key_usage_daily.c.key_id,
                                                       key_usage_daily.c.count))).all())
        await engine.dispose()
        assert counts == dict.fromkeys(keys, 2)
        assert daily == dict.fromkeys(keys, 2)

    asyncio.run(scenario())


def test_a_database_that_cannot_be_reached_keeps_every_count() -> None:
    url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'usage.db'}"
    upgrade(url)

    async def scenario() -> None:
        engine = create_engine(url)
        key_id = str(uuid.uuid4())
        async with engine.begin() as conn:
            await conn.execute(sa.insert(api_keys), [_key_row(key_id)])
        down = create_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")
        usage = UsageRecorder(down, interval=3600)
        usage.record(key_id, time.time(), "198.51.100.1")
        usage.record(key_id, time.time(), "198.51.100.1")
        with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
            await usage.flush()
        usage._engine = engine  # the database is back
        assert await usage.flush() == 1
        async with engine.connect() as conn:
            count = await conn.scalar(sa.select(api_keys.c.use_count))
        await engine.dispose()
        await down.dispose()
        assert count == 2

    asyncio.run(scenario())


def test_a_flush_of_many_keys_writes_each_count_once(database_url: str) -> None:
    """12,000 keys in one flush: more than a multi-row VALUES of the daily counts could bind
    on PostgreSQL (32,767 parameters; it failed there before). Every count lands once, and a
    replica flushing an older last use after a newer one moves nothing back."""
    async def scenario() -> None:
        engine = create_engine(database_url)
        ids = [str(uuid.uuid4()) for _ in range(12_000)]
        async with engine.begin() as conn:
            await conn.execute(sa.insert(api_keys), [_key_row(k) for k in ids])
        newer, older = UsageRecorder(engine, interval=3600), UsageRecorder(engine, interval=3600)
        now = time.time()
        for n, key_id in enumerate(ids):
            newer.record(key_id, now, "198.51.100.7")
            for _ in range(n % 3):
                older.record(key_id, now - 60, "203.0.113.9")
        assert await newer.flush() == len(ids)
        assert await older.flush() == len([n for n in range(len(ids)) if n % 3])
        rows, daily = await stored_usage(engine)
        await engine.dispose()
        for n, key_id in enumerate(ids):
            assert rows[key_id].use_count == 1 + n % 3
            assert daily[key_id] == 1 + n % 3
            assert rows[key_id].last_used_ip == "198.51.100.7"
            assert abs(rows[key_id].last_used_at.timestamp() - now) < 1

    asyncio.run(scenario())
