"""``apikm import apikeymanager``: the keys of an APIKeyManager database, moved into apikm.

APIKeyManager kept one table, ``api_tokens``: ``api_key`` (the SHA-256 hex of a uuid4 key;
the oldest versions kept the key itself), ``name``, ``user_id``, ``user_login``,
``user_active``, ``is_active``, ``never_expire``, ``expiration_date``, ``latest_query_date``,
``total_queries``, ``latest_sync_date``, ``iam_roles``, ``config``, ``allowed_referers``
(older versions lack some columns; what is missing takes its default).

Each usable key becomes an apikm key that its holder keeps using unchanged:

- stored as the old hash (pepper id ``sha256``) until its first use moves it to the pepper;
- all of its owner's roles, following Keycloak (``all_roles``), as the old keys did;
- ``config`` becomes ``meta`` (what ``/auth/check_key`` answers as ``config``);
- never-expiring keys, and expiries past the policy, get the longest lifetime
  (``APIKM_MAX_APIKEY_TTL_HOUR``) and say so in the report;
- ``allowed_referers``, which the old service never enforced, are not carried over, and the
  report names them;
- owners apikm does not know yet are recorded as the old database last saw them (login,
  enabled flag, roles, when) until the Keycloak sync confirms them, at once for new keys.

Revoked and expired keys are skipped, each with its reason. The import is idempotent: a key's
apikm id is derived from its old hash, so a second run skips what the first imported. One
``import`` audit event per key. ``--dry-run`` does all of it and rolls back.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apikm.cluster.events import Kind, emit
from apikm.compat.legacy_keys import (
    IMPORT_SOURCE,
    LEGACY_PEPPER_ID,
    is_legacy_key,
    legacy_digest,
)
from apikm.config import normalize_database_url
from apikm.db import create_engine, write_transaction
from apikm.identity.tables import owners
from apikm.keys import policy
from apikm.keys.format import random_base62
from apikm.keys.service import Actor, KeyPolicy, record_audit
from apikm.keys.tables import api_keys

OLD_TABLE = "api_tokens"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAMESPACE = uuid.UUID("5b0e7c51-8f4c-4f8e-9a57-0a7e7d3f1c11")  # apikm's import ids
BATCH = 500


class ImportRefused(Exception):
    """The import cannot run; the message says what to do."""


@dataclass(frozen=True)
class OldKey:
    """One row of ``api_tokens``, as read (defaults for columns an old version lacks)."""

    api_key: str
    name: str | None = None
    user_id: str | None = None
    user_login: str | None = None
    user_active: bool | None = True
    is_active: bool | None = True
    never_expire: bool | None = False
    expiration_date: datetime | None = None
    latest_query_date: datetime | None = None
    total_queries: int | None = 0
    latest_sync_date: datetime | None = None
    iam_roles: Any = None
    config: Any = None
    allowed_referers: Any = None


@dataclass
class Outcome:
    """What became of one old key: imported (with notes) or skipped (with the reason)."""

    ref: str  # the first characters of the old hash: enough to find the row, no secret
    user: str
    imported: bool
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    key_id: str | None = None


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    owners_added: int = 0
    dry_run: bool = False

    @property
    def imported(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.imported]

    @property
    def skipped(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.imported]

    def skip_reasons(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.skipped:
            head = outcome.reason.split(" (", 1)[0]
            counts[head] = counts.get(head, 0) + 1
        return counts


@dataclass(frozen=True)
class Planned:
    """The apikm rows for one old key (pure: ``plan`` decides, ``run_import`` writes)."""

    key: dict[str, Any]
    owner: dict[str, Any]
    outcome: Outcome


def key_id_for(digest: str) -> str:
    """The apikm id of an imported key: the same on every run (idempotence)."""
    return str(uuid.uuid5(_NAMESPACE, f"{IMPORT_SOURCE}:{digest}"))


def _utc(value: Any) -> datetime | None:
    """Old datetimes are naive UTC (written as ``datetime.now(UTC)`` into naive columns)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json(value: Any) -> Any:
    if isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _roles(value: Any) -> list[str]:
    value = _json(value)
    if not isinstance(value, list):
        return []
    return sorted({r for r in value if isinstance(r, str) and r and r.isprintable()})


def _name(value: Any, notes: list[str]) -> str:
    text = value if isinstance(value, str) else ""
    try:
        return policy.check_name(text)
    except policy.PolicyError:
        pass
    cleaned = "".join(ch for ch in text if ch.isprintable()).strip()[:policy.MAX_NAME]
    try:
        name = policy.check_name(cleaned)
    except policy.PolicyError:
        name = "imported key"
    notes.append(f"name {text!r} is not a valid apikm name; now {name!r}")
    return name


