"""Brute-force protection and per-key rate limits, on the ``limits`` library.

The check every request makes is a dict probe of blocked address groups: an address with no
recent failures costs nothing. Only failures are counted (a sliding-window counter: two
counters per address group, whatever the traffic), in memory or, shared by all replicas, in
Redis (``APIKM_RATE_LIMIT_STORAGE=redis://…``, the ``apikm[redis]`` extra). When a group
uses up its allowance it is blocked here and announced to every replica through the
change-event log, so a limit holds across replicas and workers, with or without Redis.

IPv6 clients are grouped by /64 (one host usually owns the whole /64); IPv4 by address.
With several replicas on PostgreSQL and no Redis, failures are counted in PostgreSQL instead
(``failure_counter.py``), so the count is shared exactly there too.

Per-key rate limits use the same sliding-window counter: O(1) time and memory per key. They
are shared across replicas through Redis; without it each replica enforces a key's limit
on its own.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import time
from collections.abc import Callable

from limits import RateLimitItem, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from apikm.verify.failure_counter import SharedFailureCounter

MAX_BLOCKED_ENTRIES = 100_000


class LimiterConfigError(RuntimeError):
    """The configured limiter storage cannot be used; the message says what to do."""


def async_storage(uri: str) -> object:
    """A ``limits`` async storage; Redis through redis-py (the ``apikm[redis]`` extra)."""
    uri = uri if uri.startswith("async+") else f"async+{uri}"
    options: dict[str, str] = {}
    if uri.startswith(("async+redis", "async+rediss")):
        options["implementation"] = "redispy"
    try:
        return storage_from_string(uri, **options)
    except ConfigurationError as exc:
        raise LimiterConfigError(
            f"APIKM_RATE_LIMIT_STORAGE cannot be used ({exc}); for Redis install the extra: "
            "pip install 'apikm[redis]'") from None


def preflight(storage_uri: str) -> None:
    """Before serving: the storage's client library is there and Redis answers."""
    async_storage(storage_uri)
    url = redis_url_of(storage_uri)
    if url is None:
        return
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as exc:
        raise LimiterConfigError(
            f"APIKM_RATE_LIMIT_STORAGE: Redis at {_without_password(url)} does not answer "
            f"({exc}); start it or correct the URL") from None


def _without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def redis_url_of(storage_uri: str) -> str | None:
    """The redis-py URL of a ``limits`` Redis storage URI, else None."""
    uri = storage_uri.removeprefix("async+")
    return uri if uri.startswith(("redis://", "rediss://")) else None


@functools.lru_cache(maxsize=65536)
def address_group(address: str) -> str:
    """What the failure limit counts: an IPv4 address, or the /64 of an IPv6 address."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return address


class Limiter:
    def __init__(self, failure_limit: str, storage_uri: str,
                 on_block: Callable[[str, float], None] = lambda _group, _until: None,
                 shared: SharedFailureCounter | None = None) -> None:
        self.storage = async_storage(storage_uri)
        self._strategy = SlidingWindowCounterRateLimiter(self.storage)  # type: ignore[arg-type]
        self._failures = parse(failure_limit)
        self._key_limits: dict[str, RateLimitItem] = {}
        self._blocked: dict[str, float] = {}  # address group -> blocked until (epoch)
        self._on_block = on_block
        self._shared = shared
        self._next_prune = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    async def check_storage(self) -> None:
        """Fail at start, with a clear message, when shared storage is unreachable."""
        try:
            ok = await self.storage.check()  # type: ignore[attr-defined]
        except Exception as exc:
            ok, detail = False, str(exc)
        else:
            detail = "no answer"
        if not ok:
            raise LimiterConfigError(
                f"APIKM_RATE_LIMIT_STORAGE is not reachable ({detail}): start Redis or fix "
                "the URL")

    def retry_after(self, group: str) -> int | None:
        """Seconds until ``group`` may try again, or None when it is not blocked."""
        until = self._blocked.get(group)
        if until is None:
            return None
        remaining = until - time.time()
        if remaining <= 0:
            self._blocked.pop(group, None)
            return None
        return int(remaining) + 1

    @property
    def failure_window(self) -> int:
        """Seconds of the failure limit's window."""
        return int(self._failures.get_expiry())

    def key_window(self, limit: str) -> int:
        """Seconds of a key's own limit's window (after ``allow_key_use`` parsed it)."""
        item = self._key_limits.get(limit)
        return int(item.get_expiry()) if item is not None else 0

    async def record_failure(self, group: str) -> bool:
        """Count a failure; True when it used up the group's allowance (blocked now)."""
        if self._shared is not None:
            count, reset = await self._shared.hit(group)
            exhausted = count >= self._failures.amount
            self._prune_now_and_then()
        else:
            await self._strategy.hit(self._failures, "fail", group)
            reset, remaining = await self._strategy.get_window_stats(self._failures, "fail",
                                                                     group)
            exhausted = remaining <= 0
        if exhausted:
            until = max(reset, time.time() + 1.0)
            self.block(group, until)
            self._on_block(group, until)
        return exhausted

    def _prune_now_and_then(self) -> None:
        now = time.time()
        if now >= self._next_prune and self._shared is not None:
            self._next_prune = now + 60
            task = asyncio.get_running_loop().create_task(self._shared.prune())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def block(self, group: str, until: float) -> None:
        """Blocked here until ``until``: from this replica's count or another's event."""
        if len(self._blocked) >= MAX_BLOCKED_ENTRIES:
            now = time.time()
            self._blocked = {g: u for g, u in self._blocked.items() if u > now}
        self._blocked[group] = max(until, self._blocked.get(group, 0.0))

    async def allow_key_use(self, key_id: str, limit: str) -> bool:
        """Consume one use of a key that has its own rate limit; False once it is spent."""
        item = self._key_limits.get(limit)
        if item is None:
            item = self._key_limits[limit] = parse(limit)
        return await self._strategy.hit(item, "key", key_id)

    async def key_retry_after(self, key_id: str, limit: str) -> int:
        reset, _ = await self._strategy.get_window_stats(self._key_limits[limit], "key", key_id)
        return max(1, int(reset - time.time()) + 1)
