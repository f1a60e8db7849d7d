"""Key lookup by hash with an in-process cache that every replica keeps current.

One indexed query (key joined with its owner) on a miss; a dict probe on a hit. Changes reach
the cache through change events (``apikm.cluster``): this process applies its own at once,
other replicas' within a fraction of a second. The TTL is only a backstop; while the event
log cannot be read it drops to ``DEGRADED_TTL``.

A lookup that finds no live key looks for the hash among the secrets rotations retired, in
the same lookup (never cached): such a secret is recognised (``RetiredSecret``) instead of
answering NOT_FOUND. The cached path never reads them.

On SQLite a miss reads the key on the spot, on the event loop (``find_now``): the indexed
read of the memory-mapped file costs 35-41 µs, less than the trip to a worker thread, which
under load must wait for the GIL and then wake the loop again (first uses of a million keys
ran at half the rate through threads). The loop's connection never waits for a lock (busy
timeout 0): a read that cannot be done at once or fails takes the threaded way (``find``),
as PostgreSQL reads take asyncpg's. A read that found no live key is kept for one more
request: the gateway protocol hands a refusal to the ASGI way (which counts it), which asks
again at once.

A busy key never waits for the database: once its entry has lived ``REFRESH_AT`` of its
lifetime, the next use re-reads it in the background while the entry still answers. And
concurrent misses for one key share one query. Without both, every few seconds each busy
key's entry expired under load and hundreds of requests queried at once, opening database
connections beyond the pool: stalls of up to a second at a few thousand requests a second.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.cluster.events import Event, Kind
from apikm.db import READER_THREADS
from apikm.identity.tables import owners
from apikm.keys.tables import api_keys, retired_secrets
from apikm.verify.metrics import STATS
from apikm.verify.record import KeyRecord, RetiredSecret, record_from_row
from apikm.verify.sqlite_lookup import SqliteLookup

Found = tuple[str, KeyRecord | RetiredSecret] | None  # (matching hash, what it names)
KEPT_SECONDS = 0.5  # how long a read on the spot that found no live key is kept for


class NotNow(Enum):
    """``find_now`` cannot answer: ask ``find``."""

    NOT_NOW = "not now"


NOT_NOW = NotNow.NOT_NOW
DEGRADED_TTL = 1.0
REFRESH_AT = 0.8  # share of an entry's lifetime after which a use refreshes it

_LOOKUP_COLUMNS = [
    api_keys.c.id, api_keys.c.public_id, api_keys.c.name, api_keys.c.status,
    api_keys.c.expires_at, api_keys.c.roles, api_keys.c.allowed_networks, api_keys.c.meta,
    api_keys.c.rate_limit, api_keys.c.secret_hash, api_keys.c.previous_secret_hash,
    api_keys.c.previous_secret_expires_at, api_keys.c.revoked_reason, api_keys.c.owner_id,
    owners.c.username, owners.c.email, owners.c.enabled, owners.c.roles.label("owner_roles"),
    owners.c.groups, owners.c.synced_at, api_keys.c.all_roles, api_keys.c.imported_from,
    owners.c.attributes, api_keys.c.generation,
]


class KeyStore:
    def __init__(self, engine: AsyncEngine, ttl_seconds: float, max_entries: int = 100_000,
                 reader: sa.Engine | None = None):
        self._engine = engine
        # SQLite: lookups run whole on a synchronous engine in a few threads (db.py).
        self._reader = reader
        self._threads = ThreadPoolExecutor(READER_THREADS, "key-lookup") if reader else None
        self._sqlite = SqliteLookup(reader, lookup_query) if reader else None
        self._retired = SqliteLookup(reader, _retired_query) if reader else None
        # The pooled connection reads on the spot use, opened here: opening runs pragmas
        # that may wait for a lock, which the event loop must never do.
        self._on_loop = reader.raw_connection() if reader else None
        self._loop_db: Any = self._on_loop.dbapi_connection if self._on_loop else None
        if self._loop_db is not None:
            self._loop_db.execute("PRAGMA busy_timeout = 0")
        # The last read on the spot that found no live key: (candidates, generation, when,
        # what it found).
        self._kept: tuple[list[str], int, float, Found] | None = None
        self._ttl = ttl_seconds
        self._max_age = ttl_seconds
        self._max = max_entries
        # hash -> record, insertion order being age order (for eviction); hash -> when it
        # was cached apart, and a key's hashes as a tuple: floats, strings and tuples of
        # strings are no work for the collector, whose full passes walk every object it
        # tracks (with an entry tuple and a set per key, a cache of 100,000 keys held a
        # million such objects and a pass stalled the loop for 0.3 s).
        self._cache: OrderedDict[str, KeyRecord] = OrderedDict()
        self._cached_at: dict[str, float] = {}
        self._hashes_of_key: dict[str, tuple[str, ...]] = {}
        self._keys_of_owner: dict[str, set[str]] = {}
        # Bumped by every invalidation: a lookup that started before a change must not
        # cache what it read, or a just-revoked key could answer VALID for another TTL.
        self._generation = 0
        # One lookup in flight per set of candidate hashes (with the generation it started
        # in); later misses share its answer unless something changed since it started.
        self._inflight: dict[tuple[str, ...], tuple[int, asyncio.Future[Found]]] = {}

    def cached(self, digest: str) -> KeyRecord | None:
        """The hot path's probe: no await, no allocation on a hit."""
        hit = self._cache.get(digest)
        if hit is not None:
            age = time.monotonic() - self._cached_at[digest]
            if age < self._max_age:
                if age > self._max_age * REFRESH_AT:
                    self._refresh(digest)
                return hit
        return None

    def find_now(self, hashes: Iterable[str]) -> Found | NotNow:
        """What ``find`` would answer, read on the spot (SQLite); ``NOT_NOW`` when only
        ``find`` can answer: another database, the file locked, an error."""
        if self._sqlite is None or self._retired is None or self._loop_db is None:
            return NOT_NOW
        candidates = list(hashes)
        kept, self._kept = self._kept, None
        if kept is not None and kept[0] == candidates and kept[1] == self._generation \
                and time.monotonic() - kept[2] < KEPT_SECONDS:
            return kept[3]
        try:
            row = self._sqlite.first_on(self._loop_db, candidates)
            retired = None if row is not None else self._retired.first_on(
                self._loop_db, candidates)
        except Exception:  # the threaded way reads again, and reports what fails there
            return NOT_NOW
        STATS.lookups["database"] += 1
        found = _found(candidates, row, retired)
        if found is not None and isinstance(found[1], KeyRecord):
            if self._ttl > 0:  # nothing can change the key between the read and here
                self._remember(found[0], found[1])
        else:
            # Not cached, but kept for one request: the gateway protocol's own way hands a
            # refusal over to the ASGI way (which counts it), which asks again at once.
            self._kept = (candidates, self._generation, time.monotonic(), found)
        return found

    async def find(self, hashes: Iterable[str]) -> Found:
        """(matching hash, record) for the first hash that names a key; (hash, retired
        secret) when only a retired secret matches; else None."""
        candidates = tuple(hashes)
        for digest in candidates:
            record = self.cached(digest)
            if record is not None:
                STATS.lookups["cache"] += 1
                return digest, record
        pending = self._inflight.get(candidates)
        task = pending[1] if pending and pending[0] == self._generation else self._lookup(
            candidates)
        return await asyncio.shield(task)  # a cancelled waiter leaves it to the others

    def _refresh(self, digest: str) -> None:
        """Re-read a cached key in the background (once), so its users never wait."""
        if (digest,) not in self._inflight:
            self._lookup((digest,)).add_done_callback(_quiet)

    def _lookup(self, candidates: tuple[str, ...]) -> asyncio.Future[Found]:
        STATS.lookups["database"] += 1
        task = asyncio.get_running_loop().create_task(self._read(candidates))
        entry = (self._generation, task)
        self._inflight[candidates] = entry

        def done(_task: object) -> None:
            if self._inflight.get(candidates) is entry:
                del self._inflight[candidates]

        task.add_done_callback(done)
        return task

    async def _read(self, candidates: tuple[str, ...]) -> Found:
        generation = self._generation
        found = await self._query(list(candidates))
        digest, record = found if found is not None else ("", None)
        if isinstance(record, KeyRecord):
            if self._ttl > 0 and generation == self._generation:
                self._remember(digest, record)
        elif generation == self._generation:  # none, or only a retired secret
            for candidate in candidates:  # a refresh found the key gone (no event seen)
                self._drop_hash(candidate)
        return found

    async def _query(self, hashes: list[str]) -> Found:
        if self._reader is not None and self._threads is not None:
            row, retired = await asyncio.get_running_loop().run_in_executor(
                self._threads, self._read_sync, hashes)
        else:
            async with self._engine.connect() as connection:
                row = (await connection.execute(lookup_query(hashes))).first()
                retired = None if row is not None else (
                    await connection.execute(_retired_query(hashes))).first()
        return _found(hashes, row, retired)

    def _read_sync(self, hashes: list[str]) -> tuple[Any, Any]:
        assert self._sqlite is not None and self._retired is not None
        row = self._sqlite.first(hashes)
        return row, None if row is not None else self._retired.first(hashes)

    def close(self) -> None:
        if self._on_loop is not None:
            self._on_loop.close()  # back to the pool, which dispose() closes
            self._on_loop = self._loop_db = None
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
        if self._reader is not None:
            self._reader.dispose()

    def _remember(self, digest: str, record: KeyRecord) -> None:
        self._cache[digest] = record
        self._cache.move_to_end(digest)
        self._cached_at[digest] = time.monotonic()
        hashes = self._hashes_of_key.get(record.id, ())
        if digest not in hashes:
            self._hashes_of_key[record.id] = (*hashes, digest)
        self._keys_of_owner.setdefault(record.owner_id, set()).add(record.id)
        while len(self._cache) > self._max:
            self._drop_hash(next(iter(self._cache)))

    def _drop_hash(self, digest: str) -> None:
        """Forget one cached hash, and its key and owner once no hash of theirs is left."""
        record = self._cache.pop(digest, None)
        if record is None:
            return
        del self._cached_at[digest]
        hashes = tuple(h for h in self._hashes_of_key.get(record.id, ()) if h != digest)
        if hashes:
            self._hashes_of_key[record.id] = hashes
            return
        self._hashes_of_key.pop(record.id, None)
        keys = self._keys_of_owner.get(record.owner_id)
        if keys is not None:
            keys.discard(record.id)
            if not keys:
                del self._keys_of_owner[record.owner_id]

    # --- invalidation --------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        if event.kind is Kind.KEY:
            self.forget_key(event.ref)
        elif event.kind is Kind.OWNER:
            for key_id in list(self._keys_of_owner.get(event.ref, ())):
                self.forget_key(key_id)
            self._generation += 1
        elif event.kind is Kind.ALL:
            self.clear()

    def on_health(self, healthy: bool) -> None:
        """While changes cannot be followed, cached answers live ``DEGRADED_TTL`` only."""
        self._max_age = self._ttl if healthy else min(self._ttl, DEGRADED_TTL)

    def forget_key(self, key_id: str) -> None:
        """The key changed (an event): drop it, and let no lookup begun before cache it."""
        self._generation += 1
        self.drop_key(key_id)

    def drop_key(self, key_id: str) -> None:
        """Drop the key's entries so its next use reads it again; nothing changed, so
        lookups under way stay shareable (a STALE re-read under a Keycloak outage must not
        turn every request into its own query)."""
        for digest in self._hashes_of_key.get(key_id, ()):
            self._drop_hash(digest)

    def clear(self) -> None:
        """Forget everything."""
        self._cache.clear()
        self._cached_at.clear()
        self._hashes_of_key.clear()
        self._keys_of_owner.clear()
        self._generation += 1

    def __len__(self) -> int:
        return len(self._cache)