def plan(row: OldKey, now: datetime, rules: KeyPolicy,
         public_id: Callable[[], str] = lambda: random_base62(8)) -> Planned | Outcome:
    """The rows to write for ``row``, or the reason it is skipped."""
    stored = (row.api_key or "").strip()
    notes: list[str] = []
    if is_legacy_key(stored):  # the oldest versions kept the key itself
        digest = legacy_digest(stored)
        notes.append("stored in clear by an old APIKeyManager version; now hashed")
    else:
        digest = stored.lower()
    ref = digest[:8] if _HEX64.fullmatch(digest) else "?"
    user_id = (row.user_id or "").strip()
    user = row.user_login or user_id or "?"
    if not _HEX64.fullmatch(digest):
        return Outcome(ref, user, False, "api_key is neither a SHA-256 hex digest nor a uuid4 "
                       "key (not an APIKeyManager key)")
    if not user_id or not policy.storable(user_id) or len(user_id) > 255:
        return Outcome(ref, user, False, "no usable user_id")
    if row.is_active is False:
        return Outcome(ref, user, False, "revoked in APIKeyManager")
    expires = _utc(row.expiration_date)
    longest = now + rules.lifetime.maximum
    if row.never_expire:
        expires = longest
        notes.append(f"never expired in APIKeyManager; expires {expires:%Y-%m-%d %H:%M} UTC "
                     "(APIKM_MAX_APIKEY_TTL_HOUR)")
    elif expires is None:
        return Outcome(ref, user, False, "no expiration_date")
    elif expires <= now:
        return Outcome(ref, user, False, f"expired ({expires:%Y-%m-%d %H:%M} UTC)")
    elif expires > longest:
        notes.append(f"expiry {expires:%Y-%m-%d} is past the longest lifetime; now "
                     f"{longest:%Y-%m-%d %H:%M} UTC (APIKM_MAX_APIKEY_TTL_HOUR)")
        expires = longest
    config = _json(row.config)
    if config is None:
        config = {}
    try:
        meta = policy.check_meta(config, rules.max_meta_bytes)
    except policy.PolicyError as exc:
        return Outcome(ref, user, False, f"config cannot become the key's meta ({exc}); fix "
                       "the row or raise APIKM_MAX_META_BYTES, then import again")
    referers = _json(row.allowed_referers)
    if isinstance(referers, list) and referers:
        shown = ", ".join(str(r) for r in referers)
        notes.append(f"allowed_referers not carried over ({shown}): APIKeyManager never "
                     "enforced them; restrict the key to networks with PATCH /v1/keys/{id}")
    if row.user_active is False:
        notes.append("owner disabled in APIKeyManager: USER_DISABLED until the Keycloak sync "
                     "confirms them")
    roles = _roles(row.iam_roles)
    key_id = key_id_for(digest)
    last_used = _utc(row.latest_query_date)
    key = {
        "id": key_id, "public_id": public_id(), "owner_id": user_id,
        "name": _name(row.name, notes),
        "description": f"Imported from APIKeyManager on {now:%Y-%m-%d}",
        "roles": roles, "all_roles": True, "allowed_networks": [], "meta": meta,
        "rate_limit": None, "secret_hash": digest, "pepper_id": LEGACY_PEPPER_ID,
        "status": "active", "expires_at": expires, "created_at": now,
        "created_by": f"import:{IMPORT_SOURCE}", "updated_at": now,
        "last_used_at": last_used if last_used and last_used <= now else None,
        "use_count": max(0, int(row.total_queries or 0)), "imported_from": IMPORT_SOURCE,
    }
    synced = _utc(row.latest_sync_date)
    owner = {
        "user_id": user_id,
        "username": (row.user_login or user_id)[:255],
        "email": None, "enabled": row.user_active is not False, "roles": roles, "groups": [],
        "synced_at": min(synced, now) if synced else now, "source": "import",
        "disabled_at": None if row.user_active is not False else now,
    }
    return Planned(key, owner, Outcome(ref, user, True, notes=notes, key_id=key_id))


# --- reading the old database ---------------------------------------------------------------
def safe_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(not a database URL)"


