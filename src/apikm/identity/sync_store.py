"""The sync's database side: leader lease, saved state, and applying what Keycloak shows to
an owner and their keys in one transaction (with audit entries).

Every key change is a conditional UPDATE (``WHERE status = ...``) and is audited only when a
row really changed, so two syncers racing (a lease hand-over) cannot double-apply anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apikm.cluster.events import Kind, emit
from apikm.db import upsert, utcnow, write_transaction
from apikm.identity.sync_rules import KeycloakUser, LiveKey, OwnerPlan, clients_of, plan_owner
from apikm.identity.tables import owners, sync_leases, sync_state
from apikm.keys.service import Actor, record_audit
from apikm.keys.tables import api_keys

SYNC_ACTOR = Actor("sync", "sync")
LIVE_STATUSES = ("active", "suspended")


# --- leader lease -------------------------------------------------------------------------
async def acquire_lease(engine: AsyncEngine, name: str, holder: str, ttl: timedelta) -> bool:
    """Take or renew the lease; True while ``holder`` leads."""
    now = utcnow()
    async with engine.begin() as conn:
        renewed = await conn.execute(
            sa.update(sync_leases)
            .where(sync_leases.c.name == name,
                   sa.or_(sync_leases.c.holder == holder, sync_leases.c.expires_at < now))
            .values(holder=holder, expires_at=now + ttl,
                    acquired_at=sa.case((sync_leases.c.holder == holder,
                                         sync_leases.c.acquired_at), else_=now)))
        if renewed.rowcount == 1:
            return True
        insert = upsert(conn.dialect.name, sync_leases).values(
            name=name, holder=holder, expires_at=now + ttl, acquired_at=now)
        created = await conn.execute(insert.on_conflict_do_nothing(index_elements=["name"]))
        return created.rowcount == 1


async def release_lease(engine: AsyncEngine, name: str, holder: str) -> None:
    """Step down at shutdown so another replica takes over at once, not after the TTL."""
    async with engine.begin() as conn:
        await conn.execute(sa.delete(sync_leases).where(sync_leases.c.name == name,
                                                        sync_leases.c.holder == holder))


async def lease_holder(engine: AsyncEngine, name: str) -> tuple[str, datetime] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(sync_leases.c.holder, sync_leases.c.expires_at)
                                  .where(sync_leases.c.name == name))).first()
    return (row.holder, row.expires_at) if row else None


# --- saved state --------------------------------------------------------------------------
async def load_state(engine: AsyncEngine, name: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        value = await conn.scalar(sa.select(sync_state.c.value).where(sync_state.c.name == name))
    return dict(value) if isinstance(value, dict) else None


async def save_state(engine: AsyncEngine, name: str, value: dict[str, Any]) -> None:
    async with engine.begin() as conn:
        insert = upsert(conn.dialect.name, sync_state).values(
            name=name, value=value, updated_at=utcnow())
        await conn.execute(insert.on_conflict_do_update(
            index_elements=["name"],
            set_={"value": insert.excluded.value, "updated_at": insert.excluded.updated_at}))


# --- who to sync --------------------------------------------------------------------------
def _live(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(api_keys.c.status.in_(LIVE_STATUSES), api_keys.c.expires_at > now)


@dataclass(frozen=True)
class OwnerSnapshot:
    """An owner of live keys as the full pass finds them in the database at its start."""

    granted: frozenset[str]  # roles granted to their live keys
    key_statuses: frozenset[str]
    enabled: bool | None  # None: no owner row yet
    roles: frozenset[str]
    groups: tuple[str, ...]
    username: str | None
    email: str | None
    synced_at: datetime | None
    attributes: dict[str, list[str]] = field(default_factory=dict)

    def confirmed_by(self, observed: KeycloakUser | None) -> bool:
        """Keycloak shows just what is stored and no key needs a change: only the owner's
        confirmation time moves, which ``confirm_owners`` writes in bulk."""
        return (observed is not None and observed.enabled and self.enabled is True
                and "suspended" not in self.key_statuses and observed.roles == self.roles
                and observed.groups == self.groups and observed.username == self.username
                and observed.email == self.email
                and stored_attributes(observed) == self.attributes)


async def full_pass_snapshot(engine: AsyncEngine) -> dict[str, OwnerSnapshot]:
    """Every owner of a live key with what is stored about them, in one query."""
    query = (sa.select(api_keys.c.owner_id, api_keys.c.roles, api_keys.c.status,
                       owners.c.enabled, owners.c.roles.label("owner_roles"), owners.c.groups,
                       owners.c.username, owners.c.email, owners.c.synced_at,
                       owners.c.attributes)
             .select_from(api_keys.outerjoin(owners, owners.c.user_id == api_keys.c.owner_id))
             .where(_live(utcnow())).order_by(api_keys.c.owner_id))
    granted: dict[str, set[str]] = {}
    statuses: dict[str, set[str]] = {}
    stored: dict[str, Any] = {}
    async with engine.connect() as conn:
        for row in await conn.execute(query):
            granted.setdefault(row.owner_id, set()).update(str(r) for r in row.roles)
            statuses.setdefault(row.owner_id, set()).add(row.status)
            stored[row.owner_id] = row
    return {owner_id: OwnerSnapshot(
        granted=frozenset(granted[owner_id]), key_statuses=frozenset(statuses[owner_id]),
        enabled=row.enabled, roles=frozenset(row.owner_roles or ()),
        groups=tuple(row.groups or ()), username=row.username, email=row.email,
        synced_at=row.synced_at, attributes=dict(row.attributes or {}))
        for owner_id, row in stored.items()}


async def confirm_owners(engine: AsyncEngine,
                         confirmations: Sequence[tuple[str, datetime, datetime | None]]) -> None:
    """(user, read at, synced_at seen in the snapshot): move synced_at to the read time,
    in one statement; a row changed since the snapshot is left alone (it is newer)."""
    if not confirmations:
        return
    update = (sa.update(owners)
              .where(owners.c.user_id == sa.bindparam("b_user"),
                     owners.c.synced_at == sa.bindparam("b_known"))
              .values(synced_at=sa.bindparam("b_read_at"), source="sync"))
    async with engine.begin() as conn:
        await conn.execute(update, [{"b_user": user_id, "b_known": known, "b_read_at": read_at}
                                    for user_id, read_at, known in confirmations])


async def with_live_keys(engine: AsyncEngine, user_ids: Iterable[str]) -> set[str]:
    """The given users who own a live key; events about anyone else need no Keycloak call."""
    wanted = sorted(set(user_ids))
    if not wanted:
        return set()
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(api_keys.c.owner_id).distinct()
                                  .where(_live(utcnow()), api_keys.c.owner_id.in_(wanted)))
    return {row.owner_id for row in rows}


async def revocations_due(engine: AsyncEngine, grace: timedelta) -> list[str]:
    """Disabled owners whose grace period has ended and who still have live keys."""
    now = utcnow()
    has_live_key = sa.exists().where(api_keys.c.owner_id == owners.c.user_id, _live(now))
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(owners.c.user_id).where(
            owners.c.enabled.is_(False), owners.c.disabled_at <= now - grace, has_live_key))
    return [row.user_id for row in rows]


async def keys_created_since(engine: AsyncEngine, since_ms: int, first: int,
                             limit: int) -> list[dict[str, Any]]:
    """New keys as events (id, time in ms, owner): their owner's client roles may not have
    been read yet, and creating a key leaves no trace in Keycloak's events."""
    since = datetime.fromtimestamp(since_ms / 1000, UTC)
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(api_keys.c.id, api_keys.c.created_at, api_keys.c.owner_id)
            .where(api_keys.c.created_at >= since)
            .order_by(api_keys.c.created_at, api_keys.c.id).offset(first).limit(limit))
        return [{"id": row.id, "time": int(row.created_at.timestamp() * 1000),
                 "userId": row.owner_id} for row in rows]


