"""What the admin pages search by: a key's public id (from a hint, a public id or a whole
leaked key), the filters a page keeps across an action, and the audit log's filters.

A whole key is only ever parsed for its public id here: it is not stored, not logged and
never put in a URL (the search form posts it, and the page it redirects to names the
public id only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.keys.format import PUBLIC_ID_LENGTH, parse_key
from apikm.keys.tables import api_keys, audit_events

_PUBLIC_ID = re.compile(rf"[0-9A-Za-z]{{{PUBLIC_ID_LENGTH}}}")
# The admin key list's filters, in the order they appear in its URLs.
KEY_FILTERS = ("user", "status", "key", "page")


def public_id_of(text: str, prefix: str) -> str | None:
    """The public id in a whole key, a hint (``apikm_AbCd1234...``) or a bare public id."""
    text = text.strip().rstrip(".…")
    parsed = parse_key(text, prefix)
    if parsed is not None:
        return parsed.public_id
    body = text.removeprefix(prefix + "_") if text.startswith(prefix + "_") else text
    if len(body) != PUBLIC_ID_LENGTH and not text.startswith(prefix + "_"):
        return None
    candidate = body[:PUBLIC_ID_LENGTH]  # a hint, or a key with a typo: its public id
    return candidate if _PUBLIC_ID.fullmatch(candidate) else None


def kept_filters(query: str | None) -> str:
    """The admin list's filters from a ``back`` value, re-encoded: only known names, so a
    posted value can neither redirect elsewhere nor smuggle other parameters."""
    pairs = [(name, value) for name, value in parse_qsl(query or "")
             if name in KEY_FILTERS and value and len(value) <= 255]
    return urlencode(sorted(pairs, key=lambda pair: KEY_FILTERS.index(pair[0])))


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    user_id: str | None = None  # the event's owner or actor
    key_ids: tuple[str, ...] | None = None  # None: any key

    def query(self) -> sa.Select[Any]:
        query = sa.select(audit_events).order_by(audit_events.c.id.desc())
        if self.action is not None:
            query = query.where(audit_events.c.action == self.action)
        if self.user_id is not None:
            query = query.where(sa.or_(audit_events.c.owner_id == self.user_id,
                                       audit_events.c.actor_id == self.user_id))
        if self.key_ids is not None:
            query = query.where(audit_events.c.key_id.in_(self.key_ids))
        return query


async def audit_events_page(engine: AsyncEngine, where: AuditFilter, limit: int,
                            offset: int) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(where.query().limit(limit).offset(offset))).all()
    return [dict(row._mapping) for row in rows]


async def audit_actions(engine: AsyncEngine) -> list[str]:
    """Every action the log holds, as stored: new kinds of events appear by themselves."""
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(audit_events.c.action).distinct()
                                  .order_by(audit_events.c.action))
        return [str(action) for (action,) in rows]


async def key_ids_of(engine: AsyncEngine, public_id: str) -> tuple[str, ...]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(api_keys.c.id)
                                  .where(api_keys.c.public_id == public_id))
        return tuple(str(key_id) for (key_id,) in rows)


async def public_ids(engine: AsyncEngine, key_ids: list[str]) -> dict[str, tuple[str, str]]:
    """key id -> (name, public id), for the audit log's links to its keys."""
    if not key_ids:
        return {}
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(api_keys.c.id, api_keys.c.name,
                                             api_keys.c.public_id)
                                   .where(api_keys.c.id.in_(key_ids)))).all()
    return {row.id: (row.name, row.public_id) for row in rows}
