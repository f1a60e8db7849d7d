"""The show-once hand-off on a real SQLite file: one read, by its owner, for its key, then
gone; stored encrypted; expired rows show nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.db import create_engine, metadata, utcnow
from apikm.encryption import parse_encryption_keys
from apikm.identity.tables import ui_handoffs
from apikm.web.ui.handoff import Handoffs

KEYS = parse_encryption_keys("k1:" + "A" * 43)
SECRET = "apikm_AbCd1234" + "x" * 34
KEY_ID = "5f0e3c1a-0000-4000-8000-000000000001"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'apikm.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: metadata.create_all(c, tables=[ui_handoffs]))
    yield engine
    await engine.dispose()


async def test_read_once_by_its_owner_for_its_key(engine: AsyncEngine) -> None:
    handoffs = Handoffs(engine, KEYS)
    token = await handoffs.put("alice", KEY_ID, SECRET, rotated=True)
    assert await handoffs.take(token, "bob", KEY_ID) is None  # not bob's: left alone
    assert await handoffs.take(token, "alice", "other-key") is None
    assert await handoffs.take(token + "x", "alice", KEY_ID) is None
    async with engine.connect() as conn:
        stored = (await conn.execute(sa.select(ui_handoffs))).one()
    assert SECRET.encode() not in stored.secret and token not in stored.id
    taken = await handoffs.take(token, "alice", KEY_ID)
    assert taken is not None and taken.secret == SECRET and taken.rotated
    assert await handoffs.take(token, "alice", KEY_ID) is None  # the reload


async def test_concurrent_reads_show_it_once(engine: AsyncEngine) -> None:
    handoffs = Handoffs(engine, KEYS)
    token = await handoffs.put("alice", KEY_ID, SECRET, rotated=False)
    results = await asyncio.gather(*(handoffs.take(token, "alice", KEY_ID) for _ in range(5)))
    assert sum(result is not None for result in results) == 1


async def test_expired_hand_offs_show_nothing_and_are_cleared(engine: AsyncEngine) -> None:
    handoffs = Handoffs(engine, KEYS)
    token = await handoffs.put("alice", KEY_ID, SECRET, rotated=False)
    async with engine.begin() as conn:
        await conn.execute(sa.update(ui_handoffs).values(until=utcnow() - timedelta(1)))
    assert await handoffs.take(token, "alice", KEY_ID) is None
    await handoffs.put("alice", KEY_ID, SECRET, rotated=False)  # clears the stale row
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(ui_handoffs))
                ).scalar() == 1


async def test_odd_tokens_are_refused_quietly(engine: AsyncEngine) -> None:
    handoffs = Handoffs(engine, KEYS)
    for token in ("", "x" * 65, "é"):
        assert await handoffs.take(token, "alice", KEY_ID) is None