async def granted_roles(engine: AsyncEngine, user_id: str) -> set[str]:
    """Roles granted to the owner's live keys (which clients' roles are worth reading)."""
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(api_keys.c.roles).where(
            api_keys.c.owner_id == user_id, _live(utcnow())))
    return {str(role) for row in rows for role in row.roles}


# --- applying Keycloak's view -------------------------------------------------------------
@dataclass
class OwnerChange:
    user_id: str
    owner_changed: bool = False
    suspended: list[str] = field(default_factory=list)
    reactivated: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    skipped: bool = False  # a newer token already told us more than this read
    retry: bool = False  # a key naming a client we did not read appeared meanwhile

    @property
    def changed(self) -> bool:
        return self.owner_changed or bool(self.suspended or self.reactivated or self.revoked)


async def reconcile_owner(engine: AsyncEngine, user_id: str, observed: KeycloakUser | None,
                          read_clients: frozenset[str], read_at: datetime,
                          grace: timedelta) -> OwnerChange:
    """Store what Keycloak showed at ``read_at`` and suspend, reactivate or revoke keys.

    ``read_clients``: the clients whose roles were read; if a live key names another one
    now, nothing is written and the caller reads again (``retry``).
    """
    change = OwnerChange(user_id)
    async with write_transaction(engine) as conn:  # reads, then writes on what it read
        owner = await _owner_for_update(conn, user_id)
        if owner is not None and owner.source == "token" and owner.synced_at > read_at:
            change.skipped = True
            return change
        now = utcnow()
        keys, granted = await _live_keys(conn, user_id, now)
        if observed is not None and not clients_of(granted) <= read_clients:
            change.retry = True
            return change
        plan = plan_owner(observed, owner.disabled_at if owner else None, keys, now, grace)
        change.owner_changed = await _write_owner(conn, owner, user_id, observed, plan, read_at)
        change.suspended = await _set_status(conn, plan.suspend, ("active",), user_id, "suspend", {
            "status": "suspended", "suspended_at": now, "updated_at": now},
            {"reason": "owner disabled in Keycloak"})
        change.reactivated = await _set_status(
            conn, plan.reactivate, ("suspended",), user_id, "reactivate",
            {"status": "active", "suspended_at": None, "updated_at": now},
            {"reason": "owner enabled again in Keycloak"})
        change.revoked = await _set_status(conn, plan.revoke, LIVE_STATUSES, user_id, "revoke", {
            "status": "revoked", "revoked_at": now, "revoked_by": SYNC_ACTOR.name,
            "revoked_reason": plan.revoke_reason, "previous_secret_hash": None,
            "previous_secret_expires_at": None, "updated_at": now},
            {"reason": plan.revoke_reason})
        if change.changed:  # every replica drops this owner's cached keys
            await emit(conn, Kind.OWNER, user_id)
    return change


