"""Signing out is remembered in the database: every replica refuses the cookie afterwards.

Runs on a real SQLite file; each ``EndedSessions`` with its own engine stands for a replica.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.cluster import events
from apikm.cluster.bus import EventBus
from apikm.cluster.events import Event, Kind
from apikm.cluster.tables import cluster_events
from apikm.db import create_engine, metadata, utcnow
from apikm.identity.tables import ui_ended_sessions
from apikm.web.ui.ended import EndedSessions
from apikm.web.ui.session import AccessCache, new_session


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'apikm.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: metadata.create_all(
            c, tables=[ui_ended_sessions, cluster_events]))
    yield engine
    await engine.dispose()


async def replica(engine: AsyncEngine) -> tuple[EndedSessions, AccessCache]:
    cache = AccessCache()
    ended = EndedSessions(cache, 3600)
    await ended.start(engine, EventBus(engine))
    return ended, cache


async def test_a_signed_out_session_is_refused_by_every_replica(engine: AsyncEngine) -> None:
    a, a_cache = await replica(engine)
    b, b_cache = await replica(engine)
    session = new_session("user-1", "alice", 3600, "refresh", None)
    other = new_session("user-1", "alice", 3600, "refresh", None)
    await a.end(session)
    assert a_cache.is_ended(session.sid)
    async with engine.connect() as conn:
        written = [event for _seq, event in await events.read_after(conn, 0)]
    assert written == [Event(Kind.SESSION, session.sid)]
    for event in written:  # what B's bus does
        b.on_event(event)
    assert b_cache.is_ended(session.sid) and not b_cache.is_ended(other.sid)
    _late, late_cache = await replica(engine)  # started after the event was pruned
    assert late_cache.is_ended(session.sid) and not late_cache.is_ended(other.sid)


async def test_rows_are_kept_only_while_the_session_could_live(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.insert(ui_ended_sessions).values(
            sid="gone", until=utcnow() - timedelta(seconds=1)))
    a, _cache = await replica(engine)
    await a.end(new_session("user-1", "alice", 3600, "refresh", None))
    async with engine.connect() as conn:
        sids = list(await conn.scalars(sa.select(ui_ended_sessions.c.sid)))
    assert "gone" not in sids and len(sids) == 1
