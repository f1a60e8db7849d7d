"""The outbox: enqueue once (unique per event, channel and recipient), claim what is due,
record each attempt, and read the delivery log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apikm.db import upsert, utcnow
from apikm.notify.rules import Outcome, retry_delay
from apikm.notify.tables import notification_attempts, notifications


@dataclass(frozen=True)
class Item:
    """One notification to enqueue."""

    source: str
    ref: str
    channel: str  # email | webhook
    recipient: str  # address, or endpoint id
    audience: str  # owner | admin | webhook
    event: str
    payload: dict[str, Any]
    key_id: str | None = None
    owner_id: str | None = None


async def enqueue(conn: AsyncConnection, items: Sequence[Item], now: datetime,
                  due: datetime | None = None) -> int:
    """Insert what is not there yet (to deliver from ``due``, default now); returns how
    many rows are new."""
    if not items:
        return 0
    insert = upsert(conn.dialect.name, notifications).values([{
        "source": i.source, "ref": i.ref[:128], "channel": i.channel,
        "recipient": i.recipient[:255], "audience": i.audience, "event": i.event,
        "key_id": i.key_id, "owner_id": i.owner_id, "payload": i.payload,
        "status": "pending", "attempts": 0, "next_attempt_at": due or now,
        "created_at": now,
    } for i in items]).on_conflict_do_nothing(
        index_elements=["source", "ref", "channel", "recipient"])
    result = await conn.execute(insert)
    return max(result.rowcount, 0)


async def claim_due(engine: AsyncEngine, limit: int, hold: timedelta) -> list[Any]:
    """Due rows, each claimed by pushing its next attempt ``hold`` ahead: a replica taking
    over the lease meanwhile does not deliver the same row a second time."""
    now = utcnow()
    async with engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(notifications).where(notifications.c.status == "pending",
                                           notifications.c.next_attempt_at <= now)
            .order_by(notifications.c.next_attempt_at, notifications.c.id).limit(limit))).all()
    claimed = []
    for row in rows:
        async with engine.begin() as conn:
            taken = await conn.execute(sa.update(notifications).where(
                notifications.c.id == row.id, notifications.c.status == "pending",
                notifications.c.next_attempt_at <= now,  # still due: nobody claimed it
            ).values(next_attempt_at=now + hold))
        if taken.rowcount == 1:
            claimed.append(row)
    return claimed


async def record(engine: AsyncEngine, row: Any, outcome: Outcome, max_attempts: int,
                 first_retry: float) -> str:
    """Log the attempt and move the row on: sent, failed, or pending until the backoff."""
    now = utcnow()
    attempts = row.attempts + 1
    if outcome.ok:
        values: dict[str, Any] = {"status": "sent", "sent_at": now, "last_error": None}
    elif outcome.permanent or attempts >= max_attempts:
        values = {"status": "failed", "last_error": outcome.error[:500]}
    else:
        values = {"status": "pending", "last_error": outcome.error[:500],
                  "next_attempt_at": now + timedelta(seconds=retry_delay(attempts, first_retry))}
    async with engine.begin() as conn:
        await conn.execute(sa.insert(notification_attempts).values(
            notification_id=row.id, at=now, ok=outcome.ok, status_code=outcome.status_code,
            reply=outcome.reply[:500] or None, error=outcome.error[:500] or None))
        await conn.execute(sa.update(notifications).where(notifications.c.id == row.id)
                           .values(attempts=attempts, **values))
    return str(values["status"])


async def delivery_log(engine: AsyncEngine, limit: int = 50, offset: int = 0,
                       status: str | None = None) -> list[dict[str, Any]]:
    """Newest notifications first, each with its attempts (oldest first)."""
    query = sa.select(notifications).order_by(notifications.c.id.desc())
    if status:
        query = query.where(notifications.c.status == status)
    async with engine.connect() as conn:
        rows = (await conn.execute(query.limit(limit).offset(offset))).all()
        ids = [row.id for row in rows]
        attempts: dict[int, list[dict[str, Any]]] = {}
        if ids:
            found = await conn.execute(
                sa.select(notification_attempts)
                .where(notification_attempts.c.notification_id.in_(ids))
                .order_by(notification_attempts.c.id))
            for attempt in found:
                attempts.setdefault(attempt.notification_id, []).append(dict(attempt._mapping))
    return [{**dict(row._mapping), "attempt_log": attempts.get(row.id, [])} for row in rows]