async def _owner_for_update(conn: AsyncConnection, user_id: str) -> Any:
    query = sa.select(owners).where(owners.c.user_id == user_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()  # serialise with the token path's upsert
    return (await conn.execute(query)).first()


async def _live_keys(conn: AsyncConnection, user_id: str,
                     now: datetime) -> tuple[list[LiveKey], set[str]]:
    rows = (await conn.execute(sa.select(api_keys.c.id, api_keys.c.status, api_keys.c.roles)
                               .where(api_keys.c.owner_id == user_id, _live(now)))).all()
    return [LiveKey(row.id, row.status) for row in rows], {str(r) for row in rows
                                                            for r in row.roles}


async def _write_owner(conn: AsyncConnection, owner: Any, user_id: str,
                       observed: KeycloakUser | None, plan: OwnerPlan, read_at: datetime) -> bool:
    """Upsert the owner row; True if anything verification reads has changed."""
    values: dict[str, Any] = {
        "enabled": plan.enabled, "disabled_at": plan.disabled_at, "synced_at": read_at,
        "source": "sync",
        "roles": sorted(observed.roles) if observed else [],
        "groups": list(observed.groups) if observed else [],
        "attributes": stored_attributes(observed) if observed else {},
    }
    if observed is not None:
        values.update(username=observed.username, email=observed.email)
    if owner is None:
        values.setdefault("username", user_id)
        await conn.execute(sa.insert(owners).values(user_id=user_id, **values))
        return True
    await conn.execute(sa.update(owners).where(owners.c.user_id == user_id).values(**values))
    watched = ("enabled", "roles", "groups", "username", "email", "attributes")
    return any(k in values and _normal(getattr(owner, k)) != _normal(values[k]) for k in watched)


def stored_attributes(user: KeycloakUser) -> dict[str, list[str]]:
    """Attributes as the owners table keeps them (JSON: name -> list of values)."""
    return {name: list(values) for name, values in user.attributes.items()}


def _normal(value: Any) -> Any:
    return sorted(value) if isinstance(value, list) else value


async def _set_status(conn: AsyncConnection, key_ids: Iterable[str], from_statuses: tuple[str, ...],
                      owner_id: str, action: str, values: dict[str, Any],
                      details: dict[str, Any]) -> list[str]:
    changed = []
    for key_id in key_ids:
        result = await conn.execute(sa.update(api_keys).where(
            api_keys.c.id == key_id, api_keys.c.status.in_(from_statuses)).values(**values))
        if result.rowcount == 1:
            await record_audit(conn, action, SYNC_ACTOR, key_id, owner_id, details)
            changed.append(key_id)
    return changed
