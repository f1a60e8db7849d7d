"""Key lookup by hash with a short-lived in-process cache.

One indexed query (key joined with its owner) on a miss; nothing on a hit. The cache TTL bounds
how long another replica may keep answering from a record changed elsewhere; changes made in
this process clear it at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.identity.tables import owners
from apikm.keys.tables import api_keys
from apikm.verify.metrics import KEY_LOOKUPS
from apikm.verify.record import KeyRecord, record_from_row

_LOOKUP_COLUMNS = [
    api_keys.c.id, api_keys.c.public_id, api_keys.c.name, api_keys.c.status,
    api_keys.c.expires_at, api_keys.c.roles, api_keys.c.allowed_networks, api_keys.c.meta,
    api_keys.c.rate_limit, api_keys.c.secret_hash, api_keys.c.previous_secret_hash,
    api_keys.c.previous_secret_expires_at, api_keys.c.revoked_reason, api_keys.c.owner_id,
    owners.c.username, owners.c.email, owners.c.enabled, owners.c.roles.label("owner_roles"),
    owners.c.groups, owners.c.synced_at,
]


class KeyStore:
    def __init__(self, engine: AsyncEngine, ttl_seconds: float, max_entries: int = 50_000):
        self._engine = engine
        self._ttl = ttl_seconds
        self._max = max_entries
        self._cache: OrderedDict[str, tuple[float, KeyRecord]] = OrderedDict()
        # Bumped by clear(): a lookup that started before a change must not cache what it
        # read, or a just-revoked key could answer VALID for another TTL.
        self._generation = 0

    async def find(self, hashes: Iterable[str]) -> tuple[str, KeyRecord] | None:
        """(matching hash, record) for the first hash that names a key, else None."""
        candidates = list(hashes)
        now = time.monotonic()
        for digest in candidates:
            hit = self._cache.get(digest)
            if hit is not None and hit[0] > now:
                KEY_LOOKUPS.labels("cache").inc()
                return digest, hit[1]
        KEY_LOOKUPS.labels("database").inc()
        generation = self._generation
        found = await self._query(candidates)
        if found is not None and self._ttl > 0 and generation == self._generation:
            self._remember(found[0], found[1], now)
        return found

    async def _query(self, hashes: list[str]) -> tuple[str, KeyRecord] | None:
        query = (
            sa.select(*_LOOKUP_COLUMNS)
            .select_from(api_keys.join(owners, owners.c.user_id == api_keys.c.owner_id))
            .where(
                sa.or_(
                    api_keys.c.secret_hash.in_(hashes),
                    api_keys.c.previous_secret_hash.in_(hashes),
                )
            )
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        if row is None:
            return None
        record = record_from_row(row)
        matched = next(h for h in hashes if h in (record.secret_hash, record.previous_secret_hash))
        return matched, record

    def _remember(self, digest: str, record: KeyRecord, now: float) -> None:
        self._cache[digest] = (now + self._ttl, record)
        self._cache.move_to_end(digest)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    def clear(self) -> None:
        """Forget everything: called after any change to keys or owners in this process."""
        self._cache.clear()
        self._generation += 1
