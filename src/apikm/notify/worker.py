"""The notification worker: one replica at a time (lease ``notifications``) turns audit
events and keys crossing an expiry threshold into outbox rows, and delivers due rows.

Exactly once, across restarts and replicas:

- audit events are read past a saved cursor (the highest id handled), and again over the
  last ``LATE_COMMIT`` seconds: on PostgreSQL ids are taken at insert but become visible at
  commit, so a lower id may appear after a higher one was read;
- expiry warnings are computed for the keys whose threshold fell in (last scan, now];
- either way, an outbox row is unique per (source, ref, channel, recipient), so whatever is
  read twice (a re-read window, a restart, a lease hand-over) is enqueued once;
- a due row is claimed (its next attempt pushed ahead) before it is delivered.

The worker runs on the event loop beside the server, with short queries and network calls
that never block it; the verification path neither waits for it nor writes for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.config import Settings
from apikm.db import utcnow, write_transaction
from apikm.encryption import EncryptionKeys
from apikm.identity import sync_store
from apikm.identity.sync import default_holder
from apikm.identity.tables import owners
from apikm.keys.format import key_hint
from apikm.keys.tables import api_keys, audit_events
from apikm.logs import Redactor
from apikm.notify import messages, outbox, preferences, rules, smtp, webhooks
from apikm.notify.outbox import Item
from apikm.notify.rules import Outcome
from apikm.notify.smtp import SmtpConfig
from apikm.notify.tables import notifications

log = structlog.get_logger(__name__)

LEASE_NAME = "notifications"
STATE_NAME = "notifications"
LATE_COMMIT = 120.0  # seconds an audit row may take between its insert and its commit
MAX_CATCH_UP = timedelta(days=7)  # expiry thresholds crossed while no worker ran
BATCH = 500
# The cursor is saved at most this often while nothing new is read: whatever a successor
# re-reads since the last save is enqueued once anyway.
SAVE_EVERY = 30.0
DELIVERY_BATCH = 20

LEADER = Gauge("apikm_notify_leader", "1 while this replica delivers notifications")
DELIVERIES = Counter("apikm_notify_deliveries_total", "Delivery attempts",
                     ["channel", "result"])


@dataclass(frozen=True)
class NotifyConfig:
    base_url: str
    key_prefix: str
    smtp: SmtpConfig | None
    sender: str
    admin_emails: tuple[str, ...] = ()
    thresholds: tuple[int, ...] = (30, 7, 1)
    interval: float = 2.0
    max_attempts: int = 8
    first_retry: float = 30.0
    webhook_timeout: float = 10.0
    lease_ttl: timedelta = timedelta(seconds=30)

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifyConfig:
        url = settings.smtp_url.get_secret_value() if settings.smtp_url else ""
        return cls(
            base_url=settings.base_url, key_prefix=settings.key_prefix,
            smtp=smtp.parse_smtp_url(url, settings.smtp_timeout_seconds) if url else None,
            sender=settings.smtp_from, admin_emails=tuple(settings.admin_emails),
            thresholds=tuple(settings.expiry_warning_days),
            interval=settings.notify_interval_seconds,
            max_attempts=settings.notify_max_attempts,
            first_retry=settings.notify_retry_seconds,
            webhook_timeout=settings.webhook_timeout_seconds)


class Deliverer:
    """Sends one outbox row by mail or webhook; knows nothing of retries."""

    def __init__(self, config: NotifyConfig, http: httpx.AsyncClient,
                 endpoints: webhooks.EndpointStore) -> None:
        self._config = config
        self._http = http
        self._endpoints = endpoints
        self.redactor = Redactor(config.key_prefix)

    async def deliver(self, row: Any) -> Outcome:
        try:
            if row.channel == "email":
                return await self._mail(row)
            return await self._webhook(row)
        except Exception as exc:  # a bug in one message must not stop the others
            log.error("notification delivery crashed", notification=row.id,
                      error_type=type(exc).__name__)
            return Outcome(False, error=f"internal error: {type(exc).__name__}")

    async def _mail(self, row: Any) -> Outcome:
        if self._config.smtp is None:
            return Outcome(False, error="no SMTP server configured (APIKM_SMTP_URL)",
                           permanent=True)
        mail = messages.render_mail(row.payload, row.audience, self._config.base_url,
                                    self.redactor)
        message = smtp.build_message(self._config.sender, row.recipient, mail.subject,
                                     mail.text)
        return await smtp.send(self._config.smtp, message)

    async def _webhook(self, row: Any) -> Outcome:
        endpoint = await self._endpoints.get(row.recipient, with_secret=True)
        if endpoint is None or not endpoint.enabled:
            return Outcome(False, error="endpoint deleted or disabled", permanent=True)
        body = messages.webhook_body(row.payload, self.redactor)
        return await webhooks.post(self._http, endpoint, f"msg_{row.id}", body,
                                   self._config.webhook_timeout)


class Notifier:
    def __init__(self, engine: AsyncEngine, config: NotifyConfig, http: httpx.AsyncClient,
                 encryption: EncryptionKeys, holder: str | None = None) -> None:
        self._engine = engine
        self.config = config
        self.endpoints = webhooks.EndpointStore(engine, encryption)
        self.deliverer = Deliverer(config, http, self.endpoints)
        self.holder = holder or default_holder()
        self.leading = False
        self._audit_cursor = 0
        self._expiry_since: datetime | None = None
        self._seen: dict[int, float] = {}  # audit ids enqueued -> when (monotonic)
        self._saved_at = float("-inf")
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notifications")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.leading:
            with contextlib.suppress(Exception):
                await sync_store.release_lease(self._engine, LEASE_NAME, self.holder)
        self.leading = False
        LEADER.set(0)

    async def _run(self) -> None:
        while True:
            try:
                if await sync_store.acquire_lease(self._engine, LEASE_NAME, self.holder,
                                                  self.config.lease_ttl):
                    if not self.leading:
                        await self._load_state()
                        self.leading = True
                        LEADER.set(1)
                        log.info("notifications: this replica delivers", holder=self.holder)
                    await self.run_round()
                elif self.leading:
                    self.leading = False
                    LEADER.set(0)
                    log.info("notifications: another replica delivers now")
            except Exception as exc:  # the database away, a bug: try again next round
                log.warning("notification round failed", error_type=type(exc).__name__,
                            error=str(exc)[:300])
            await asyncio.sleep(self.config.interval)

    async def run_round(self) -> None:
        if self._expiry_since is None:
            await self._load_state()
        await self.collect_audit()
        await self.collect_expiry()
        await self.deliver_due(time.monotonic() + self.config.lease_ttl.total_seconds() / 3)

    # --- cursor --------------------------------------------------------------------------------
    async def _load_state(self) -> None:
        now = utcnow()
        saved = await sync_store.load_state(self._engine, STATE_NAME) or {}
        cursor = saved.get("audit_id")
        if isinstance(cursor, int):
            self._audit_cursor = cursor
        else:  # first start ever: from the re-read window on, not the whole history
            async with self._engine.connect() as conn:
                self._audit_cursor = int(await conn.scalar(
                    sa.select(sa.func.coalesce(sa.func.max(audit_events.c.id), 0)).where(
                        audit_events.c.at <= now - timedelta(seconds=LATE_COMMIT))) or 0)
        since = saved.get("expiry_at")
        self._expiry_since = max(datetime.fromisoformat(since) if isinstance(since, str)
                                 else now, now - MAX_CATCH_UP)
        self._seen.clear()

    async def _save_state(self, now: bool = True) -> None:
        """``now`` False: only if the last save is old (the expiry scan's every round)."""
        assert self._expiry_since is not None
        if not now and time.monotonic() - self._saved_at < SAVE_EVERY:
            return
        await sync_store.save_state(self._engine, STATE_NAME, {
            "audit_id": self._audit_cursor, "expiry_at": self._expiry_since.isoformat()})
        self._saved_at = time.monotonic()

    # --- audit events --------------------------------------------------------------------------
    async def collect_audit(self) -> int:
        now, clock = utcnow(), time.monotonic()
        late = now - timedelta(seconds=LATE_COMMIT)
        base = (sa.select(audit_events, api_keys.c.name, api_keys.c.public_id,
                          api_keys.c.expires_at, api_keys.c.status, owners.c.username,
                          owners.c.email)
                .select_from(audit_events
                             .outerjoin(api_keys, api_keys.c.id == audit_events.c.key_id)
                             .outerjoin(owners, owners.c.user_id == audit_events.c.owner_id))
                .where(audit_events.c.action.in_(rules.AUDIT_EVENTS)))
        async with self._engine.connect() as conn:
            fresh = (await conn.execute(base.where(audit_events.c.id > self._audit_cursor)
                                        .order_by(audit_events.c.id).limit(BATCH))).all()
            recent = (await conn.execute(base.where(audit_events.c.id <= self._audit_cursor,
                                                    audit_events.c.at > late)
                                         .order_by(audit_events.c.id).limit(BATCH * 10))).all()
        rows = [r for r in (*recent, *fresh) if r.id not in self._seen]
        new = 0
        if rows:
            new = await self._enqueue_audit(rows, now)
        for row in rows:
            self._seen[row.id] = clock
        self._seen = {i: t for i, t in self._seen.items() if clock - t < LATE_COMMIT * 2}
        if fresh:
            self._audit_cursor = max(self._audit_cursor, fresh[-1].id)
            await self._save_state()
        return new

    async def _enqueue_audit(self, rows: list[Any], now: datetime) -> int:
        endpoints = await self.endpoints.list(enabled_only=True)
        items: list[Item] = []
        async with write_transaction(self._engine) as conn:
            prefs = await preferences.stored(conn, {r.owner_id for r in rows if r.owner_id})
            for row in rows:
                event = rules.AUDIT_EVENTS[row.action]
                payload = self._payload(event, f"audit:{row.id}", row.at, row, row.details,
                                        actor={"id": row.actor_id, "name": row.actor_name})
                mail_owner = rules.mail_owner(event, row.actor_id, row.owner_id,
                                              row.details or {})
                items += self._recipients("audit", str(row.id), event, payload, row,
                                          prefs if mail_owner else None, endpoints)
            return await outbox.enqueue(conn, items, now)

    # --- expiry --------------------------------------------------------------------------------
    async def collect_expiry(self) -> int:
        assert self._expiry_since is not None
        since, now = self._expiry_since, utcnow()
        windows = rules.crossing_windows(since, now, self.config.thresholds)
        query = (sa.select(api_keys.c.id.label("key_id"), api_keys.c.name, api_keys.c.public_id,
                           api_keys.c.expires_at, api_keys.c.created_at, api_keys.c.owner_id,
                           api_keys.c.status, owners.c.username, owners.c.email)
                 .select_from(api_keys.outerjoin(owners, owners.c.user_id == api_keys.c.owner_id))
                 .where(api_keys.c.status == "active",
                        sa.or_(*(sa.and_(api_keys.c.expires_at > low, api_keys.c.expires_at <= high)
                                 for low, high in windows))))
        async with self._engine.connect() as conn:
            keys = (await conn.execute(query)).all()
        new = 0
        due = [(k, d) for k in keys if (d := rules.crossed_threshold(
            k.expires_at, k.created_at, since, now, self.config.thresholds)) is not None]
        if due:
            new = await self._enqueue_expiry(due, now)
        self._expiry_since = now
        await self._save_state(now=bool(due))
        return new

    async def _enqueue_expiry(self, due: list[tuple[Any, int]], now: datetime) -> int:
        endpoints = await self.endpoints.list(enabled_only=True)
        items: list[Item] = []
        async with write_transaction(self._engine) as conn:
            prefs = await preferences.stored(conn, {k.owner_id for k, _ in due})
            for key, days in due:
                event = rules.EXPIRED if days == 0 else rules.EXPIRING
                ref = rules.expiry_ref(key.key_id, days, key.expires_at)
                payload = self._payload(event, f"expiry:{ref}", now, key, {}, actor=None)
                if days:
                    payload["days"] = days
                items += self._recipients("expiry", ref, event, payload, key, prefs, endpoints)
            return await outbox.enqueue(conn, items, now)

    # --- recipients ----------------------------------------------------------------------------
    def _payload(self, event: str, event_id: str, at: datetime, row: Any,
                 details: Mapping[str, Any] | None, actor: dict[str, str] | None
                 ) -> dict[str, Any]:
        key_id = getattr(row, "key_id", None)
        key = None
        if key_id and row.public_id:
            key = {"id": key_id, "public_id": row.public_id, "name": row.name,
                   "hint": key_hint(self.config.key_prefix, row.public_id),
                   "expires_at": row.expires_at.isoformat() if row.expires_at else None,
                   "status": row.status}  # as the worker read it, just after the event
        owner = {"id": row.owner_id, "username": row.username or row.owner_id} \
            if row.owner_id else None
        return {"type": event, "id": event_id, "at": at.isoformat(), "key": key,
                "owner": owner, "actor": actor, "details": rules.shown_details(details or {})}

    def _recipients(self, source: str, ref: str, event: str, payload: dict[str, Any],
                    row: Any, prefs: dict[str, dict[str, Any]] | None,
                    endpoints: list[webhooks.Endpoint]) -> list[Item]:
        """``prefs`` None: the owner gets no mail for this event."""
        common = {"source": source, "ref": ref, "event": event, "payload": payload,
                  "key_id": getattr(row, "key_id", None), "owner_id": row.owner_id}
        items = []
        if self.config.smtp is not None:
            if prefs is not None and row.email and row.owner_id:
                topics = rules.merged_topics(prefs.get(preferences.DEFAULTS),
                                             prefs.get(row.owner_id))
                if topics.get(rules.TOPIC_OF.get(event, ""), False):
                    items.append(Item(channel="email", recipient=row.email, audience="owner",
                                      **common))
            if rules.mail_admins(event):
                items += [Item(channel="email", recipient=address, audience="admin", **common)
                          for address in self.config.admin_emails]
        items += [Item(channel="webhook", recipient=e.id, audience="webhook", **common)
                  for e in endpoints if rules.webhook_wants(e.events, event)]
        return items

    # --- delivery ------------------------------------------------------------------------------
    async def deliver_due(self, deadline: float) -> int:
        hold = timedelta(seconds=self.config.lease_ttl.total_seconds())
        done = 0
        while time.monotonic() < deadline:
            rows = await outbox.claim_due(self._engine, DELIVERY_BATCH, hold)
            if not rows:
                break
            outcomes = await asyncio.gather(*(self.deliverer.deliver(r) for r in rows))
            for row, outcome in zip(rows, outcomes, strict=True):
                await self._record(row, outcome, self.config.max_attempts)
            done += len(rows)
        return done

    async def _record(self, row: Any, outcome: Outcome, max_attempts: int) -> str:
        status = await outbox.record(self._engine, row, outcome, max_attempts,
                                     self.config.first_retry)
        DELIVERIES.labels(row.channel, "ok" if outcome.ok else "error").inc()
        fields = {"notification": row.id, "channel": row.channel, "type": row.event,
                  "attempt": row.attempts + 1, "status": status}
        if outcome.ok:
            log.info("notification delivered", **fields)
        else:
            log.warning("notification not delivered", **fields, code=outcome.status_code,
                        error=self.deliverer.redactor.scrub(outcome.error))
        return status

    async def send_test(self, channel: str, recipient: str, actor: str) -> tuple[int, Outcome]:
        """Deliver a test notification now (one attempt, logged like any other)."""
        now = utcnow()
        ref = f"test:{uuid.uuid4()}"
        payload = {"type": rules.TEST, "id": ref, "at": now.isoformat(),
                   "key": None, "owner": None, "actor": {"id": actor, "name": actor},
                   "details": {}}
        item = Item(source="test", ref=ref, channel=channel, recipient=recipient,
                    audience="admin" if channel == "email" else "webhook", event=rules.TEST,
                    payload=payload)
        async with write_transaction(self._engine) as conn:
            # Due in an hour: the worker leaves it alone while this request delivers it.
            await outbox.enqueue(conn, [item], now, due=now + timedelta(hours=1))
            row = (await conn.execute(sa.select(notifications).where(
                notifications.c.source == "test", notifications.c.ref == item.ref))).one()
        outcome = await self.deliverer.deliver(row)
        await self._record(row, outcome, max_attempts=1)
        return row.id, outcome


def notifier_from_settings(settings: Settings, engine: AsyncEngine, http: httpx.AsyncClient,
                           encryption: EncryptionKeys) -> Notifier:
    return Notifier(engine, NotifyConfig.from_settings(settings), http, encryption)
