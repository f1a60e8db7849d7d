"""Everything a request handler needs, built once at start-up (no per-request injection)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from limits import parse as parse_rate_limit
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.alerts.feed import AlertFeed
from apikm.alerts.writer import AlertWriter
from apikm.cluster.bus import EventBus, postgres_channel, redis_channel
from apikm.cluster.events import Event, Kind
from apikm.compat.legacy_keys import imported_keys_exist, on_import_event
from apikm.config import ConfigError, Settings
from apikm.db import create_engine, create_sqlite_reader
from apikm.encryption import encryption_keys
from apikm.identity.sync import SyncWorker, worker_from_settings
from apikm.identity.tokens import TokenValidator
from apikm.keys.hashing import PepperRing, load_or_create_pepper_file, parse_peppers
from apikm.keys.policy import LifetimePolicy
from apikm.keys.service import KeyPolicy, KeyService
from apikm.notify.worker import Notifier, notifier_from_settings
from apikm.verify.failure_counter import SharedFailureCounter
from apikm.verify.limiter import Limiter, redis_url_of
from apikm.verify.store import KeyStore
from apikm.verify.usage import UsageRecorder
from apikm.verify.verifier import Verifier
from apikm.web.clientip import ClientAddressResolver


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    http: httpx.AsyncClient
    tokens: TokenValidator
    keys: KeyService
    verifier: Verifier
    usage: UsageRecorder
    addresses: ClientAddressResolver
    bus: EventBus
    alerts: AlertWriter
    sync: SyncWorker | None = None  # None: sync off (see the log line at start)
    # Mails and webhooks; its worker runs only with APIKM_NOTIFY_ENABLED (admins may still
    # send test notifications from any replica).
    notifier: Notifier | None = None

    async def start(self) -> None:
        await self.verifier.limiter.check_storage()
        self.verifier.legacy_keys = await imported_keys_exist(self.engine)
        await self.bus.start()
        self.usage.start()
        self.alerts.start()
        if self.notifier is not None and self.settings.notify_enabled:
            self.notifier.start()

    async def close(self) -> None:
        if self.sync is not None:
            await self.sync.stop()
        if self.notifier is not None:
            await self.notifier.stop()
        await self.bus.stop()
        await self.usage.stop()
        await self.alerts.stop()
        await self.http.aclose()
        self.verifier.store.close()
        await self.engine.dispose()


def pepper_ring(settings: Settings) -> PepperRing:
    if settings.peppers is not None:
        return parse_peppers(settings.peppers.get_secret_value())
    if not settings.effective_database_url.startswith("sqlite"):
        # Each replica would invent its own pepper: keys made on one would fail on another.
        raise ConfigError(
            "APIKM_PEPPERS is not set. With a shared database (PostgreSQL) every replica "
            "must hash keys with the same pepper: set APIKM_PEPPERS to 'p1:<32+ random "
            "characters>' (e.g. python3 -c 'import secrets; print(\"p1:\" + "
            "secrets.token_urlsafe(32))') from your secret store, the same on every replica.")
    return load_or_create_pepper_file(settings.data_dir / "pepper")


def build_bus(engine: AsyncEngine, settings: Settings) -> EventBus:
    channels = []
    if engine.dialect.name == "postgresql":
        channels.append(postgres_channel(engine))
    redis_url = redis_url_of(settings.rate_limit_storage)
    if redis_url is not None:
        channels.append(redis_channel(redis_url))
    return EventBus(engine, channels)


def build_limiter(settings: Settings, bus: EventBus, engine: AsyncEngine) -> Limiter:
    """Blocks are announced to every replica (and taken from them) through the bus.
    Failures are counted in Redis when configured, else in the database when it is shared
    (PostgreSQL, or several workers on one SQLite file), else in memory."""
    tasks: set[asyncio.Task[None]] = set()

    def announce(group: str, until: float) -> None:
        event = Event(Kind.BLOCK, group, datetime.fromtimestamp(until, UTC))
        task = asyncio.get_running_loop().create_task(bus.publish(event))
        tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(tasks.discard)

    shared = None
    shared_database = engine.dialect.name == "postgresql" or settings.workers > 1
    if shared_database and redis_url_of(settings.rate_limit_storage) is None:
        window = int(parse_rate_limit(settings.rate_limit).get_expiry())
        shared = SharedFailureCounter(engine, window)
    limiter = Limiter(settings.rate_limit, settings.rate_limit_storage, on_block=announce,
                      shared=shared)

    def take_block(event: Event) -> None:
        if event.kind is Kind.BLOCK and event.until is not None:
            limiter.block(event.ref, event.until.timestamp())

    bus.subscribe(take_block)
    return limiter


def key_policy(settings: Settings) -> KeyPolicy:
    return KeyPolicy(
        prefix=settings.key_prefix,
        lifetime=LifetimePolicy(default=timedelta(hours=settings.default_apikey_ttl_hour),
                                maximum=timedelta(hours=settings.max_apikey_ttl_hour)),
        max_keys_per_user=settings.max_keys_per_user,
        max_meta_bytes=settings.max_meta_bytes,
        max_rotation_overlap=timedelta(hours=settings.max_rotation_overlap_hour),
        allow_all_roles=settings.allow_all_roles_keys,
    )


def build_context(settings: Settings) -> AppContext:
    engine = create_engine(settings.effective_database_url)
    http = httpx.AsyncClient(headers={"User-Agent": "apikm"})
    peppers = pepper_ring(settings)
    bus = build_bus(engine, settings)
    store = KeyStore(engine, settings.cache_ttl_seconds, settings.cache_max_keys,
                     reader=create_sqlite_reader(settings.effective_database_url))
    bus.subscribe(store.on_event)
    bus.on_health(store.on_health)
    usage = UsageRecorder(engine, settings.usage_flush_seconds)
    rules = key_policy(settings)
    feed = AlertFeed()
    verifier = Verifier(settings.key_prefix, peppers, store,
                        build_limiter(settings, bus, engine), usage,
                        max_staleness=settings.max_staleness, alerts=feed)
    bus.subscribe(on_import_event(verifier))  # an import elsewhere: imported keys exist now
    return AppContext(
        settings=settings,
        engine=engine,
        http=http,
        tokens=TokenValidator(settings.issuer, settings.oidc_audience, http,
                              settings.token_leeway_seconds),
        keys=KeyService(engine, rules, peppers, on_change=bus.applied),
        verifier=verifier,
        usage=usage,
        addresses=ClientAddressResolver(settings.trusted_proxies,
                                        settings.client_ip_header),
        bus=bus,
        alerts=AlertWriter(engine, feed, settings.usage_flush_seconds,
                           settings.revoke_on_secret_reuse, on_change=bus.applied),
        sync=worker_from_settings(settings, engine, on_change=bus.applied),
        notifier=_notifier(settings, engine, http),
    )


def _notifier(settings: Settings, engine: AsyncEngine, http: httpx.AsyncClient) -> Notifier | None:
    try:  # webhook secrets are encrypted; the server refuses to start without a key anyway
        keys = encryption_keys(settings)
    except ConfigError:
        return None  # CLI commands that need no encryption key still work
    return notifier_from_settings(settings, engine, http, keys)
