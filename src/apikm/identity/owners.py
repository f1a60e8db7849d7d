"""Keeping the ``owners`` table: what apikm last learnt of each key owner from Keycloak."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.cluster.events import Kind, emit
from apikm.db import upsert, utcnow
from apikm.identity.principal import Principal
from apikm.identity.tables import owners


async def remember_owner(engine: AsyncEngine, principal: Principal) -> None:
    """Record the caller's identity and roles from their freshly validated token.

    A valid token proves the user was enabled and held these roles when it was issued. It
    replaces what is stored only when it is newer: a token issued before the sync saw a role
    removed or the user disabled must not bring them back for its remaining lifetime. Groups
    are left alone when the token carries no groups claim (a client without group mapper).
    """
    values: dict[str, Any] = {
        "user_id": principal.user_id,
        "username": principal.username,
        "email": principal.email,
        "enabled": True,
        "roles": sorted(principal.roles),
        "synced_at": principal.issued_at or utcnow(),
        "source": "token",
        "disabled_at": None,
    }
    if principal.groups_in_token:
        values["groups"] = list(principal.groups)
    updated = [k for k in values if k != "user_id"]
    async with engine.begin() as conn:
        insert = upsert(conn.dialect.name, owners).values({"groups": [], **values})
        result = await conn.execute(insert.on_conflict_do_update(
            index_elements=["user_id"],
            set_={k: insert.excluded[k] for k in updated},
            where=owners.c.synced_at < insert.excluded.synced_at,
        ))
        if result.rowcount:  # cached keys of this owner, on every replica, read it again
            await emit(conn, Kind.OWNER, principal.user_id)
