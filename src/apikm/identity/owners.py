"""Keeping the ``owners`` table: what apikm last learnt of each key owner from Keycloak."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.db import upsert, utcnow
from apikm.identity.principal import Principal
from apikm.identity.tables import owners


async def remember_owner(engine: AsyncEngine, principal: Principal) -> None:
    """Record the caller's current identity and roles from their freshly validated token.

    A valid token proves the user is enabled and holds these roles right now.
    """
    values = {
        "user_id": principal.user_id,
        "username": principal.username,
        "email": principal.email,
        "enabled": True,
        "roles": sorted(principal.roles),
        "groups": list(principal.groups),
        "synced_at": utcnow(),
        "source": "token",
        "disabled_at": None,
    }
    async with engine.begin() as conn:
        insert = upsert(conn.dialect.name, owners).values(values)
        await conn.execute(insert.on_conflict_do_update(
            index_elements=["user_id"],
            set_={k: insert.excluded[k] for k in values if k != "user_id"},
        ))
