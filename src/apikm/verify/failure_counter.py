"""Failed verifications counted in the database, so replicas (or the workers of one
``apikm serve``) without Redis share one count.

A sliding-window counter, as ``limits`` computes it: this fixed window's count plus the
previous window's, weighted by how much of it still lies within the sliding window. One
upsert and one read per *failure*; successful verifications never come here (they only
probe the in-memory block list).
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.db import upsert
from apikm.verify.tables import failure_counts


class SharedFailureCounter:
    def __init__(self, engine: AsyncEngine, window_seconds: int) -> None:
        self._engine = engine
        self._window = window_seconds

    async def hit(self, group: str) -> tuple[float, float]:
        """Count one failure; returns (weighted count now, when the window moves on)."""
        now = time.time()
        start = int(now // self._window) * self._window
        row = {"address_group": group, "window_start": start, "count": 1}
        async with self._engine.begin() as conn:
            count_one = upsert(conn.dialect.name, failure_counts).values(row)
            count_one = count_one.on_conflict_do_update(
                index_elements=["address_group", "window_start"],
                set_={"count": failure_counts.c.count + 1})
            current = await conn.scalar(count_one.returning(failure_counts.c.count))
            previous = await conn.scalar(sa.select(failure_counts.c.count).where(
                failure_counts.c.address_group == group,
                failure_counts.c.window_start == start - self._window)) or 0
        weight = 1 - (now - start) / self._window
        return previous * weight + (current or 0), start + self._window

    async def prune(self) -> None:
        oldest = int(time.time() // self._window) * self._window - self._window
        async with self._engine.begin() as conn:
            await conn.execute(sa.delete(failure_counts)
                               .where(failure_counts.c.window_start < oldest))
