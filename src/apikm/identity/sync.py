"""The sync worker: keeps every key owner's enabled flag, effective roles and groups in step
with Keycloak, and suspends, reactivates or revokes their keys accordingly.

Two loops run in the replica that holds the leader lease:

- the fast path polls admin events and a few user events every ``event_interval`` seconds
  (``EventCursor`` makes sure none is missed or handled twice) and re-reads each user an
  event names; changes to groups, roles or clients that touch many users start a full pass;
  it also re-reads the owners of new keys (a key may name a client whose roles were not
  read for that owner yet) and disabled owners whose grace period just ended;
- the full pass re-reads every owner of a live key every ``full_pass_every`` seconds, with
  bounded concurrency, because events can be missed (LDAP, lockouts, events disabled).

Keycloak being away never stops verification: it keeps answering from the last synced state
until ``APIKM_MAX_STALENESS``; the loops retry with backoff and catch up by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.cluster.events import Kind
from apikm.config import Settings
from apikm.db import utcnow
from apikm.identity import sync_store as store
from apikm.identity.admin_client import (
    AdminCredentials,
    KeycloakAdmin,
    KeycloakBadAnswer,
    KeycloakError,
    KeycloakRefused,
    KeycloakUnavailable,
)
from apikm.identity.sync_rules import (
    USER_EVENT_TYPES,
    Backoff,
    Event,
    EventCursor,
    admin_event,
    clients_of,
    user_event,
)

log = structlog.get_logger(__name__)

LEASE_NAME = "keycloak-sync"
CONFIRM_BATCH = 200  # owners confirmed unchanged, written in one statement
HEALTH_STATE = "health"

SYNC_LAST_SUCCESS = Gauge("apikm_sync_last_success_timestamp_seconds",
                          "When the sync last completed a round with Keycloak (Unix time)")
SYNC_LAG = Gauge("apikm_sync_lag_seconds",
                 "Seconds since the sync last completed a round with Keycloak")
SYNC_LEADER = Gauge("apikm_sync_leader", "1 while this replica runs the sync")
SYNC_ERRORS = Counter("apikm_sync_errors_total", "Failed sync rounds", ["stage"])
SYNC_FULL_PASS_SECONDS = Gauge("apikm_sync_full_pass_seconds", "Duration of the last full pass")
SYNC_FULL_PASS_OWNERS = Gauge("apikm_sync_full_pass_owners", "Owners read by the last full pass")
SYNC_OWNER_READS = Counter("apikm_sync_owner_reads_total", "Owners read from Keycloak",
                           ["trigger"])
SYNC_EVENTS = Counter("apikm_sync_events_total", "Keycloak events handled", ["stream"])
SYNC_KEY_CHANGES = Counter("apikm_sync_key_changes_total", "Keys changed by the sync",
                           ["action"])

_RETRYABLE = (KeycloakError, SQLAlchemyError, OSError)


class LeaseLost(Exception):
    """Another replica leads now (or the database would not renew our lease)."""


class LeaseHeld(Exception):
    """``run_once`` found another replica syncing."""


@dataclass(frozen=True)
class SyncConfig:
    full_pass_every: float | None = 300.0  # None: no periodic pass (APIKM_KEYCLOAK_SYNC_FREQ=-1)
    event_interval: float = 1.0
    concurrency: int = 8
    grace: timedelta = timedelta(hours=24)
    follow_events: bool = True
    lease_ttl: timedelta = timedelta(seconds=15)
    # Re-read window for events committed after younger ones (see EventCursor).
    event_overlap_ms: int = 10_000
    page_size: int = 200
    max_events_per_poll: int = 5_000
    permission_retry: float = 60.0


@dataclass(frozen=True)
class PassReport:
    owners: int
    changed: int
    failed: int
    seconds: float


@dataclass
class SyncHealth:
    state: str = "starting"  # starting | leader | standby | failing | stopped
    holder: str = ""
    last_success_at: datetime | None = None
    last_full_pass_at: datetime | None = None
    last_full_pass_seconds: float | None = None
    last_full_pass_owners: int | None = None
    consecutive_errors: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        now = utcnow()
        return {
            "state": self.state,
            "leader": self.holder or None,
            "last_success_at": _iso(self.last_success_at),
            "lag_seconds": round((now - self.last_success_at).total_seconds(), 3)
            if self.last_success_at else None,
            "last_full_pass_at": _iso(self.last_full_pass_at),
            "last_full_pass_seconds": self.last_full_pass_seconds,
            "last_full_pass_owners": self.last_full_pass_owners,
            "consecutive_errors": self.consecutive_errors,
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse_time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class _Stream:
    """One kind of Keycloak event the fast path follows."""

    name: str
    fetch: Callable[[int, int, int], Awaitable[list[dict[str, Any]]]]
    parse: Callable[[dict[str, Any]], Event | None]


class _KeyedLock:
    """One lock per user: an event and the full pass never interleave read and write of the
    same owner, so an older read can never overwrite a newer one."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class SyncWorker:
    def __init__(self, engine: AsyncEngine, admin: KeycloakAdmin, config: SyncConfig,
                 on_change: Callable[[Kind, str], None] = lambda _k, _r: None,
                 holder: str | None = None) -> None:
        self._engine = engine
        self._admin = admin
        self._config = config
        self._on_change = on_change  # this replica's cache; others follow the event
        self.holder = holder or default_holder()
        self.health = SyncHealth()
        self._locks = _KeyedLock()
        self._cursors: dict[str, EventCursor] = {}
        self._full_pass_wanted = asyncio.Event()
        self._confirmations: list[tuple[str, datetime, datetime | None]] = []
        self._task: asyncio.Task[None] | None = None
        keycloak_streams = [
            _Stream("admin_events", admin.admin_events, admin_event),
            _Stream("user_events",
                    lambda since, first, size: admin.user_events(USER_EVENT_TYPES, since,
                                                                  first, size),
                    user_event),
        ]
        # New keys, possibly made on another replica: their owner is read at once, as the
        # key may name a client whose roles the last read of that owner did not cover.
        new_keys = _Stream("new_keys", lambda since, first, size: store.keys_created_since(
            engine, since, first, size), user_event)
        self._streams = [*(keycloak_streams if config.follow_events else []), new_keys]

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        SYNC_LAG.set_function(self._lag_seconds)
        self._task = asyncio.create_task(self._run(), name="keycloak-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.health.state in ("leader", "failing"):
            with contextlib.suppress(*_RETRYABLE):
                await store.release_lease(self._engine, LEASE_NAME, self.holder)
        await self._admin.aclose()
        self.health.state = "stopped"
        SYNC_LEADER.set(0)

    def _lag_seconds(self) -> float:
        last = self.health.last_success_at
        return (utcnow() - last).total_seconds() if last else float("nan")

    async def _run(self) -> None:
        renew_every = self._config.lease_ttl.total_seconds() / 3
        while True:
            try:
                if await store.acquire_lease(self._engine, LEASE_NAME, self.holder,
                                             self._config.lease_ttl):
                    await self._lead()
                else:
                    await self._stand_by()
            except* LeaseLost:
                log.warning("sync leadership lost", holder=self.holder)
            except* _RETRYABLE as group:
                self._record_error("lease", group.exceptions[0])
            except* Exception as group:  # a bug must not end syncing for good
                log.error("sync crashed; restarting", exc_info=group.exceptions[0])
                self._record_error("internal", group.exceptions[0])
            SYNC_LEADER.set(0)
            await asyncio.sleep(renew_every)

    async def _stand_by(self) -> None:
        if self.health.state != "standby":
            log.info("sync standing by; another replica leads")
        self.health.state = "standby"
        current = await store.lease_holder(self._engine, LEASE_NAME)
        self.health.holder = current[0] if current else ""

    async def _lead(self) -> None:
        log.info("sync leading", holder=self.holder)
        self.health.state, self.health.holder = "leader", self.holder
        SYNC_LEADER.set(1)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._keep_lease())
            group.create_task(self._work())

    async def _keep_lease(self) -> None:
        ttl = self._config.lease_ttl
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(ttl.total_seconds() / 3)
            try:
                if not await store.acquire_lease(self._engine, LEASE_NAME, self.holder, ttl):
                    raise LeaseLost
                renewed = time.monotonic()
                await store.save_state(self._engine, HEALTH_STATE, self.health.to_json())
            except _RETRYABLE as exc:
                self._record_error("lease", exc)
                if time.monotonic() - renewed > ttl.total_seconds() * 2 / 3:
                    raise LeaseLost from exc  # others may take over soon: stop first

    async def _work(self) -> None:
        await self._until_permitted()
        await self._start_cursors()
        self._full_pass_wanted.set()  # a new leader confirms everyone at once
        async with asyncio.TaskGroup() as group:
            group.create_task(self._event_loop())
            group.create_task(self._full_pass_loop())

    async def _until_permitted(self) -> None:
        backoff = Backoff(maximum=self._config.permission_retry)
        while True:
            try:
                await self._admin.check_permissions()
                return
            except KeycloakRefused as exc:
                self._record_error("permissions", exc)
                await asyncio.sleep(self._config.permission_retry)
            except _RETRYABLE as exc:
                self._record_error("permissions", exc)
                await asyncio.sleep(backoff.next_delay())

    # --- fast path -----------------------------------------------------------------------
    async def _event_loop(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self.check_due_revocations()
                await self.poll_events()
                if self._config.follow_events:
                    self._record_success()  # Keycloak answered this round
                if backoff.failures:  # recovered: confirm everyone now, not in minutes
                    self._full_pass_wanted.set()
                backoff.reset()
                delay = self._config.event_interval
            except _RETRYABLE as exc:
                self._record_error("events", exc)
                delay = backoff.next_delay()
            await asyncio.sleep(delay)

    async def _start_cursors(self) -> None:
        """Resume saved cursors, but skip any backlog older than now: the full pass that a
        new leader runs first covers it."""
        floor = int(time.time() * 1000) - self._config.event_overlap_ms
        for stream in self._streams:
            saved = await store.load_state(self._engine, stream.name)
            cursor = EventCursor(floor)
            if saved is not None:
                with contextlib.suppress(ValueError):
                    cursor = EventCursor.from_json(saved)
            if cursor.time_ms < floor:
                cursor = EventCursor(floor, {})
            self._cursors[stream.name] = cursor

    async def poll_events(self) -> int:
        """Handle new events of every stream; returns how many were new."""
        if not self._cursors:
            await self._start_cursors()
        handled = 0
        for stream in self._streams:
            handled += await self._poll_stream(stream)
        return handled

    async def _poll_stream(self, stream: _Stream) -> int:
        cursor = self._cursors[stream.name]
        rows = await self._fetch_events(stream, cursor.query_from(self._config.event_overlap_ms))
        fresh = cursor.unseen(e for e in map(stream.parse, rows) if e is not None)
        if len(rows) >= self._config.max_events_per_poll and not fresh:
            # A window full of events already handled: jump past it, let a full pass cover.
            newest = max((r["time"] for r in rows if isinstance(r.get("time"), int)),
                         default=cursor.time_ms)
            self._cursors[stream.name] = EventCursor(newest + 1)
            self._full_pass_wanted.set()
            return 0
        if not fresh:
            return 0
        await self._handle_events(fresh)
        advanced = cursor.advanced(fresh, self._config.event_overlap_ms)
        await store.save_state(self._engine, stream.name, advanced.to_json())
        self._cursors[stream.name] = advanced
        SYNC_EVENTS.labels(stream.name).inc(len(fresh))
        return len(fresh)

    async def _fetch_events(self, stream: _Stream, since_ms: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        size = self._config.page_size
        while len(rows) < self._config.max_events_per_poll:
            page = await stream.fetch(since_ms, len(rows), size)
            rows.extend(page)
            if len(page) < size:
                break
        return rows

    async def _handle_events(self, events: Sequence[Event]) -> None:
        if any(e.touches_everyone for e in events):
            self._admin.forget_clients()
            self._full_pass_wanted.set()
        users = await store.with_live_keys(self._engine,
                                           (e.user_id for e in events if e.user_id))
        await self._sync_many(sorted(users), "event")

    async def check_due_revocations(self) -> None:
        """Owners disabled for longer than the grace period: confirm with Keycloak now."""
        due = await store.revocations_due(self._engine, self._config.grace)
        await self._sync_many(due, "grace")

    # --- full pass -----------------------------------------------------------------------
    async def _full_pass_loop(self) -> None:
        backoff = Backoff()
        delay: float | None = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full_pass_wanted.wait(), timeout=delay)
            self._full_pass_wanted.clear()
            try:
                await self.full_pass()
                backoff.reset()
                delay = self._config.full_pass_every
            except _RETRYABLE as exc:
                self._record_error("full_pass", exc)
                delay = backoff.next_delay()

    async def full_pass(self) -> PassReport:
        """Re-read every owner of a live key from Keycloak."""
        started, started_at = time.monotonic(), utcnow()
        snapshot = await store.full_pass_snapshot(self._engine)
        try:
            changed, failed = await self._sync_many(snapshot, "full_pass", tolerate=True,
                                                    snapshot=snapshot)
        finally:
            await self._flush_confirmations()
        report = PassReport(len(snapshot), changed, failed, time.monotonic() - started)
        SYNC_FULL_PASS_SECONDS.set(report.seconds)
        SYNC_FULL_PASS_OWNERS.set(report.owners)
        self.health.last_full_pass_at = started_at
        self.health.last_full_pass_seconds = round(report.seconds, 3)
        self.health.last_full_pass_owners = report.owners
        self._record_success()
        await store.save_state(self._engine, HEALTH_STATE, self.health.to_json())
        log.info("sync full pass", owners=report.owners, changed=report.changed,
                 failed=report.failed, seconds=round(report.seconds, 3))
        return report

    async def _sync_many(self, user_ids: Iterable[str], trigger: str, tolerate: bool = False,
                         snapshot: Mapping[str, store.OwnerSnapshot] | None = None
                         ) -> tuple[int, int]:
        """Sync owners with bounded concurrency; returns (changed, failed).

        Keycloak being unreachable aborts at once (retry later, as a whole); a malformed
        answer about one user is always counted and skipped (the next full pass reads that
        user again); other errors about one user are counted and skipped when ``tolerate``.
        """
        queue: asyncio.Queue[str] = asyncio.Queue()
        for user_id in user_ids:
            queue.put_nowait(user_id)
        counts = {"changed": 0, "failed": 0}

        async def worker() -> None:
            while not queue.empty():
                user_id = queue.get_nowait()
                try:
                    known = snapshot.get(user_id) if snapshot is not None else None
                    if await self.sync_owner(user_id, trigger, known):
                        counts["changed"] += 1
                except (KeycloakUnavailable, KeycloakRefused):
                    raise
                except KeycloakBadAnswer as exc:
                    counts["failed"] += 1
                    log.warning("Keycloak's answer about one owner is unreadable; skipped",
                                user_id=user_id, error=str(exc))
                except _RETRYABLE as exc:
                    if not tolerate:
                        raise
                    counts["failed"] += 1
                    log.warning("sync of one owner failed", user_id=user_id, error=str(exc))

        workers = min(self._config.concurrency, queue.qsize())
        if workers:
            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(workers):
                        group.create_task(worker())
            except* _RETRYABLE as errors:
                raise errors.exceptions[0] from None
        return counts["changed"], counts["failed"]

    async def sync_owner(self, user_id: str, trigger: str = "manual",
                         known: store.OwnerSnapshot | None = None) -> bool:
        """Read one owner from Keycloak and apply it; True if anything changed.

        ``known``: the full pass's snapshot of the owner; when Keycloak confirms it, only
        the confirmation time is written, batched with other owners.
        """
        granted: Iterable[str] | None = known.granted if known is not None else None
        async with self._locks.hold(user_id):
            for _attempt in range(3):
                if granted is None:
                    granted = await store.granted_roles(self._engine, user_id)
                clients = clients_of(granted)
                read_at = utcnow()
                observed = await self._admin.user(user_id, clients)
                SYNC_OWNER_READS.labels(trigger).inc()
                if known is not None and known.confirmed_by(observed):
                    await self._confirm(user_id, read_at, known.synced_at)
                    return False
                change = await store.reconcile_owner(self._engine, user_id, observed, clients,
                                                     read_at, self._config.grace)
                if not change.retry:
                    break
                granted, known = None, None  # a key with another client appeared: reread
        for action, keys in (("suspend", change.suspended), ("reactivate", change.reactivated),
                             ("revoke", change.revoked)):
            if keys:
                SYNC_KEY_CHANGES.labels(action).inc(len(keys))
                log.info(f"sync {action}", user_id=user_id, keys=keys, trigger=trigger)
        if change.changed:
            self._on_change(Kind.OWNER, user_id)
        return change.changed

    async def _confirm(self, user_id: str, read_at: datetime,
                       known_synced_at: datetime | None) -> None:
        self._confirmations.append((user_id, read_at, known_synced_at))
        if len(self._confirmations) >= CONFIRM_BATCH:
            await self._flush_confirmations()

    async def _flush_confirmations(self) -> None:
        batch, self._confirmations = self._confirmations, []
        await store.confirm_owners(self._engine, batch)

    # --- one-shot (cron) -----------------------------------------------------------------
    async def run_once(self) -> PassReport:
        """``apikm sync --once``: one full pass (it covers whatever events would say)."""
        if not await store.acquire_lease(self._engine, LEASE_NAME, self.holder,
                                         self._config.lease_ttl):
            current = await store.lease_holder(self._engine, LEASE_NAME)
            raise LeaseHeld(current[0] if current else "another replica")
        renewal = asyncio.create_task(self._keep_lease())
        try:
            await self._admin.check_permissions()
            return await self.full_pass()
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError, LeaseLost):
                await renewal
            await store.release_lease(self._engine, LEASE_NAME, self.holder)

    # --- health --------------------------------------------------------------------------
    def _record_success(self) -> None:
        now = utcnow()
        if self.health.consecutive_errors:
            log.info("sync recovered", after_errors=self.health.consecutive_errors)
        self.health.last_success_at = now
        self.health.consecutive_errors = 0
        if self.health.state == "failing":
            self.health.state = "leader"
        SYNC_LAST_SUCCESS.set(now.timestamp())

    def _record_error(self, stage: str, exc: BaseException) -> None:
        self.health.consecutive_errors += 1
        self.health.last_error = f"{stage}: {exc}" if str(exc) else f"{stage}: {exc!r}"
        self.health.last_error_at = utcnow()
        if self.health.state == "leader":
            self.health.state = "failing"
        SYNC_ERRORS.labels(stage).inc()
        log.warning("sync error", stage=stage, error=self.health.last_error,
                    consecutive=self.health.consecutive_errors)

    async def report(self) -> dict[str, Any]:
        """Health for ``/readyz``: our own when leading, the leader's (saved) otherwise."""
        if self.health.state != "standby":
            return self.health.to_json()
        body = self.health.to_json()
        with contextlib.suppress(*_RETRYABLE):
            saved = await store.load_state(self._engine, HEALTH_STATE)
            if saved:
                last = _parse_time(saved.get("last_success_at"))
                body.update({k: saved.get(k) for k in (
                    "last_success_at", "last_full_pass_at", "last_full_pass_seconds",
                    "last_full_pass_owners", "consecutive_errors", "last_error")})
                body["lag_seconds"] = round((utcnow() - last).total_seconds(), 3) \
                    if last else None
        return body


