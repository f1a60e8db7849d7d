"""Which mails a user gets: their own choices over the admins' defaults (row ``*``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apikm.db import upsert, utcnow
from apikm.notify.rules import ALWAYS, TOPICS, merged_topics
from apikm.notify.tables import notification_preferences as prefs

DEFAULTS = "*"  # not a Keycloak user id (those are UUIDs)


async def stored(conn: AsyncConnection, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    wanted = sorted({*user_ids, DEFAULTS})
    rows = await conn.execute(sa.select(prefs.c.user_id, prefs.c.mail)
                              .where(prefs.c.user_id.in_(wanted)))
    return {row.user_id: dict(row.mail or {}) for row in rows}


async def topics_of(engine: AsyncEngine, user_id: str | None) -> dict[str, bool]:
    """A user's effective choices (``None``: the admins' defaults alone)."""
    async with engine.connect() as conn:
        found = await stored(conn, [user_id] if user_id else [])
    return merged_topics(found.get(DEFAULTS), found.get(user_id) if user_id else None)


def chosen(form_values: Iterable[str]) -> dict[str, bool]:
    """Checked boxes of a settings form -> every topic on or off (ALWAYS ones stay on)."""
    checked = set(form_values)
    return {topic: topic in checked or topic in ALWAYS for topic in TOPICS}


async def save(engine: AsyncEngine, user_id: str, mail: Mapping[str, bool]) -> None:
    values = {t: bool(v) for t, v in mail.items() if t in TOPICS}
    async with engine.begin() as conn:
        insert = upsert(conn.dialect.name, prefs).values(user_id=user_id, mail=values,
                                                         updated_at=utcnow())
        await conn.execute(insert.on_conflict_do_update(
            index_elements=["user_id"],
            set_={"mail": insert.excluded.mail, "updated_at": insert.excluded.updated_at}))
