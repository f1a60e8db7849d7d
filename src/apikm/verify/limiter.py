"""Brute-force protection and per-key rate limits, on the ``limits`` library.

Storage is in memory by default, or shared (``redis://``) across replicas through
``APIKM_RATE_LIMIT_STORAGE``.
"""

from __future__ import annotations

import time

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string


def async_storage_uri(uri: str) -> str:
    return uri if uri.startswith("async+") else f"async+{uri}"


class Limiter:
    def __init__(self, failure_limit: str, storage_uri: str) -> None:
        storage = storage_from_string(async_storage_uri(storage_uri))
        self._strategy = MovingWindowRateLimiter(storage)
        self._failures = parse(failure_limit)
        self._key_limits: dict[str, RateLimitItem] = {}

    async def is_blocked(self, address: str) -> bool:
        """Has this client address used up its allowance of failed verifications?"""
        return not await self._strategy.test(self._failures, "fail", address)

    async def record_failure(self, address: str) -> None:
        await self._strategy.hit(self._failures, "fail", address)

    async def failure_retry_after(self, address: str) -> int:
        reset, _remaining = await self._strategy.get_window_stats(self._failures, "fail", address)
        return _seconds_until(reset)

    async def allow_key_use(self, key_id: str, limit: str) -> bool:
        """Consume one use of a key that has its own rate limit; False once it is spent."""
        item = self._key_limits.get(limit)
        if item is None:
            item = self._key_limits[limit] = parse(limit)
        return await self._strategy.hit(item, "key", key_id)


def _seconds_until(reset: float) -> int:
    return max(1, int(reset - time.time()) + 1)
