"""Bulk-load keys straight into a migrated database, with real peppered hashes, for the
key-count benchmarks: a million keys in well under a minute.

Keys are made from a seeded generator (fast, reproducible: the benchmark needs them back to
present them); their format, checksum and HMAC are exactly what apikm issues. Not for real
keys: those come from ``secrets`` in ``apikm.keys.format.generate_key``.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from apikm.identity.tables import owners
from apikm.keys.format import ALPHABET, PUBLIC_ID_LENGTH, SECRET_LENGTH, checksum
from apikm.keys.hashing import PepperRing
from apikm.keys.tables import api_keys

BATCH = 20_000


def seeded_keys(prefix: str, count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    keys = []
    for _ in range(count):
        head = prefix + "_" + "".join(rng.choices(ALPHABET, k=PUBLIC_ID_LENGTH + SECRET_LENGTH))
        keys.append(head + checksum(head))
    return keys


def load(sync_url: str, peppers: PepperRing, owner: dict[str, object], keys: list[str],
         progress: bool = True) -> None:
    """Insert ``keys`` (all owned by ``owner``: user_id, username, email, roles, groups)."""
    now = datetime.now(UTC)
    engine = sa.create_engine(sync_url)
    with engine.begin() as conn:
        conn.execute(sa.delete(owners).where(owners.c.user_id == owner["user_id"]))
        conn.execute(sa.insert(owners).values(
            enabled=True, synced_at=now, source="sync", **owner))
    for start in range(0, len(keys), BATCH):
        rows = [{
            "id": str(uuid.uuid4()), "owner_id": owner["user_id"], "name": f"bulk {n}",
            "description": "", "roles": ["analyst"], "allowed_networks": [], "meta": {},
            "rate_limit": None, "secret_hash": peppers.digest(key), "pepper_id": peppers.current_id,
            "status": "active", "expires_at": now + timedelta(days=30), "created_at": now,
            "created_by": owner["user_id"], "updated_at": now, "use_count": 0,
            "public_id": key.split("_", 1)[1][:PUBLIC_ID_LENGTH],
        } for n, key in enumerate(keys[start:start + BATCH], start)]
        with engine.begin() as conn:
            conn.execute(sa.insert(api_keys), rows)
        if progress:
            done = min(start + BATCH, len(keys))
            print(f"\r  loading keys: {done:,}/{len(keys):,}", end="", flush=True)
    if progress:
        print()
    engine.dispose()
