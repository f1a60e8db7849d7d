"""What is notified, to whom, and when: pure functions, no database, no network."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# Audit actions that become notifications, and the event type each one is called by
# (the Standard Webhooks ``type`` of the payload).
AUDIT_EVENTS = {
    "create": "key.created",
    "rotate": "key.rotated",
    "renew": "key.renewed",
    "revoke": "key.revoked",
    "suspend": "key.suspended",
    "reactivate": "key.reactivated",
    "new_network": "key.new_network",
    "secret_reuse": "key.secret_reuse",
    "limit_tripped": "key.limit_tripped",
    "leak_reported": "key.leaked",
}
EXPIRING = "key.expiring"
EXPIRED = "key.expired"
TEST = "test"
EVENT_TYPES = (*AUDIT_EVENTS.values(), EXPIRING, EXPIRED)

# Security alerts: they go to the admins' mail list too.
ALERTS = frozenset({"key.new_network", "key.secret_reuse", "key.limit_tripped", "key.leaked"})

# Mail topics a user chooses from, with what the settings page says of each.
TOPICS: dict[str, str] = {
    "created": "A key of mine was created",
    "rotated": "A key of mine was rotated or its expiry extended",
    "revoked": "An admin or the Keycloak sync revoked, suspended or reactivated a key of mine",
    "expiring": "A key of mine expires soon",
    "expired": "A key of mine expired",
    "new_network": "A key of mine was used from a network it was never used from",
    "limit_tripped": "A key of mine tripped its rate limit or the failure limit",
    "secret_reuse": "The old secret of a rotated key of mine was presented after its overlap",
    "leaked": "A key of mine was reported leaked (and revoked)",
}
# Possible misuse of a key: its owner is always told, whatever the preferences say.
ALWAYS = frozenset({"secret_reuse", "leaked"})
TOPIC_OF = {
    "key.created": "created", "key.rotated": "rotated", "key.renewed": "rotated",
    "key.revoked": "revoked", "key.suspended": "revoked", "key.reactivated": "revoked",
    EXPIRING: "expiring", EXPIRED: "expired", "key.new_network": "new_network",
    "key.limit_tripped": "limit_tripped", "key.secret_reuse": "secret_reuse",
    "key.leaked": "leaked",
}
LEAK_REASON = "leaked"  # the revoke that comes with a leak report: one mail, the leak's
REUSE_REASON = "secret_reuse"  # the revoke that comes with a reused old secret: likewise
# Revocations written with an alert in the same transaction: the alert's mail says it all.
ALERT_REVOCATIONS = frozenset({LEAK_REASON, REUSE_REASON})

# Fields of an audit event's details that a notification may repeat; anything else (present
# or future) stays out, so no producer can put a secret into a mail by accident.
# ``at``: when an alert's use happened (its audit row is written a flush later).
SHOWN_DETAILS = ("reason", "network", "address", "at", "generation", "revoked", "limit", "url",
                 "source", "reporter", "overlap_seconds", "expires_at", "previous_expires_at")


def merged_topics(defaults: Mapping[str, Any] | None,
                  mine: Mapping[str, Any] | None) -> dict[str, bool]:
    """Topics a user gets mail for: every topic on, unless the admins' defaults or the
    user's own choice say otherwise; ``ALWAYS`` topics stay on."""
    chosen = {topic: True for topic in TOPICS}
    for layer in (defaults or {}, mine or {}):
        chosen.update({t: bool(v) for t, v in layer.items() if t in TOPICS})
    chosen.update({topic: True for topic in ALWAYS})
    return chosen


def mail_owner(event: str, actor_id: str | None, owner_id: str | None,
               details: Mapping[str, Any]) -> bool:
    """Whether an event is worth a mail to the key's owner (before their preferences).

    A revocation by the owners themselves is not: they just did it. A revocation by an
    admin or by the sync is (with the reason). Creation and rotation by the owner are, as
    GitLab does for tokens: if someone else holds the owner's session, the owner learns it.
    The revocation that comes with a leak report or a reused old secret is covered by that
    alert's own mail, which says the key was revoked.
    """
    if event not in TOPIC_OF or owner_id is None:
        return False
    if event == "key.revoked":
        return actor_id != owner_id and details.get("reason") not in ALERT_REVOCATIONS
    return True


def mail_admins(event: str) -> bool:
    return event in ALERTS


def webhook_wants(filters: Iterable[str], event: str) -> bool:
    """An endpoint's event filter: empty means every event."""
    wanted = list(filters)
    return not wanted or event in wanted


def shown_details(details: Mapping[str, Any]) -> dict[str, Any]:
    return {k: details[k] for k in SHOWN_DETAILS
            if k in details and isinstance(details[k], str | int | float | bool)}


# --- expiry --------------------------------------------------------------------------------
def crossed_threshold(expires_at: datetime, created_at: datetime, since: datetime,
                      now: datetime, thresholds: Iterable[int]) -> int | None:
    """The threshold (days before expiry; 0: expiry itself) a key crossed in (since, now].

    When several were crossed (the worker was away), only the nearest counts: one mail
    saying "expires in 1 day", not three. A threshold crossed before the key existed (a key
    made to last 5 days crosses "7 days" at birth) is not worth a warning.
    """
    for days in sorted({0, *thresholds}):
        boundary = expires_at - timedelta(days=days)
        if since < boundary <= now:
            return days if boundary > created_at else None
    return None


def crossing_windows(since: datetime, now: datetime,
                     thresholds: Iterable[int]) -> list[tuple[datetime, datetime]]:
    """Ranges of ``expires_at`` (exclusive, inclusive) of keys that crossed a threshold in
    (since, now]: narrow ranges an index on ``expires_at`` answers cheaply."""
    return [(since + timedelta(days=d), now + timedelta(days=d)) for d in sorted({0, *thresholds})]


def expiry_ref(key_id: str, days: int, expires_at: datetime) -> str:
    """Names one warning: per key, threshold and expiry (a renewed key is warned again)."""
    return f"{key_id}:{days}d:{int(expires_at.timestamp())}"


# --- retries -------------------------------------------------------------------------------
MAX_RETRY_DELAY = 3600.0


def retry_delay(attempts: int, first: float, maximum: float = MAX_RETRY_DELAY) -> float:
    """Seconds before the next try after ``attempts`` failed ones: first, 2x, 4x, ..."""
    return float(min(maximum, first * 2.0 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Outcome:
    """One delivery attempt's result, as the attempts log keeps it."""

    ok: bool
    status_code: int | None = None
    reply: str = ""
    error: str = ""
    permanent: bool = False  # retrying cannot help (a 5xx SMTP refusal, HTTP 410)


def http_outcome(status: int, body: str) -> Outcome:
    if 200 <= status < 300:
        return Outcome(True, status, body[:200])
    return Outcome(False, status, body[:200], f"HTTP {status}", permanent=status == 410)
