"""Writing and reading change events.

``emit`` is called inside the transaction that makes the change; on PostgreSQL it also
``pg_notify``s, which PostgreSQL delivers only when that transaction commits, so listeners
wake exactly for committed changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from apikm.cluster.tables import cluster_events
from apikm.db import utcnow

CHANNEL = "apikm_events"


class Kind(StrEnum):
    KEY = "key"  # one key changed (revoked, rotated, narrowed, renamed)
    OWNER = "owner"  # an owner's roles, groups or enabled flag changed
    ALL = "all"  # many owners at once (a full sync pass confirmed them)
    BLOCK = "block"  # a client address group used up its failure allowance
    SIGNING = "signing"  # apikm's JWT signing keys changed
    SESSION = "session"  # a web UI session was signed out (ref: its id)


@dataclass(frozen=True)
class Event:
    kind: Kind
    ref: str = ""
    until: datetime | None = None


async def emit(conn: AsyncConnection, kind: Kind, ref: str = "",
               until: datetime | None = None) -> None:
    await conn.execute(sa.insert(cluster_events).values(
        kind=kind.value, ref=ref[:255], until=until, at=utcnow()))
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(sa.func.pg_notify(CHANNEL, "")))


async def last_seq(conn: AsyncConnection) -> int:
    return int(await conn.scalar(sa.select(sa.func.max(cluster_events.c.seq))) or 0)


async def read_after(conn: AsyncConnection, seq: int,
                     limit: int = 1000) -> list[tuple[int, Event]]:
    rows = await conn.execute(
        sa.select(cluster_events).where(cluster_events.c.seq > seq)
        .order_by(cluster_events.c.seq).limit(limit))
    return [(row.seq, Event(Kind(row.kind), row.ref, row.until)) for row in rows]


async def read_seqs(conn: AsyncConnection, seqs: list[int]) -> list[tuple[int, Event]]:
    """The events among ``seqs`` that exist (now): late commits of earlier numbers."""
    rows = await conn.execute(sa.select(cluster_events).where(cluster_events.c.seq.in_(seqs)))
    return [(row.seq, Event(Kind(row.kind), row.ref, row.until)) for row in rows]


async def active_blocks(conn: AsyncConnection, now: datetime) -> list[Event]:
    rows = await conn.execute(
        sa.select(cluster_events.c.ref, cluster_events.c.until)
        .where(cluster_events.c.kind == Kind.BLOCK.value, cluster_events.c.until > now))
    return [Event(Kind.BLOCK, row.ref, row.until) for row in rows]


async def prune(conn: AsyncConnection, keep: timedelta) -> None:
    """Drop events older than ``keep``, except blocks still in force and the newest event:
    SQLite numbers a row max(seq) + 1, so an emptied table would hand out numbers again that
    followers have already passed, and they would skip every event until it caught up."""
    now = utcnow()
    newest = sa.select(sa.func.max(cluster_events.c.seq)).scalar_subquery()
    await conn.execute(sa.delete(cluster_events).where(
        cluster_events.c.at < now - keep, cluster_events.c.seq < newest,
        sa.or_(cluster_events.c.until.is_(None), cluster_events.c.until < now)))
