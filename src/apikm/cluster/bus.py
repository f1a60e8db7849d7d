"""Every replica follows the change-event log, so a change made anywhere (this replica,
another one, the sync, the CLI) reaches every cache in well under a second.

The log table is the truth: events are written in the transaction of the change, so none
is lost and none announces a change that rolled back. Replicas read it:

* woken at once by PostgreSQL ``LISTEN`` (delivered on commit, so nothing is missed while
  the listening connection is up: the poll slows to ``SAFETY_POLL`` then), and by Redis
  pub/sub when configured (published after commit by the replica that made the change);
* by polling every ``FAST_POLL`` seconds otherwise (SQLite, or the LISTEN connection down).

A replica that cannot read the log says so (``healthy`` false, in ``/readyz`` and
``apikm_cluster_events_healthy``) and its key cache falls back to a one-second lifetime,
so it never serves a stale answer silently for long. After an outage longer than the log
keeps events, it forgets its whole cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.cluster import events
from apikm.cluster.events import Event, Kind
from apikm.db import utcnow

log = structlog.get_logger(__name__)

FAST_POLL = 0.1
SAFETY_POLL = 1.0
KEEP = timedelta(minutes=2)  # how long the log keeps events (blocks: while in force)
PRUNE_EVERY = 30.0
LATE_COMMIT = 30.0  # how long a skipped event number may still commit
MAX_GAPS = 1000

EVENTS_HEALTHY = Gauge("apikm_cluster_events_healthy",
                       "1 while this replica reads the change-event log, else 0 "
                       "(then its key cache keeps entries for one second only)")
CHANNEL_UP = Gauge("apikm_cluster_wakeup_channel_up",
                   "1 while this replica's wake-up channel is connected, else 0 (changes "
                   "then arrive by polling the log every 0.1 s)", ["channel"])
EVENTS_LAG = Gauge("apikm_cluster_events_lag_seconds",
                   "Seconds since this replica last read the change-event log")

Handler = Callable[[Event], None]
HealthHandler = Callable[[bool], None]
# A push channel: called with a "wake up" callback, runs until cancelled, raises when lost.
Push = Callable[[Callable[[], None]], Awaitable[None]]


@dataclass(frozen=True)
class Channel:
    """A way for replicas to wake each other up."""

    name: str
    listen: Push
    announce: Callable[[], Awaitable[None]] | None = None  # after a local commit
    complete: bool = False  # every committed event wakes listeners (PostgreSQL NOTIFY)


class EventBus:
    def __init__(self, engine: AsyncEngine, channels: Sequence[Channel] = ()) -> None:
        self._engine = engine
        self._channels = tuple(channels)
        self._announcers = [c.announce for c in channels if c.announce is not None]
        self._handlers: list[Handler] = []
        self._health_handlers: list[HealthHandler] = []
        self._seq = 0
        self._gaps: dict[int, float] = {}  # numbers skipped by the log -> when to give up
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._up: dict[str, bool] = {c.name: False for c in channels}
        self._last_read = time.monotonic()
        self.healthy = True

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def on_health(self, handler: HealthHandler) -> None:
        self._health_handlers.append(handler)

    # --- this replica's own changes ------------------------------------------------------
    def applied(self, kind: Kind, ref: str = "") -> None:
        """A change this process just committed (with ``events.emit`` in its transaction):
        apply it here at once, and ask the other replicas to read the log now."""
        self._dispatch(Event(kind, ref))
        if self._announcers:
            task = asyncio.get_running_loop().create_task(self._announce_quietly())
            self._tasks.append(task)
            task.add_done_callback(self._tasks.remove)

    async def publish(self, event: Event) -> None:
        """Write an event in its own transaction (used for address blocks)."""
        async with self._engine.begin() as conn:
            await events.emit(conn, event.kind, event.ref, event.until)
        await self._announce_quietly()

    async def _announce_quietly(self) -> None:
        for announce in self._announcers:
            try:
                await announce()
            except Exception as exc:  # the poll still delivers
                log.warning("event announce failed", error=str(exc))

    # --- following the log ---------------------------------------------------------------
    async def start(self) -> None:
        try:
            async with self._engine.connect() as conn:
                self._seq = await events.last_seq(conn)
                blocks = await events.active_blocks(conn, utcnow())
            for block in blocks:
                self._dispatch(block)
            self._set_health(True)
        except Exception as exc:
            log.warning("change-event log unreadable at start", error=str(exc))
            self._set_health(False)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow(), name="events-follow"),
                       loop.create_task(self._prune_loop(), name="events-prune")]
        for channel in self._channels:
            self._tasks.append(loop.create_task(self._listen_loop(channel),
                                                name=f"events-{channel.name}"))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def _follow(self) -> None:
        while True:
            complete = any(self._up[c.name] for c in self._channels if c.complete)
            interval = SAFETY_POLL if complete and self.healthy else FAST_POLL
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()
            try:
                await self.read()
            except Exception as exc:
                if self.healthy:
                    log.warning("change-event log unreadable: key cache entries now live "
                                "one second", error=str(exc))
                self._set_health(False)
            EVENTS_LAG.set(time.monotonic() - self._last_read)

    async def read(self) -> int:
        """Apply every event after the last one seen, and any that filled a gap since;
        returns how many."""
        applied = 0
        async with self._engine.connect() as conn:
            if self._gaps:
                for seq, event in await events.read_seqs(conn, list(self._gaps)):
                    del self._gaps[seq]
                    self._dispatch(event)
                    applied += 1
            while True:
                batch = await events.read_after(conn, self._seq)
                for seq, event in batch:
                    self._note_gaps(seq)
                    self._dispatch(event)
                    self._seq = seq
                applied += len(batch)
                if len(batch) < 1000:
                    break
        self._forget_old_gaps()
        if not self.healthy:
            if time.monotonic() - self._last_read > KEEP.total_seconds() / 2:
                self._dispatch(Event(Kind.ALL))  # events may have been pruned meanwhile
            log.info("change-event log readable again")
            self._set_health(True)
        self._last_read = time.monotonic()
        return applied

    def _note_gaps(self, seq: int) -> None:
        """PostgreSQL numbers an event when it is written, not when it commits: a number
        skipped here may still commit (a slower transaction), so it is looked for again."""
        if seq - self._seq > MAX_GAPS:
            return  # not a few slow transactions (a sequence reset): nothing to wait for
        deadline = time.monotonic() + LATE_COMMIT
        for missing in range(self._seq + 1, seq):
            self._gaps[missing] = deadline

    def _forget_old_gaps(self) -> None:
        """A number still missing after ``LATE_COMMIT`` was rolled back."""
        now = time.monotonic()
        for seq in [seq for seq, deadline in self._gaps.items() if deadline < now]:
            del self._gaps[seq]

    async def _listen_loop(self, channel: Channel) -> None:
        delay = 0.5
        while True:
            def woken(name: str = channel.name) -> None:
                # Channels wake us once as soon as they are subscribed: from then on, up.
                if not self._up[name]:
                    self._channel_up(name, True)
                self._wake.set()

            try:
                await channel.listen(woken)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event wake-up channel lost; polling every 0.1 s",
                            channel=channel.name, error=str(exc))
            if self._up[channel.name]:
                delay = 0.5  # it was connected: a fresh loss, retry soon
            self._channel_up(channel.name, False)
            self._wake.set()  # read what may have been missed while it was down
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY)
            try:
                async with self._engine.begin() as conn:
                    await events.prune(conn, KEEP)
            except Exception as exc:
                log.warning("pruning change events failed", error=str(exc))

    def _dispatch(self, event: Event) -> None:
        for handler in self._handlers:
            try:
                handler(event)
            except Exception:  # one bad handler must not stop the others
                log.exception("change event handler failed", kind=event.kind.value)

    def _channel_up(self, name: str, up: bool) -> None:
        self._up[name] = up
        CHANNEL_UP.labels(name).set(1 if up else 0)

    def _set_health(self, healthy: bool) -> None:
        changed = healthy != self.healthy
        self.healthy = healthy
        EVENTS_HEALTHY.set(1 if healthy else 0)
        if changed:
            for handler in self._health_handlers:
                handler(healthy)

    def status(self) -> dict[str, Any]:
        return {"healthy": self.healthy,
                "channels": {name: "up" if up else "down" for name, up in self._up.items()},
                "seconds_since_read": round(time.monotonic() - self._last_read, 3)}


LISTEN_NAME = "apikm-events"  # application_name of the LISTEN connection (pg_stat_activity)


def postgres_channel(engine: AsyncEngine) -> Channel:
    """Wake on ``NOTIFY apikm_events``: a dedicated asyncpg connection, outside the pool."""
    import asyncpg  # type: ignore[import-untyped]

    dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def listen(wake: Callable[[], None]) -> None:
        conn = await asyncpg.connect(dsn, server_settings={"application_name": LISTEN_NAME})
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def closed(_conn: object) -> None:
            if not lost.done():
                lost.set_exception(ConnectionError("LISTEN connection closed"))

        conn.add_termination_listener(closed)
        try:
            await conn.add_listener(events.CHANNEL, lambda *_args: wake())
            wake()  # catch up on whatever came before the listener was in place
            while True:
                # A silent network loss does not close the socket: check it now and then.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(lost), timeout=5.0)
                await asyncio.wait_for(conn.execute("SELECT 1"), timeout=5.0)
        finally:
            # Closing fires ``closed``; a loss nobody waits for any more is no error.
            if lost.done():
                lost.exception()
            else:
                lost.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2.0)

    return Channel("postgresql", listen, complete=True)


REDIS_CHANNEL = "apikm:events"


def redis_channel(url: str) -> Channel:
    """Wake on a Redis pub/sub message, published by the replica that made a change."""
    import redis.asyncio as redis  # the apikm[redis] extra; checked before serving

    client = redis.Redis.from_url(url, health_check_interval=5, socket_connect_timeout=2)

    async def listen(wake: Callable[[], None]) -> None:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(REDIS_CHANNEL)
            wake()  # catch up on whatever came before the subscription
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    wake()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def announce() -> None:
        await client.publish(REDIS_CHANNEL, b"")

    return Channel("redis", listen, announce)
