"""The ``Authorization: Bearer <JWT>`` forward auth hands to upstreams, cached per key.

Minting on every request would put a signature (or, in keycloak mode, a round trip to
Keycloak) on the gateway's hot path. A token is reused for the first three quarters of its
life, and only while the facts it states about the key (effective roles, groups, identity,
expiry) are unchanged: a narrowed key or a renamed owner gets a fresh token at once.
Revocation needs no cache handling: forward auth verifies the key before every reuse.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable

from apikm.tokens.exchange import Minter
from apikm.verify.record import KeyRecord

REUSE_FRACTION = 0.75


def _fingerprint(record: KeyRecord) -> Hashable:
    return (record.effective_roles, record.owner_groups, record.username, record.email,
            record.expires_at)


class UpstreamTokens:
    def __init__(self, minter: Minter, max_entries: int = 10_000) -> None:
        self._minter = minter
        self._max = max_entries
        self._cache: OrderedDict[str, tuple[Hashable, float, str]] = OrderedDict()

    async def authorization_for(self, record: KeyRecord) -> str:
        """``Bearer <token>`` for the upstream request made with this key."""
        now = time.monotonic()
        fingerprint = _fingerprint(record)
        hit = self._cache.get(record.id)
        if hit is not None and hit[0] == fingerprint and hit[1] > now:
            return hit[2]
        issued = await self._minter.mint(record)
        value = f"Bearer {issued.access_token}"
        self._cache[record.id] = (fingerprint, now + issued.expires_in * REUSE_FRACTION, value)
        self._cache.move_to_end(record.id)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return value