def sync_disabled_reason(settings: Settings) -> str | None:
    if not settings.sync_enabled:
        return "APIKM_SYNC_ENABLED is false"
    if settings.oidc_client_secret is None:
        return "APIKM_OIDC_CLIENT_SECRET is not set (the sync uses its service account)"
    return None


def worker_from_settings(settings: Settings, engine: AsyncEngine,
                         on_change: Callable[[Kind, str], None]) -> SyncWorker | None:
    """The sync worker ``apikm serve`` runs, or None (``sync_disabled_reason`` says why)."""
    if sync_disabled_reason(settings) is not None or settings.oidc_client_secret is None:
        return None
    admin = KeycloakAdmin(AdminCredentials(
        base_url=settings.effective_keycloak_admin_url, realm=settings.keycloak_realm,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret.get_secret_value()),
        max_connections=settings.sync_concurrency, attributes=settings.oauth2_attributes)
    config = SyncConfig(
        full_pass_every=float(settings.keycloak_sync_freq)
        if settings.keycloak_sync_freq > 0 else None,
        event_interval=settings.sync_event_interval,
        concurrency=settings.sync_concurrency,
        grace=settings.revoke_disabled_after,
        follow_events=settings.sync_follow_events,
    )
    return SyncWorker(engine, admin, config, on_change)


def start_or_explain(worker: SyncWorker | None, settings: Settings) -> None:
    """Start the worker in ``apikm serve``; without one, say in the log why there is none."""
    if worker is not None:
        worker.start()
    else:
        log.warning("Keycloak sync is off: owners are refreshed only by their own tokens",
                    reason=sync_disabled_reason(settings))
