"""What verification noticed, kept in memory until the alert writer stores it.

Everything here is called on the verification path, so it only touches dicts: the per-request
call (``used``, on every VALID answer) is a dict probe and a set probe once the key's client
address is known, and everything else happens on the rare paths (a new address, a refused
key). Memory is bounded: the sets of known addresses and networks are a cache (forgetting
them costs an insert that finds the row there already), and pending events beyond
``MAX_PENDING`` of a kind are dropped and counted.

Deduplication: an alert of a kind is due once per mark (key, address or limit, and time
window). This replica remembers the marks it queued; the writer then inserts each mark into
``alert_marks`` and writes the alert only if its insert succeeded, so replicas never write
the same alert twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from apikm.alerts.networks import canonical_address, network_of

MAX_KNOWN = 200_000  # known (key, address) and (key, network) pairs kept to skip inserts
MAX_PENDING = 10_000  # events of one kind waiting for the writer
MAX_MARKS = 50_000  # dedupe marks remembered in memory
REUSE_WINDOW = 3600  # one secret_reuse alert per key and address per hour
MIN_TRIP_WINDOW = 3600  # one limit_tripped alert per key and limit per hour at most


@dataclass(frozen=True)
class NetworkUse:
    key_id: str
    network: str
    address: str
    at: float  # epoch seconds


@dataclass(frozen=True)
class SecretReuse:
    key_id: str
    owner_id: str
    generation: int
    address: str | None
    at: float
    mark: str
    until: float


@dataclass(frozen=True)
class LimitTrip:
    key_id: str
    owner_id: str
    limit: str  # "key_rate" | "failures"
    address: str | None
    at: float
    mark: str
    until: float


@dataclass
class Batch:
    networks: list[NetworkUse] = field(default_factory=list)
    reuses: list[SecretReuse] = field(default_factory=list)
    trips: list[LimitTrip] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.networks or self.reuses or self.trips)


class AlertFeed:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._addresses: dict[str, set[str | None]] = {}  # key id -> addresses seen
        self._networks: dict[str, set[str]] = {}  # key id -> networks seen or queued
        self._known = 0
        self._uses: dict[tuple[str, str], NetworkUse] = {}
        self._reuses: dict[str, SecretReuse] = {}
        self._trips: dict[str, LimitTrip] = {}
        self._marks: dict[str, float] = {}  # mark -> end of its window (epoch seconds)
        self.dropped = 0
        # Called when something should be written soon (a reused secret may revoke a key).
        self.urgent: Callable[[], None] = lambda: None

    # --- the verification path ----------------------------------------------------------
    def used(self, key_id: str, address: str | None, at: float) -> None:
        """A VALID use: dict and set probes, unless this address is new for the key."""
        known = self._addresses.get(key_id)
        if known is None or address not in known:
            self._new_address(key_id, address, at)

    def _new_address(self, key_id: str, address: str | None, at: float) -> None:
        if self._known >= MAX_KNOWN:
            self._addresses.clear()
            self._networks.clear()
            self._known = 0
        self._addresses.setdefault(key_id, set()).add(address)
        self._known += 1
        network = network_of(address)
        if network is None or address is None:
            return
        networks = self._networks.setdefault(key_id, set())
        if network in networks:
            return
        networks.add(network)
        self._known += 1
        if len(self._uses) >= MAX_PENDING:
            self.dropped += 1
            return
        self._uses[(key_id, network)] = NetworkUse(key_id, network, canonical_address(address)
                                                   or address, at)

    def secret_reused(self, key_id: str, owner_id: str, generation: int, address: str | None,
                      at: float) -> None:
        """A retired secret presented after its overlap: once per key, address and hour."""
        shown = canonical_address(address)
        window = int(at // REUSE_WINDOW)
        mark = f"secret_reuse:{key_id}:{shown or '-'}:{window}"
        until = (window + 1) * REUSE_WINDOW
        if self._seen(mark, until) or self._full(self._reuses):
            return
        self._reuses[mark] = SecretReuse(key_id, owner_id, generation, shown, at, mark, until)
        self.urgent()

    def limit_tripped(self, key_id: str, owner_id: str, limit: str, address: str | None,
                      at: float, window_seconds: float) -> None:
        """The key's own rate limit refused it, or its failures blocked the address: once per
        key and limit per window (the limit's own window, an hour at least)."""
        span = max(int(window_seconds), MIN_TRIP_WINDOW)
        window = int(at // span)
        mark = f"limit_tripped:{key_id}:{limit}:{span}:{window}"
        if self._seen(mark, (window + 1) * span) or self._full(self._trips):
            return
        self._trips[mark] = LimitTrip(key_id, owner_id, limit, canonical_address(address), at,
                                      mark, (window + 1) * span)

    def _seen(self, mark: str, until: float) -> bool:
        if mark in self._marks:
            return True
        if len(self._marks) >= MAX_MARKS:
            now = self._clock()
            self._marks = {m: u for m, u in self._marks.items() if u > now}
            if len(self._marks) >= MAX_MARKS:
                self._marks.clear()
        self._marks[mark] = until
        return False

    def _full(self, pending: dict[str, SecretReuse] | dict[str, LimitTrip]) -> bool:
        if len(pending) >= MAX_PENDING:
            self.dropped += 1
            return True
        return False

    # --- the writer's side --------------------------------------------------------------
    def take(self) -> Batch:
        """Everything pending, handed over (the feed starts empty again)."""
        batch = Batch(list(self._uses.values()), list(self._reuses.values()),
                      list(self._trips.values()))
        self._uses, self._reuses, self._trips = {}, {}, {}
        return batch

    def give_back(self, batch: Batch) -> None:
        """A batch that could not be written: pending again, for the next flush."""
        for use in batch.networks:
            self._uses.setdefault((use.key_id, use.network), use)
        for reuse in batch.reuses:
            self._reuses.setdefault(reuse.mark, reuse)
        for trip in batch.trips:
            self._trips.setdefault(trip.mark, trip)