async def read_old_keys(url: str) -> list[OldKey]:
    """Every row of ``api_tokens``; ``ImportRefused`` saying what is wrong otherwise."""
    try:
        engine = create_engine(normalize_database_url(url)) if not url.startswith("sqlite") \
            else _sqlite_reader(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ImportRefused(f"--from is not a database URL apikm can open ({exc}); use "
                           "sqlite:///path/to/apikeymanager.db or "
                           "postgresql://user:password@host:5432/database") from None
    try:
        async with engine.connect() as conn:
            table = await conn.run_sync(_reflect)
            if table is None:
                raise ImportRefused(f"{safe_url(url)} has no table {OLD_TABLE!r}: is this "
                                   "APIKeyManager's database (APIKM_DATABASE_URL of the old "
                                   "service)?")
            if "api_key" not in table.c:
                raise ImportRefused(f"table {OLD_TABLE!r} has no api_key column: not an "
                                   "APIKeyManager table")
            rows = (await conn.execute(sa.select(table))).mappings().all()
    except ImportRefused:
        raise
    except (OSError, sa.exc.SQLAlchemyError) as exc:
        first = str(exc).split("\n", 1)[0][:300]
        raise ImportRefused(f"cannot read {safe_url(url)}: {first}. Check --from (and that "
                           "the database accepts connections from here)") from None
    finally:
        await engine.dispose()
    known = set(OldKey.__dataclass_fields__)
    return [OldKey(**{k: v for k, v in row.items() if k in known}) for row in rows]


def _sqlite_reader(url: str) -> AsyncEngine:
    """A read-only view of an SQLite file: never created, never written."""
    from sqlalchemy.ext.asyncio import create_async_engine

    database = sa.engine.make_url(url).database
    if not database or database == ":memory:":
        raise ValueError("an SQLite URL needs a file path")
    from pathlib import Path

    path = Path(database)
    if not path.is_file():
        raise ImportRefused(f"no SQLite file at {path}: give the old service's database file")
    return create_async_engine(f"sqlite+aiosqlite:///file:{path.resolve()}?mode=ro&uri=true")


def _reflect(sync_conn: sa.Connection) -> sa.Table | None:
    if not sa.inspect(sync_conn).has_table(OLD_TABLE):
        return None
    return sa.Table(OLD_TABLE, sa.MetaData(), autoload_with=sync_conn)


# --- writing ----------------------------------------------------------------------------------
class _DryRun(Exception):
    pass


async def run_import(engine: AsyncEngine, rows: Iterable[OldKey], rules: KeyPolicy,
                     actor: Actor, dry_run: bool = False,
                     progress: Callable[[int], None] = lambda _n: None) -> Report:
    """Import ``rows`` into apikm's database in one transaction (rolled back on dry run)."""
    report = Report(dry_run=dry_run)
    try:
        async with write_transaction(engine) as conn:
            await _import(conn, list(rows), rules, actor, report, progress)
            if dry_run:
                raise _DryRun
            if report.imported:  # every replica: clear caches, look up uuid4 keys from now
                await emit(conn, Kind.ALL, IMPORT_SOURCE)
    except _DryRun:
        pass
    return report


async def _import(conn: AsyncConnection, rows: list[OldKey], rules: KeyPolicy, actor: Actor,
                  report: Report, progress: Callable[[int], None]) -> None:
    now = datetime.now(UTC)
    done_ids = {str(i) for i in (await conn.execute(sa.select(api_keys.c.id).where(
        api_keys.c.imported_from == IMPORT_SOURCE))).scalars()}
    known_owners = {str(i) for i in (await conn.execute(sa.select(owners.c.user_id)))
                    .scalars()}
    newest_owner: dict[str, dict[str, Any]] = {}
    for start in range(0, len(rows), BATCH):
        batch = rows[start:start + BATCH]
        for row in batch:
            planned = plan(row, now, rules)
            if isinstance(planned, Outcome):
                report.outcomes.append(planned)
                continue
            outcome = planned.outcome
            if outcome.key_id in done_ids:
                report.outcomes.append(Outcome(outcome.ref, outcome.user, False,
                                               "already imported", key_id=outcome.key_id))
                continue
            if await _hash_taken(conn, planned.key["secret_hash"]):
                report.outcomes.append(Outcome(outcome.ref, outcome.user, False,
                                               "the same key is already in apikm"))
                continue
            owner_id = planned.owner["user_id"]
            if owner_id not in known_owners:
                seen = newest_owner.get(owner_id)
                if seen is None or planned.owner["synced_at"] > seen["synced_at"]:
                    newest_owner[owner_id] = planned.owner
            await _insert_key(conn, planned.key)
            done_ids.add(str(outcome.key_id))
            await record_audit(conn, "import", actor, outcome.key_id, owner_id, {
                "source": IMPORT_SOURCE, "notes": outcome.notes})
            report.outcomes.append(outcome)
        progress(len(batch))
    if newest_owner:
        await conn.execute(sa.insert(owners), list(newest_owner.values()))
        report.owners_added = len(newest_owner)


async def _hash_taken(conn: AsyncConnection, digest: str) -> bool:
    found = await conn.scalar(sa.select(api_keys.c.id).where(sa.or_(
        api_keys.c.secret_hash == digest, api_keys.c.previous_secret_hash == digest)))
    return found is not None


async def _insert_key(conn: AsyncConnection, values: dict[str, Any]) -> None:
    """Insert; a public-id collision (47 random bits) draws another one."""
    for _attempt in range(3):
        try:
            async with conn.begin_nested():
                await conn.execute(sa.insert(api_keys).values(values))
            return
        except sa.exc.IntegrityError:
            values = {**values, "public_id": random_base62(8)}
    raise ImportRefused("could not allocate a unique public id; run the import again")
