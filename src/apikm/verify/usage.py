"""Usage counting without a database write per request.

Verifications add to in-memory counters; a background task writes them every
``APIKM_USAGE_FLUSH_SECONDS`` (and at shutdown) as one UPDATE per used key and one upsert per
key and day. A crash loses at most one interval of counts, never a key.

One key must never hold back the others: values are made storable before they are written (a
client address the column cannot hold is not recorded), and when the database still refuses
the batch (SQLSTATE class 22 or 23: a key deleted before its counts were written, say), the
batch, rolled back whole, is written again key by key, each in its own transaction, so every
count is written exactly once and only the refused key's counts are dropped (logged). When the
database cannot be reached, everything not yet written is kept for the next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apikm.db import log_write_failure, slices, upsert
from apikm.keys.tables import api_keys, key_usage_daily
from apikm.networks import parse_address

log = structlog.get_logger(__name__)


@dataclass
class _Usage:
    count: int
    last_used_at: float  # epoch seconds
    last_used_ip: str | None


@dataclass
class _Batch:
    """What one flush writes for one key."""

    pending: dict[str, _Usage] = field(default_factory=dict)
    daily: dict[tuple[str, int], int] = field(default_factory=dict)
    rehash: dict[str, tuple[str, str, str]] = field(default_factory=dict)


class UsageRecorder:
    def __init__(self, engine: AsyncEngine, interval: float) -> None:
        self._engine = engine
        self._interval = interval
        self._pending: dict[str, _Usage] = {}
        self._daily: dict[tuple[str, int], int] = {}  # (key id, epoch day) -> count
        self._rehash: dict[str, tuple[str, str, str]] = {}  # key id -> old, new hash, pepper
        self._task: asyncio.Task[None] | None = None

    def record(self, key_id: str, at: float, client_ip: str | None) -> None:
        """Count one use at ``at`` (epoch seconds): dict updates only, no I/O."""
        usage = self._pending.get(key_id)
        if usage is None:
            self._pending[key_id] = _Usage(1, at, client_ip)
        else:
            usage.count += 1
            usage.last_used_at = at
            usage.last_used_ip = client_ip or usage.last_used_ip
        day_key = (key_id, int(at // 86400))
        self._daily[day_key] = self._daily.get(day_key, 0) + 1

    def rehash(self, key_id: str, old_hash: str, new_hash: str, pepper_id: str) -> None:
        self._rehash[key_id] = (old_hash, new_hash, pepper_id)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception as exc:  # keep counting; the next flush retries what was kept
                log_write_failure(log, "usage flush", exc)

    async def flush(self) -> int:
        """Write what was counted; returns the number of keys written."""
        pending, daily, rehash = self._pending, self._daily, self._rehash
        if not pending and not rehash:
            return 0
        self._pending, self._daily, self._rehash = {}, {}, {}
        try:
            await self._write(pending, daily, rehash)
        except Exception as exc:
            if not _refused(exc):
                self._keep(pending, daily, rehash)
                raise
            log.warning("usage batch refused; writing it key by key",
                        error_type=type(exc).__name__)
        except BaseException:  # cancelled at shutdown included: stop() flushes what is kept
            self._keep(pending, daily, rehash)
            raise
        else:
            return len(pending)
        return await self._flush_each(pending, daily, rehash)

    async def _flush_each(self, pending: dict[str, _Usage], daily: dict[tuple[str, int], int],
                          rehash: dict[str, tuple[str, str, str]]) -> int:
        """The refused batch again, one transaction per key: a written key is done, a refused
        key is dropped, and whatever is left when the database goes away is kept."""
        parts: dict[str, _Batch] = {}
        for key_id, usage in pending.items():
            parts.setdefault(key_id, _Batch()).pending[key_id] = usage
        for day_key, count in daily.items():
            parts.setdefault(day_key[0], _Batch()).daily[day_key] = count
        for key_id, change in rehash.items():
            parts.setdefault(key_id, _Batch()).rehash[key_id] = change
        queue = list(parts.items())
        written = 0
        for index, (key_id, part) in enumerate(queue):
            try:
                await self._write(part.pending, part.daily, part.rehash)
            except Exception as exc:
                if not _refused(exc):
                    self._keep_all(part for _, part in queue[index:])
                    raise
                uses = part.pending[key_id].count if part.pending else 0
                log.error("usage of a key refused by the database; dropped", key_id=key_id,
                          uses=uses, error_type=type(exc).__name__,
                          error=str(exc).split("\n", 1)[0])
            except BaseException:
                self._keep_all(part for _, part in queue[index:])
                raise
            else:
                written += 1 if part.pending else 0
        return written

    async def _write(self, pending: dict[str, _Usage], daily: dict[tuple[str, int], int],
                     rehash: dict[str, tuple[str, str, str]]) -> None:
        """All of it in one transaction: written whole, or (rolled back) not at all."""
        async with self._engine.begin() as connection:
            await self._apply_rehash(connection, rehash)
            # One statement for every key (executemany: compiled once), in slices so the
            # event loop, which prepares each slice's parameters, is never held for long.
            values = [_usage_values(key_id, usage) for key_id, usage in pending.items()]
            for part in slices(values):
                await connection.execute(_USAGE_UPDATE, part)
            if daily:
                await self._upsert_daily(connection, daily)

    def _keep(self, pending: dict[str, _Usage], daily: dict[tuple[str, int], int],
              rehash: dict[str, tuple[str, str, str]]) -> None:
        """Not written: back into the counters, for the next flush."""
        self._merge_back(pending, daily)
        self._rehash = {**rehash, **self._rehash}

    def _keep_all(self, parts: Iterable[_Batch]) -> None:
        for part in parts:
            self._keep(part.pending, part.daily, part.rehash)

    async def _apply_rehash(self, connection: AsyncConnection,
                            rehash: dict[str, tuple[str, str, str]]) -> None:
        for key_id, (old_hash, new_hash, pepper_id) in rehash.items():
            # Only if the key still has that secret: a rotation in between wins.
            await connection.execute(
                sa.update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.secret_hash == old_hash)
                .values(secret_hash=new_hash, pepper_id=pepper_id)
            )

    async def _upsert_daily(self, connection: AsyncConnection,
                            daily: dict[tuple[str, int], int]) -> None:
        rows = [{"key_id": k, "day": _EPOCH + dt.timedelta(days=d), "count": n}
                for (k, d), n in daily.items()]
        insert = upsert(connection.dialect.name, key_usage_daily)
        # executemany, not a multi-row VALUES: that outgrew PostgreSQL's 32,767 bound
        # parameters past some 10,000 keys a flush.
        statement = insert.on_conflict_do_update(
            index_elements=["key_id", "day"],
            set_={"count": key_usage_daily.c.count + insert.excluded.count})
        for part in slices(rows):
            await connection.execute(statement, part)

    def _merge_back(self, pending: dict[str, _Usage],
                    daily: dict[tuple[str, int], int]) -> None:
        for key_id, usage in pending.items():
            current = self._pending.get(key_id)
            if current is None:
                self._pending[key_id] = usage
            else:
                current.count += usage.count
                if usage.last_used_at > current.last_used_at:
                    current.last_used_at = usage.last_used_at
                    current.last_used_ip = usage.last_used_ip
        for day_key, count in daily.items():
            self._daily[day_key] = self._daily.get(day_key, 0) + count


_EPOCH = dt.date(1970, 1, 1)
_IP_COLUMN_LENGTH = getattr(api_keys.c.last_used_ip.type, "length", None) or 45


def _refused(exc: BaseException) -> bool:
    """The database refused a value (SQLSTATE class 22, data exception, or 23, integrity
    constraint violation): writing the same rows again would fail the same way. Anything
    else (connection lost, database locked, timeouts) may pass on the next try."""
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(state, str) and state[:2] in ("22", "23")
    return False


def _storable_ip(text: str | None) -> str | None:
    """The address as the column can hold it, or None (not recorded): an IPv6 zone
    ("fe80::1%eth0") means nothing on another host, and anything else is no address."""
    address = parse_address(text) if text and len(text) <= 64 else None
    if address is None or getattr(address, "scope_id", None):
        return None
    canonical = str(address)
    return canonical if len(canonical) <= _IP_COLUMN_LENGTH else None


def _usage_values(key_id: str, usage: _Usage) -> dict[str, object]:
    return {"b_id": key_id, "b_count": usage.count,
            "b_at": dt.datetime.fromtimestamp(usage.last_used_at, dt.UTC),
            "b_ip": _storable_ip(usage.last_used_ip)}


# Add this replica's count; last use moves only forward (replicas flush in any order).
_AT = sa.bindparam("b_at", type_=api_keys.c.last_used_at.type)
_NEWER = sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < _AT)
_USAGE_UPDATE = (
    sa.update(api_keys).where(api_keys.c.id == sa.bindparam("b_id")).values(
        use_count=api_keys.c.use_count + sa.bindparam("b_count", type_=sa.BigInteger()),
        last_used_at=sa.case((_NEWER, _AT), else_=api_keys.c.last_used_at),
        last_used_ip=sa.case((_NEWER, sa.bindparam("b_ip", type_=sa.String())),
                             else_=api_keys.c.last_used_ip),
    )
)
