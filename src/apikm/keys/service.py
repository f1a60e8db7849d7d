"""The key lifecycle: create, list, read, update, rotate, revoke, with an audit trail.

Every method takes the owner's id (or None for admins acting on any key), so "users touch only
their own keys" is enforced in one place: a key of someone else is simply not found.

Bookkeeping stays exact under concurrency, across replicas, on both databases:

- a change, its audit row and its change event are one transaction;
- writers begin ``IMMEDIATE`` on SQLite (``db.write_transaction``): one at a time, each
  reading what the previous one committed;
- on PostgreSQL, creates of one owner are serialised by a transaction-scoped advisory lock
  (count, then insert, is otherwise a race), and key rows are locked ``FOR UPDATE``;
- every UPDATE repeats the condition it was decided on (``status <> 'revoked'``, the secret
  being rotated) and is audited only if it changed a row, so a lost race never audits twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apikm.cluster.events import Kind, emit
from apikm.db import slices, utcnow, write_transaction
from apikm.identity.principal import Principal
from apikm.keys import policy
from apikm.keys.format import generate_key, key_hint, secret_tail
from apikm.keys.hashing import PepperRing
from apikm.keys.tables import api_keys, audit_events, key_usage_daily, retired_secrets

STATUSES = ("active", "expired", "revoked", "suspended")  # as users filter their keys

# First key of PostgreSQL's two-key advisory locks taken here ("ak" + 1): the second is
# hashtext(owner id). A hash collision only makes two owners' creates wait for each other.
OWNER_CREATE_LOCK = 0x616B01


class KeyNotFound(LookupError):
    pass


class RolesRefused(policy.PolicyError):
    pass


class KeyLimitReached(policy.PolicyError):
    pass


@dataclass(frozen=True)
class Actor:
    """Who acts, for the audit log: a user, an admin, or apikm itself (sync, CLI)."""

    user_id: str
    name: str
    ip: str | None = None

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        return cls(principal.user_id, principal.username, principal.client_ip)


@dataclass(frozen=True)
class KeyPolicy:
    prefix: str
    lifetime: policy.LifetimePolicy
    max_keys_per_user: int
    max_meta_bytes: int
    max_rotation_overlap: timedelta
    allow_all_roles: bool = True  # APIKM_ALLOW_ALL_ROLES_KEYS


ALL_ROLES_OFF = ("keys with all of your roles are turned off here (APIKM_ALLOW_ALL_ROLES_KEYS); "
                 "choose the roles the key needs")


@dataclass(frozen=True)
class NewKey:
    name: str
    roles: Sequence[str]
    description: str = ""
    expires_at: datetime | None = None
    allowed_networks: Sequence[str] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    rate_limit: str | None = None
    all_roles: bool = False  # carry all of the owner's current roles, following Keycloak


@dataclass(frozen=True)
class KeyChanges:
    """A PATCH: only fields that are set change; rights can only be narrowed."""

    name: str | None = None
    description: str | None = None
    roles: Sequence[str] | None = None
    expires_at: datetime | None = None
    allowed_networks: Sequence[str] | None = None
    meta: dict[str, Any] | None = None
    rate_limit: str | None = None
    clear_rate_limit: bool = False


@dataclass(frozen=True)
class CreatedKey:
    key: dict[str, Any]
    secret: str = field(repr=False)


class KeyService:
    def __init__(self, engine: AsyncEngine, rules: KeyPolicy, peppers: PepperRing,
                 on_change: Callable[[Kind, str], None] = lambda _kind, _ref: None) -> None:
        self._engine = engine
        self._rules = rules
        self._peppers = peppers
        # Called after a change committed (its event is in the same transaction): this
        # process drops the key from its cache at once, other replicas follow the event.
        self._on_change = on_change

    # --- create --------------------------------------------------------------------------
    async def create(self, owner: Principal, new: NewKey) -> CreatedKey:
        now = utcnow()
        if new.all_roles:
            if not self._rules.allow_all_roles:
                raise policy.PolicyError(ALL_ROLES_OFF, field="all_roles")
            if new.roles:
                raise policy.PolicyError("give either roles or all_roles, not both",
                                         field="roles")
            # Kept for display and so the sync reads these clients' roles; the key's rights
            # are the owner's roles at every check.
            roles = sorted(owner.roles)
        else:
            roles = policy.normalize_roles(new.roles)
            refused = policy.refused_roles(roles, owner.roles)
            if refused:
                raise RolesRefused("you can only grant roles you hold", field="roles",
                                   details={"refused": refused})
        key_id = str(uuid.uuid4())
        values: dict[str, Any] = {
            "id": key_id,
            "owner_id": owner.user_id,
            "name": policy.check_name(new.name),
            "description": policy.check_description(new.description),
            "roles": roles,
            "allowed_networks": policy.normalize_networks(new.allowed_networks),
            "meta": policy.check_meta(new.meta, self._rules.max_meta_bytes),
            "rate_limit": policy.check_rate_limit(new.rate_limit),
            "status": "active",
            "expires_at": policy.resolve_expiry(new.expires_at, now, self._rules.lifetime),
            "created_at": now,
            "created_by": owner.user_id,
            "updated_at": now,
            "use_count": 0,
            "all_roles": new.all_roles,
            "generation": 1,
        }
        async with write_transaction(self._engine) as conn:
            await _serialise_creates(conn, owner.user_id)
            await self._check_quota(conn, owner.user_id, now)
            secret = await self._insert_with_fresh_secret(conn, values)
            details: dict[str, Any] = {"name": values["name"], "roles": roles}
            if new.all_roles:
                details["all_roles"] = True
            await _audit(conn, "create", Actor.of(owner), key_id, owner.user_id, details)
            row = await self._fetch(conn, key_id, owner.user_id)
        return CreatedKey(self.present(row, now), secret)

    async def _check_quota(self, conn: AsyncConnection, owner_id: str, now: datetime) -> None:
        live = await conn.scalar(
            sa.select(sa.func.count()).select_from(api_keys).where(
                api_keys.c.owner_id == owner_id,
                api_keys.c.status != "revoked",
                api_keys.c.expires_at > now,
            )
        )
        if (live or 0) >= self._rules.max_keys_per_user:
            raise KeyLimitReached(
                f"you already have {live} live keys; the limit is "
                f"{self._rules.max_keys_per_user}. Revoke one first."
            )

    async def _insert_with_fresh_secret(self, conn: AsyncConnection,
                                        values: dict[str, Any]) -> str:
        # A public-id collision (47 random bits) is unlikely but must not be a 500.
        for _attempt in range(3):
            key = generate_key(self._rules.prefix)
            row = {**values, "public_id": key.public_id,
                   "secret_hash": self._peppers.digest(key.full),
                   "pepper_id": self._peppers.current_id, "secret_tail": secret_tail(key.full)}
            try:
                async with conn.begin_nested():
                    await conn.execute(sa.insert(api_keys).values(row))
                return key.full
            except IntegrityError:
                continue
        raise RuntimeError("could not allocate a unique key id")

    # --- read ----------------------------------------------------------------------------
    async def list_keys(self, owner_id: str | None, status: str | None = None,
                        limit: int = 100, offset: int = 0, *,
                        public_id: str | None = None) -> list[dict[str, Any]]:
        now = utcnow()
        if owner_id is not None and not policy.storable(owner_id):
            return []
        query = sa.select(api_keys).order_by(api_keys.c.created_at.desc(), api_keys.c.id)
        if owner_id is not None:
            query = query.where(api_keys.c.owner_id == owner_id)
        if public_id is not None:  # the part of a key its hint shows (admins' search)
            query = query.where(api_keys.c.public_id == public_id)
        if status is not None:
            query = query.where(_status_filter(status, now))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit).offset(offset))).all()
        return [self.present(row, now) for row in rows]

    async def get(self, key_id: str, owner_id: str | None) -> dict[str, Any]:
        async with self._engine.connect() as conn:
            return self.present(await self._fetch(conn, key_id, owner_id), utcnow())

    async def daily_usage(self, key_id: str, owner_id: str | None,
                          days: int = 30) -> list[dict[str, Any]]:
        since = (utcnow() - timedelta(days=days - 1)).date()
        async with self._engine.connect() as conn:
            await self._fetch(conn, key_id, owner_id)
            rows = (await conn.execute(
                sa.select(key_usage_daily.c.day, key_usage_daily.c.count)
                .where(key_usage_daily.c.key_id == key_id, key_usage_daily.c.day >= since)
                .order_by(key_usage_daily.c.day)
            )).all()
        return [{"day": row.day.isoformat(), "count": row.count} for row in rows]

    # --- change --------------------------------------------------------------------------
    async def update(self, key_id: str, owner_id: str | None, changes: KeyChanges,
                     actor: Actor) -> dict[str, Any]:
        now = utcnow()
        async with write_transaction(self._engine) as conn:
            row = await self._fetch(conn, key_id, owner_id, for_update=True)
            if row.status == "revoked":
                raise policy.PolicyError("a revoked key cannot be changed")
            values = self._changed_values(row, changes, now)
            if values:
                values["updated_at"] = now
                changed = await conn.execute(
                    sa.update(api_keys)
                    .where(api_keys.c.id == key_id, api_keys.c.status != "revoked")
                    .values(**values))
                if changed.rowcount != 1:
                    raise policy.PolicyError("a revoked key cannot be changed")
                await _audit(conn, "update", actor, key_id, row.owner_id,
                             {"fields": sorted(k for k in values if k != "updated_at")})
                await emit(conn, Kind.KEY, key_id)
            row = await self._fetch(conn, key_id, owner_id)
        self._on_change(Kind.KEY, key_id)
        return self.present(row, now)

    def _changed_values(self, row: Any, changes: KeyChanges, now: datetime) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if changes.name is not None:
            values["name"] = policy.check_name(changes.name)
        if changes.description is not None:
            values["description"] = policy.check_description(changes.description)
        if changes.roles is not None and row.all_roles:
            raise policy.PolicyError("this key carries all of its owner's roles and follows "
                                     "them; create a key with chosen roles instead",
                                     field="roles")
        if changes.roles is not None:
            roles = policy.normalize_roles(changes.roles)
            added = policy.refused_roles(roles, row.roles)
            if added:
                raise RolesRefused("roles can only be removed from a key", field="roles",
                                   details={"refused": added})
            values["roles"] = roles
        if changes.expires_at is not None:
            values["expires_at"] = policy.narrowed_expiry(row.expires_at, changes.expires_at,
                                                          now)
        if changes.allowed_networks is not None:
            values["allowed_networks"] = policy.normalize_networks(changes.allowed_networks)
        if changes.meta is not None:
            values["meta"] = policy.check_meta(changes.meta, self._rules.max_meta_bytes)
        if changes.clear_rate_limit:
            values["rate_limit"] = None
        elif changes.rate_limit is not None:
            values["rate_limit"] = policy.check_rate_limit(changes.rate_limit)
        return values

    async def rotate(self, key_id: str, owner_id: str | None, overlap_seconds: int,
                     actor: Actor) -> CreatedKey:
        now = utcnow()
        overlap = policy.rotation_overlap(overlap_seconds, self._rules.max_rotation_overlap)
        async with write_transaction(self._engine) as conn:
            row = await self._fetch(conn, key_id, owner_id, for_update=True)
            if row.status != "active" or row.expires_at <= now:
                raise policy.PolicyError("only an active key can be rotated")
            key = generate_key(self._rules.prefix, public_id=row.public_id)
            keep_old = overlap > timedelta(0)
            changed = await conn.execute(sa.update(api_keys).where(
                api_keys.c.id == key_id, api_keys.c.status == "active",
                api_keys.c.secret_hash == row.secret_hash,  # nobody rotated it meanwhile
            ).values(
                secret_hash=self._peppers.digest(key.full),
                pepper_id=self._peppers.current_id,
                previous_secret_hash=row.secret_hash if keep_old else None,
                previous_pepper_id=row.pepper_id if keep_old else None,
                previous_secret_expires_at=now + overlap if keep_old else None,
                rotated_at=now,
                updated_at=now,
                generation=row.generation + 1,
                secret_tail=secret_tail(key.full),
            ))
            if changed.rowcount != 1:
                raise policy.PolicyError("only an active key can be rotated")
            await _retire_secret(conn, row, now, now + overlap)
            await _audit(conn, "rotate", actor, key_id, row.owner_id,
                         {"overlap_seconds": overlap_seconds, "generation": row.generation + 1})
            await emit(conn, Kind.KEY, key_id)
            row = await self._fetch(conn, key_id, owner_id)
        self._on_change(Kind.KEY, key_id)
        return CreatedKey(self.present(row, now), key.full)

    async def renew(self, key_id: str, owner_id: str | None, expires_at: datetime | None,
                    actor: Actor) -> dict[str, Any]:
        """A new expiry for a key that is not revoked (APIKeyManager's ``renew``): the
        policy's default from now, or ``expires_at`` within the maximum lifetime from now.
        A revoked key stays revoked."""
        now = utcnow()
        expiry = policy.resolve_expiry(expires_at, now, self._rules.lifetime)
        async with write_transaction(self._engine) as conn:
            row = await self._fetch(conn, key_id, owner_id, for_update=True)
            if row.status == "revoked":
                raise policy.PolicyError("a revoked key cannot be renewed; create a new key",
                                         field="api-key")
            changed = await conn.execute(
                sa.update(api_keys).where(api_keys.c.id == key_id,
                                          api_keys.c.status != "revoked")
                .values(expires_at=expiry, updated_at=now))
            if changed.rowcount != 1:
                raise policy.PolicyError("a revoked key cannot be renewed; create a new key",
                                         field="api-key")
            await _audit(conn, "renew", actor, key_id, row.owner_id,
                         {"expires_at": expiry.isoformat(),
                          "previous_expires_at": row.expires_at.isoformat()})
            await emit(conn, Kind.KEY, key_id)
            row = await self._fetch(conn, key_id, owner_id)
        self._on_change(Kind.KEY, key_id)
        return self.present(row, now)

    async def revoke(self, key_id: str, owner_id: str | None, actor: Actor,
                     reason: str | None = None, *,
                     also_audit: tuple[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """Revoke the key (a revoked one stays as it is). ``also_audit``: one more audit row
        (action, details) for the key by the same actor, in the same transaction, written
        whether or not this call revoked it (a leak report on an already revoked key)."""
        now = utcnow()
        if reason is not None:
            reason = policy.check_reason(reason)
        async with write_transaction(self._engine) as conn:
            await revoke_in(conn, key_id, owner_id, actor, reason, now)
            row = await self._fetch(conn, key_id, owner_id)
            if also_audit is not None:
                await _audit(conn, also_audit[0], actor, key_id, row.owner_id, also_audit[1])
        self._on_change(Kind.KEY, key_id)
        return self.present(row, now)

    async def secret_generations(self, key_id: str, owner_id: str | None
                                 ) -> list[dict[str, Any]]:
        """The key's retired secrets, newest first: generation, hint, retired, overlap end."""
        async with self._engine.connect() as conn:
            key = await self._fetch(conn, key_id, owner_id)
            rows = (await conn.execute(
                sa.select(retired_secrets.c.generation, retired_secrets.c.secret_tail,
                          retired_secrets.c.retired_at, retired_secrets.c.overlap_ends_at)
                .where(retired_secrets.c.key_id == key_id)
                .order_by(retired_secrets.c.generation.desc()))).all()
        return [{"generation": row.generation,
                 "hint": secret_hint(self._rules.prefix, key.public_id, row.secret_tail),
                 "retired_at": row.retired_at, "overlap_ends_at": row.overlap_ends_at}
                for row in rows]

    # --- helpers -------------------------------------------------------------------------
    async def _fetch(self, conn: AsyncConnection, key_id: str, owner_id: str | None,
                     for_update: bool = False) -> Any:
        query = sa.select(api_keys).where(*_key_of(key_id, owner_id))
        if for_update:
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        if row is None:
            raise KeyNotFound(key_id)
        return row

    def present(self, row: Any, now: datetime) -> dict[str, Any]:
        """The public representation of a key (never its hash)."""
        return {
            "id": row.id,
            "public_id": row.public_id,
            "hint": key_hint(self._rules.prefix, row.public_id),
            "owner_id": row.owner_id,
            "name": row.name,
            "description": row.description,
            "roles": list(row.roles),
            "allowed_networks": list(row.allowed_networks),
            "meta": policy.displayable_meta(row.meta),
            "rate_limit": row.rate_limit,
            "status": derived_status(row.status, row.expires_at, now),
            "expires_at": row.expires_at,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "rotated_at": row.rotated_at,
            "previous_secret_expires_at": row.previous_secret_expires_at,
            "revoked_at": row.revoked_at,
            "revoked_by": row.revoked_by,
            "revoked_reason": row.revoked_reason,
            "last_used_at": row.last_used_at,
            "last_used_ip": row.last_used_ip,
            "use_count": row.use_count,
            "all_roles": bool(row.all_roles),
            "imported_from": row.imported_from,
            "generation": row.generation,
            "secret_hint": secret_hint(self._rules.prefix, row.public_id, row.secret_tail),
        }


def secret_hint(prefix: str, public_id: str, tail: str | None) -> str:
    """The hint of one secret generation: the key's public id and the secret's last
    characters ("apikm_AbCd1234...wXyZ"), or the key's hint when they are not known."""
    hint = key_hint(prefix, public_id)
    return hint + tail if tail else hint


async def _retire_secret(conn: AsyncConnection, row: Any, now: datetime,
                         overlap_ends: datetime) -> None:
    """Keep the rotated-away secret known; an older one's overlap ends now (the key holds
    one previous secret at a time)."""
    await conn.execute(sa.update(retired_secrets).where(
        retired_secrets.c.key_id == row.id, retired_secrets.c.overlap_ends_at > now,
    ).values(overlap_ends_at=now))
    await conn.execute(sa.insert(retired_secrets).values(
        secret_hash=row.secret_hash, pepper_id=row.pepper_id, key_id=row.id,
        generation=row.generation, secret_tail=row.secret_tail, retired_at=now,
        overlap_ends_at=overlap_ends))


async def revoke_in(conn: AsyncConnection, key_id: str, owner_id: str | None, actor: Actor,
                    reason: str | None, now: datetime) -> bool:
    """Revoke in the caller's write transaction, with its audit row and change event; True
    if this revoked it (False: not found, or revoked already). The caller applies the
    change to its cache after the commit."""
    # Whoever changes the row revokes, and audits; a concurrent revoke of the same key finds
    # it revoked and answers the same revocation (same revoked_at).
    revoked = await conn.execute(sa.update(api_keys).where(
        *_key_of(key_id, owner_id), api_keys.c.status != "revoked",
    ).values(
        status="revoked", revoked_at=now, revoked_by=actor.name[:255],
        revoked_reason=(reason or "revoked by " + actor.name)[:255],
        # The previous secret of a rotation stays known, so it answers REVOKED (not
        # NOT_FOUND) like the current one; its overlap ends now.
        previous_secret_expires_at=sa.case(
            (api_keys.c.previous_secret_hash.is_not(None), now), else_=None),
        updated_at=now,
    ))
    if revoked.rowcount != 1:
        return False
    await conn.execute(sa.update(retired_secrets).where(
        retired_secrets.c.key_id == key_id, retired_secrets.c.overlap_ends_at > now,
    ).values(overlap_ends_at=now))
    owner = await conn.scalar(sa.select(api_keys.c.owner_id).where(api_keys.c.id == key_id))
    await _audit(conn, "revoke", actor, key_id, owner, {"reason": reason} if reason else {})
    await emit(conn, Kind.KEY, key_id)
    return True


def _key_of(key_id: str, owner_id: str | None) -> list[sa.ColumnElement[bool]]:
    """The key, if it is ``owner_id``'s (any owner's for ``None``: admins)."""
    conditions = [api_keys.c.id == key_id]
    if owner_id is not None:
        conditions.append(api_keys.c.owner_id == owner_id)
    return conditions


async def _serialise_creates(conn: AsyncConnection, owner_id: str) -> None:
    """Until this transaction ends, other creates for this owner wait (their quota count
    must see this key). SQLite needs nothing: its writers already go one at a time."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(
            OWNER_CREATE_LOCK, sa.func.hashtext(owner_id))))


def derived_status(stored: str, expires_at: datetime, now: datetime) -> str:
    if stored == "active" and expires_at <= now:
        return "expired"
    return stored


def _status_filter(status: str, now: datetime) -> sa.ColumnElement[bool]:
    if status == "active":
        return sa.and_(api_keys.c.status == "active", api_keys.c.expires_at > now)
    if status == "expired":
        return sa.and_(api_keys.c.status != "revoked", api_keys.c.expires_at <= now)
    return api_keys.c.status == status


async def _audit(conn: AsyncConnection, action: str, actor: Actor, key_id: str | None,
                 owner_id: str | None, details: dict[str, Any]) -> None:
    await record_audits(conn, [AuditRow(action, actor, key_id, owner_id, details)])


async def record_audit(conn: AsyncConnection, action: str, actor: Actor, key_id: str | None,
                       owner_id: str | None, details: dict[str, Any]) -> None:
    """Audit from another domain's transaction (the Keycloak sync suspends and revokes)."""
    await _audit(conn, action, actor, key_id, owner_id, details)


@dataclass(frozen=True)
class AuditRow:
    action: str
    actor: Actor
    key_id: str | None
    owner_id: str | None
    details: dict[str, Any]


async def record_audits(conn: AsyncConnection, events: Sequence[AuditRow]) -> None:
    """Audit rows, many in one statement run (executemany: a flush of alerts)."""
    at = utcnow()
    for part in slices([{"at": at, "action": e.action, "actor_id": e.actor.user_id,
                         "actor_name": e.actor.name, "actor_ip": e.actor.ip, "key_id": e.key_id,
                         "owner_id": e.owner_id, "details": e.details} for e in events]):
        await conn.execute(sa.insert(audit_events), part)


async def list_audit(engine: AsyncEngine, *, key_id: str | None = None,
                     owner_id: str | None = None, actor_id: str | None = None,
                     limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    filters = (key_id, owner_id, actor_id)
    if any(value is not None and not policy.storable(value) for value in filters):
        return []  # no stored event names such an id
    query = sa.select(audit_events).order_by(audit_events.c.id.desc())
    for column, value in ((audit_events.c.key_id, key_id), (audit_events.c.owner_id, owner_id),
                          (audit_events.c.actor_id, actor_id)):
        if value is not None:
            query = query.where(column == value)
    async with engine.connect() as conn:
        rows = (await conn.execute(query.limit(limit).offset(offset))).all()
    return [dict(row._mapping) for row in rows]


async def count_by_pepper(engine: AsyncEngine) -> dict[str, int]:
    """Unrevoked keys per pepper id, the previous secrets of rotations included."""
    counts: dict[str, int] = {}
    async with engine.connect() as conn:
        for column in (api_keys.c.pepper_id, api_keys.c.previous_pepper_id):
            rows = await conn.execute(
                sa.select(column, sa.func.count())
                .where(api_keys.c.status != "revoked", column.is_not(None))
                .group_by(column))
            for pepper_id, count in rows:
                counts[pepper_id] = counts.get(pepper_id, 0) + count
    return counts
