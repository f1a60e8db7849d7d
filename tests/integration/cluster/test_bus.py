"""The change-event bus on real databases: events written by anyone reach a follower, a lost
LISTEN connection is reported and changes still arrive by polling, and a log that cannot be
read is reported (``healthy`` false, metrics) while the key cache falls back to one second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.cluster import bus as bus_module
from apikm.cluster.bus import EventBus, postgres_channel
from apikm.cluster.events import Event, Kind, emit, last_seq, prune
from apikm.db import create_engine
from apikm.migrations import upgrade
from apikm.verify.store import DEGRADED_TTL, KeyStore
from tests.support.postgres import fresh_database
from tests.unit.verify.test_rules import RECORD

pytestmark = pytest.mark.integration


@pytest.fixture
def database(postgres_url: str) -> str:
    url = fresh_database(postgres_url)  # not in an async fixture: it runs its own loop
    upgrade(url)
    return url


@pytest.fixture
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    made = create_engine(database)
    yield made
    await made.dispose()


async def until(check: Callable[[], bool], within: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, "not reached in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def metric(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def write_event(engine: AsyncEngine, ref: str) -> None:
    async with engine.begin() as conn:
        await emit(conn, Kind.KEY, ref)


async def test_a_lost_listen_connection_is_reported_and_changes_still_arrive(
        engine: AsyncEngine) -> None:
    seen: list[Event] = []
    bus = EventBus(engine, [postgres_channel(engine)])
    bus.subscribe(seen.append)
    await bus.start()
    try:
        await until(lambda: bus.status()["channels"]["postgresql"] == "up", 5)
        assert metric("apikm_cluster_wakeup_channel_up", channel="postgresql") == 1
        await write_event(engine, "first")
        assert await until(lambda: Event(Kind.KEY, "first") in seen, 1) < 0.5  # NOTIFY

        async with engine.begin() as conn:  # what a failover or an idle timeout does
            ended = await conn.scalar(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database()"),
                {"name": bus_module.LISTEN_NAME})
        assert ended == 1
        await until(lambda: bus.status()["channels"]["postgresql"] == "down", 2)
        assert metric("apikm_cluster_wakeup_channel_up", channel="postgresql") == 0
        await write_event(engine, "while-down")
        # Polled every 0.1 s meanwhile (or the channel is already back and woke us).
        assert await until(lambda: Event(Kind.KEY, "while-down") in seen, 1) < 0.5
        await until(lambda: bus.status()["channels"]["postgresql"] == "up", 5)
        assert bus.healthy and metric("apikm_cluster_events_healthy") == 1
    finally:
        await bus.stop()


async def test_an_unreadable_log_is_reported_and_the_cache_falls_back(
        engine: AsyncEngine) -> None:
    store = KeyStore(engine, ttl_seconds=5.0)
    bus = EventBus(engine)  # polling only, as on SQLite
    bus.on_health(store.on_health)
    await bus.start()
    try:
        assert bus.healthy
        async with engine.begin() as conn:  # the log cannot be read any more
            await conn.execute(sa.text("ALTER TABLE cluster_events RENAME TO moved_away"))
        await until(lambda: not bus.healthy, 2)
        assert bus.status()["healthy"] is False
        assert metric("apikm_cluster_events_healthy") == 0
        store._remember("digest", RECORD)  # a key cached while the log cannot be read
        assert store.cached("digest") is RECORD
        await asyncio.sleep(DEGRADED_TTL + 0.1)
        assert store.cached("digest") is None  # one second at most, not the 5 s TTL
        async with engine.begin() as conn:
            await conn.execute(sa.text("ALTER TABLE moved_away RENAME TO cluster_events"))
        await until(lambda: bus.healthy, 2)
        assert metric("apikm_cluster_events_healthy") == 1
        store._remember("digest", RECORD)
        await asyncio.sleep(DEGRADED_TTL + 0.1)
        assert store.cached("digest") is RECORD  # the full TTL again
    finally:
        await bus.stop()


async def test_an_event_that_commits_after_a_later_one_is_not_skipped(
        engine: AsyncEngine) -> None:
    """PostgreSQL numbers an event when it is written: a slower transaction commits a lower
    number after a follower has read past it."""
    seen: list[Event] = []
    bus = EventBus(engine)
    bus.subscribe(seen.append)
    await bus.start()
    try:
        async with engine.connect() as slow:
            await slow.begin()
            await emit(slow, Kind.KEY, "slow")  # takes number n, not committed yet
            await write_event(engine, "fast")  # n + 1, committed
            await until(lambda: Event(Kind.KEY, "fast") in seen, 2)
            await slow.commit()
        await until(lambda: Event(Kind.KEY, "slow") in seen, 2)
        assert seen.count(Event(Kind.KEY, "slow")) == 1
    finally:
        await bus.stop()


async def test_pruning_keeps_numbers_increasing(tmp_path: Path) -> None:
    """SQLite numbers a row max(seq) + 1: an emptied log would reuse numbers followers have
    passed, and they would skip every event until the numbers caught up."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'apikm.db'}"
    await asyncio.to_thread(upgrade, url)
    sqlite = create_engine(url)
    try:
        for ref in ("a", "b", "c"):
            await write_event(sqlite, ref)
        async with sqlite.begin() as conn:
            before = await last_seq(conn)
            await prune(conn, timedelta(0))  # everything is old enough
        await write_event(sqlite, "after")
        async with sqlite.connect() as conn:
            assert await last_seq(conn) == before + 1
    finally:
        await sqlite.dispose()
