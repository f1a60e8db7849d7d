"""The alert writer at scale, on both databases: thousands of first uses in one flush are
written as one statement run each (no statement compiled per key), and two replicas flushing
the same uses write each alert once."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from apikm.alerts.feed import AlertFeed
from apikm.alerts.tables import key_networks
from apikm.alerts.writer import AlertWriter
from apikm.db import create_engine
from apikm.keys.tables import api_keys, audit_events
from apikm.migrations import upgrade

pytestmark = pytest.mark.integration
KEYS = 3_000  # more than one batch of SQLAlchemy's insertmanyvalues on either database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'alerts.db'}"
    else:
        from tests.support.postgres import fresh_database

        url = fresh_database(request.getfixturevalue("postgres_url"))
    upgrade(url)
    return url


def _key_row(key_id: str, created: dt.datetime) -> dict[str, object]:
    return {"id": key_id, "public_id": secrets.token_hex(4), "owner_id": "owner", "name": "k",
            "roles": [], "allowed_networks": [], "meta": {}, "secret_hash": secrets.token_hex(32),
            "pepper_id": "p", "created_at": created, "created_by": "owner",
            "updated_at": created, "expires_at": created + dt.timedelta(days=30)}


def test_two_replicas_flushing_thousands_of_first_uses_write_each_alert_once(
        database_url: str) -> None:
    async def scenario() -> None:
        engine = create_engine(database_url)
        old = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
        aged = [str(uuid.uuid4()) for _ in range(KEYS)]
        young = [str(uuid.uuid4()) for _ in range(10)]  # in its first day: baseline only
        async with engine.begin() as conn:
            await conn.execute(sa.insert(api_keys), [
                *(_key_row(k, old) for k in aged),
                *(_key_row(k, dt.datetime.now(dt.UTC)) for k in young)])
        feeds = [AlertFeed(), AlertFeed()]
        writers = [AlertWriter(engine, feed, interval=3600) for feed in feeds]
        now = time.time()
        for feed in feeds:
            for n, key_id in enumerate([*aged, *young]):
                feed.used(key_id, f"192.0.{n % 200}.7", now)
        written = await asyncio.gather(*(writer.flush() for writer in writers))
        async with engine.connect() as conn:
            alerted = (await conn.execute(
                sa.select(audit_events.c.key_id, audit_events.c.details)
                .where(audit_events.c.action == "new_network"))).all()
            networks = (await conn.execute(
                sa.select(sa.func.count()).select_from(key_networks))).scalar_one()
        await engine.dispose()
        assert sum(written) == KEYS
        assert sorted(row.key_id for row in alerted) == sorted(aged)
        network_of = {key_id: f"192.0.{n % 200}.0/24" for n, key_id in enumerate(aged)}
        assert all(row.details["network"] == network_of[row.key_id] for row in alerted)
        assert networks == KEYS + len(young)

    asyncio.run(scenario())