def _found(hashes: list[str], row: Any, retired: Any) -> Found:
    """A lookup's rows as what they name."""
    if row is not None:
        record = record_from_row(row)
        matched = next(h for h in hashes
                       if h in (record.secret_hash, record.previous_secret_hash))
        return matched, record
    if retired is not None:
        return retired.secret_hash, RetiredSecret(
            retired.key_id, retired.owner_id, retired.generation, retired.status,
            retired.revoked_reason)
    return None


def _quiet(task: asyncio.Future[Found]) -> None:
    """A background refresh that failed (database away) leaves the entry to expire."""
    if not task.cancelled():
        task.exception()


def lookup_query(hashes: list[str]) -> sa.Select[Any]:
    return (
        sa.select(*_LOOKUP_COLUMNS)
        .select_from(api_keys.join(owners, owners.c.user_id == api_keys.c.owner_id))
        .where(
            sa.or_(
                api_keys.c.secret_hash.in_(hashes),
                api_keys.c.previous_secret_hash.in_(hashes),
            )
        )
    )



def _retired_query(hashes: list[str]) -> sa.Select[Any]:
    return (
        sa.select(retired_secrets.c.secret_hash, retired_secrets.c.key_id,
                  retired_secrets.c.generation, api_keys.c.owner_id, api_keys.c.status,
                  api_keys.c.revoked_reason)
        .select_from(retired_secrets.join(api_keys, api_keys.c.id == retired_secrets.c.key_id))
        .where(retired_secrets.c.secret_hash.in_(hashes))
    )
