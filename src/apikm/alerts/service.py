"""Reading alerts back: a key's alerts (its page, the API) and which keys had any lately (the
badge in the key list). Alerts are ``audit_events`` rows with these actions."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.keys.tables import audit_events

# leak_reported is written by the leak reports endpoint (POST /v1/leaks).
ALERT_ACTIONS = ("new_network", "secret_reuse", "leak_reported", "limit_tripped")
BADGE_DAYS = 30


async def key_alerts(engine: AsyncEngine, key_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The key's alerts, newest first."""
    query = (sa.select(audit_events)
             .where(audit_events.c.key_id == key_id,
                    audit_events.c.action.in_(ALERT_ACTIONS))
             .order_by(audit_events.c.id.desc()).limit(limit))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [dict(row._mapping) for row in rows]


async def recent_alert_counts(engine: AsyncEngine, key_ids: Collection[str],
                              now: datetime) -> dict[str, int]:
    """key id -> alerts in the last ``BADGE_DAYS`` days, for the keys that had any."""
    if not key_ids:
        return {}
    query = (sa.select(audit_events.c.key_id, sa.func.count())
             .where(audit_events.c.key_id.in_(list(key_ids)),
                    audit_events.c.action.in_(ALERT_ACTIONS),
                    audit_events.c.at >= now - timedelta(days=BADGE_DAYS))
             .group_by(audit_events.c.key_id))
    async with engine.connect() as conn:
        return {key_id: count for key_id, count in (await conn.execute(query)).all()}


def describe(alert: dict[str, Any]) -> str:
    """One line a person reads on the key page."""
    details = alert.get("details") or {}
    address = details.get("address") or "an unknown address"
    action = str(alert["action"])
    if action == "new_network":
        return f"First use from network {details.get('network')} (address {address})."
    if action == "secret_reuse":
        text = (f"A retired secret (generation {details.get('generation')}) was presented "
                f"after its overlap, from {address}: it may have leaked.")
        return text + (" The key was revoked." if details.get("revoked") else "")
    if action == "limit_tripped":
        which = "its own rate limit" if details.get("limit") == "key_rate" else \
            "the failure limit of its client address"
        return f"The key tripped {which}, from {address}."
    if action == "leak_reported":
        where = details.get("url") or details.get("source") or "a report"
        return f"The key was reported leaked ({where})."
    return action
