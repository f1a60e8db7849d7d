"""Signed-out web UI sessions, refused by every replica.

A session cookie stays decryptable until it expires, so signing out must be remembered:
a row in ``ui_ended_sessions`` (kept until the session would have expired anyway) and a
``session`` change event, both in one transaction. Every replica loads the rows at start and
adds each new one from the event (at once with PostgreSQL's NOTIFY, within 0.1 s polling
SQLite); checking a cookie stays an in-memory lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.cluster import events
from apikm.cluster.bus import EventBus
from apikm.cluster.events import Event, Kind
from apikm.db import upsert, utcnow
from apikm.identity.tables import ui_ended_sessions
from apikm.web.ui.session import AccessCache, Session

log = structlog.get_logger(__name__)


class EndedSessions:
    def __init__(self, cache: AccessCache, lifetime_seconds: int) -> None:
        self._cache = cache
        self._lifetime = lifetime_seconds  # an event's session ends at the latest this late
        self._engine: AsyncEngine | None = None
        self._bus: EventBus | None = None
        self._loading: asyncio.Task[None] | None = None

    async def start(self, engine: AsyncEngine, bus: EventBus) -> None:
        self._engine, self._bus = engine, bus
        await self.load()

    async def stop(self) -> None:
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loading

    async def load(self) -> None:
        assert self._engine is not None
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(ui_ended_sessions)
                                      .where(ui_ended_sessions.c.until > utcnow()))
            for row in rows:
                self._cache.mark_ended(row.sid, row.until.timestamp())

    async def end(self, session: Session) -> None:
        """Sign ``session`` out here at once, and everywhere through the database."""
        self._cache.end(session)
        if self._engine is None:
            return  # not started (unit tests): this process only
        until = datetime.fromtimestamp(session.expires_at, UTC)
        async with self._engine.begin() as conn:
            await conn.execute(upsert(conn.dialect.name, ui_ended_sessions)
                               .values(sid=session.sid, until=until)
                               .on_conflict_do_nothing())
            await conn.execute(sa.delete(ui_ended_sessions)
                               .where(ui_ended_sessions.c.until <= utcnow()))
            await events.emit(conn, Kind.SESSION, session.sid)
        if self._bus is not None:
            self._bus.applied(Kind.SESSION, session.sid)

    def on_event(self, event: Event) -> None:
        if event.kind is Kind.SESSION:
            self._cache.mark_ended(event.ref, time.time() + self._lifetime)
        elif event.kind is Kind.ALL and self._engine is not None:
            # After a long bus outage events may have been pruned: read the table again.
            if self._loading is None or self._loading.done():
                self._loading = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        try:
            await self.load()
        except Exception as exc:
            log.warning("reading signed-out sessions failed", error=str(exc))
