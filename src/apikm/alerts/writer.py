"""Stores what the verification path noticed (``AlertFeed``) as ``audit_events`` rows, in the
background, in one transaction per flush: never a database write per request.

- ``new_network`` {network, address, at}: the flush inserts each (key, network) it was told
  of into ``key_networks``, on conflict doing nothing; only a row it actually inserted, for a
  key more than a day old at the time of use, is an alert. A replica that inserts a row
  another replica inserted first writes nothing.
- ``secret_reuse`` {generation, address, at, revoked} and ``limit_tripped`` {limit, address,
  at}: the flush inserts the alert's mark into ``alert_marks`` the same way, and writes the
  alert only if its insert succeeded. With ``APIKM_REVOKE_ON_SECRET_REUSE`` a reused secret
  revokes its key (reason ``secret_reuse``) in the same transaction; a reuse wakes the
  writer at once instead of waiting for the next interval.

The actor of every alert is apikm itself. A batch that cannot be written (database away) is
kept for the next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apikm.alerts.feed import AlertFeed, Batch, LimitTrip, NetworkUse, SecretReuse
from apikm.alerts.tables import alert_marks, key_networks
from apikm.cluster.events import Kind
from apikm.db import log_write_failure, slices, upsert, write_transaction
from apikm.keys.service import Actor, AuditRow, record_audit, record_audits, revoke_in
from apikm.keys.tables import api_keys

log = structlog.get_logger(__name__)

ALERTS_ACTOR = Actor("apikm", "apikm")
FIRST_DAY = dt.timedelta(days=1)  # networks of a key's first day are its baseline
REUSE_REASON = "secret_reuse"
PRUNE_EVERY = 600.0  # seconds between deletions of marks whose window is over


class AlertWriter:
    def __init__(self, engine: AsyncEngine, feed: AlertFeed, interval: float,
                 revoke_on_reuse: bool = False,
                 on_change: Callable[[Kind, str], None] = lambda _kind, _ref: None) -> None:
        self._engine = engine
        self._feed = feed
        self._interval = interval
        self._revoke_on_reuse = revoke_on_reuse
        self._on_change = on_change  # a key revoked here: drop it from this cache at once
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_prune = 0.0
        feed.urgent = self._wake.set

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alert-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # the batch is kept; the next flush retries it
                log_write_failure(log, "alert flush", exc)

    async def flush(self) -> int:
        """Write what was noticed; returns the number of alerts written."""
        batch = self._feed.take()
        if not batch and time.time() < self._next_prune:
            return 0
        try:
            written, revoked = await self._write(batch)
        except BaseException:
            self._feed.give_back(batch)
            raise
        for key_id in revoked:
            self._on_change(Kind.KEY, key_id)
        return written

    async def _write(self, batch: Batch) -> tuple[int, list[str]]:
        async with write_transaction(self._engine) as conn:
            written = await self._networks(conn, batch.networks)
            marked = await _insert_marks(conn, [*batch.reuses, *batch.trips])
            revoked = []
            for reuse in batch.reuses:
                if reuse.mark in marked:
                    if await self._reuse(conn, reuse):
                        revoked.append(reuse.key_id)
                    written += 1
            for trip in batch.trips:
                if trip.mark in marked:
                    await record_audit(conn, "limit_tripped", ALERTS_ACTOR, trip.key_id,
                                       trip.owner_id, {"limit": trip.limit,
                                                       "address": trip.address,
                                                       "at": _iso(trip.at)})
                    written += 1
            await self._prune(conn)
        return written, revoked

    async def _networks(self, conn: AsyncConnection, uses: Sequence[NetworkUse]) -> int:
        if not uses:
            return 0
        keys = {row.id: row for row in (await conn.execute(
            sa.select(api_keys.c.id, api_keys.c.owner_id, api_keys.c.created_at)
            .where(api_keys.c.id.in_({use.key_id for use in uses})))).all()}
        uses = [use for use in uses if use.key_id in keys]  # a key deleted meanwhile
        if not uses:
            return 0
        # One statement for every row (executemany, RETURNING through SQLAlchemy's
        # insertmanyvalues): a first use of thousands of keys must not compile thousands.
        statement = (upsert(conn.dialect.name, key_networks).on_conflict_do_nothing()
                     .returning(key_networks.c.key_id, key_networks.c.network))
        inserted: set[tuple[str, str]] = set()
        for part in slices([{"key_id": use.key_id, "network": use.network,
                             "first_seen_at": _datetime(use.at)} for use in uses]):
            result = await conn.execute(statement, part)
            inserted.update((row.key_id, row.network) for row in result)
        alerts = [
            AuditRow("new_network", ALERTS_ACTOR, use.key_id, keys[use.key_id].owner_id,
                     {"network": use.network, "address": use.address, "at": _iso(use.at)})
            for use in uses
            if (use.key_id, use.network) in inserted
            and _datetime(use.at) - keys[use.key_id].created_at > FIRST_DAY]
        await record_audits(conn, alerts)
        return len(alerts)

    async def _reuse(self, conn: AsyncConnection, reuse: SecretReuse) -> bool:
        """The alert, and the key revoked first when the policy says so; True if revoked."""
        revoked = False
        if self._revoke_on_reuse:
            revoked = await revoke_in(conn, reuse.key_id, None, ALERTS_ACTOR, REUSE_REASON,
                                      _datetime(time.time()))
        await record_audit(conn, "secret_reuse", ALERTS_ACTOR, reuse.key_id, reuse.owner_id,
                           {"generation": reuse.generation, "address": reuse.address,
                            "at": _iso(reuse.at), "revoked": revoked})
        return revoked

    async def _prune(self, conn: AsyncConnection) -> None:
        now = time.time()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            await conn.execute(sa.delete(alert_marks).where(
                alert_marks.c.until < _datetime(now)))


async def _insert_marks(conn: AsyncConnection,
                        events: Sequence[SecretReuse | LimitTrip]) -> set[str]:
    """The marks this insert wrote: alerts no replica has written yet."""
    statement = (upsert(conn.dialect.name, alert_marks).on_conflict_do_nothing()
                 .returning(alert_marks.c.mark))
    inserted: set[str] = set()
    for part in slices([{"mark": event.mark, "until": _datetime(event.until)}
                        for event in events]):
        inserted.update(row.mark for row in await conn.execute(statement, part))
    return inserted


def _datetime(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _iso(epoch: float) -> str:
    return _datetime(epoch).isoformat(timespec="seconds")

