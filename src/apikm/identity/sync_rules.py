"""The sync's decisions as pure functions: durations, the event cursor, what an event touches,
and what becomes of an owner's keys. No HTTP, no SQL: all of it is unit-tested.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# --- durations --------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str | float | timedelta) -> timedelta:
    """``30s``, ``5m``, ``24h``, ``7d``, ``1h30m`` or a plain number of seconds."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        value = text.strip().lower().replace(" ", "")
        seconds = _duration_seconds(value)
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return timedelta(seconds=seconds)


def _duration_seconds(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    parts = _PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration such as 30s, 5m, 24h or 7d: {value!r}")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def format_duration(duration: timedelta) -> str:
    """The shortest exact spelling (``24h``, ``90s``), for messages and audit reasons."""
    seconds = duration.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# --- event cursor -----------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """A Keycloak admin or user event, reduced to what the sync needs."""

    id: str
    time_ms: int
    user_id: str | None = None  # the user it is about, when it is about one
    touches_everyone: bool = False  # group/role/client changes: rights of many users move


@dataclass(frozen=True)
class EventCursor:
    """Where event polling stands, so that no event is missed or handled twice.

    Keycloak stamps an event when it is created and commits it a moment later, so an event
    can appear *after* younger ones were already read. Each poll therefore re-reads a short
    window before the newest time seen (``overlap_ms``) and skips the ids it already handled
    there. Events that show up later than the window are caught by the full pass.
    """

    time_ms: int
    seen: Mapping[str, int] = field(default_factory=dict)  # event id -> time, inside window

    def query_from(self, overlap_ms: int) -> int:
        """``dateFrom`` for the next poll (inclusive, epoch milliseconds)."""
        return max(0, self.time_ms - overlap_ms)

    def unseen(self, events: Iterable[Event]) -> list[Event]:
        """Events not handled yet, oldest first, each once even if a page repeated it."""
        fresh: dict[str, Event] = {}
        for event in events:
            if event.id not in self.seen and event.id not in fresh:
                fresh[event.id] = event
        return sorted(fresh.values(), key=lambda e: (e.time_ms, e.id))

    def advanced(self, handled: Sequence[Event], overlap_ms: int) -> EventCursor:
        """The cursor after ``handled`` were processed; forgets ids that left the window."""
        newest = max([self.time_ms, *(e.time_ms for e in handled)])
        horizon = newest - overlap_ms
        seen = {i: t for i, t in self.seen.items() if t >= horizon}
        seen.update({e.id: e.time_ms for e in handled if e.time_ms >= horizon})
        return EventCursor(newest, seen)

    def to_json(self) -> dict[str, object]:
        return {"time_ms": self.time_ms, "seen": dict(self.seen)}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> EventCursor:
        time_ms = data.get("time_ms")
        seen = data.get("seen")
        if not isinstance(time_ms, int) or not isinstance(seen, dict):
            raise ValueError("not an event cursor")
        return cls(time_ms, {str(k): int(v) for k, v in seen.items()})


# --- what an event touches --------------------------------------------------------------

# Users are "users/<id>" in resourcePath (Keycloak writes the decoded path): a UUID for users
# stored in Keycloak, "f:<provider component id>:<external id>" for users of a federation
# provider without import (LDAP, custom user storage), e.g. "users/f:3f5c...:alice".
_USER_PATH = re.compile(r"^users/([0-9A-Za-z-]{1,64}|f:[0-9A-Za-z-]{1,64}:[^/]{1,180})(?:/|$)")
# Admin changes that can move the effective roles or groups of users other than the one in
# the path: group role mappings and moves, role composites, role or client deletion,
# default roles, user federation (LDAP). They make the sync run a full pass at once.
_EVERYONE = frozenset({
    "GROUP", "REALM_ROLE", "CLIENT_ROLE", "REALM_ROLE_MAPPING", "CLIENT_ROLE_MAPPING",
    "CLIENT", "REALM", "COMPONENT", "USER_FEDERATION_PROVIDER", "ORGANIZATION",
    "ORGANIZATION_MEMBERSHIP",
})
# Scope mappings decide what goes into tokens of a client, not what a user holds.
_NOT_RIGHTS = re.compile(r"(^|/)(scope-mappings|client-scopes|protocol-mappers)(/|$)")
# User events that change a user without any admin event.
USER_EVENT_TYPES = ("USER_DISABLED_BY_PERMANENT_LOCKOUT", "DELETE_ACCOUNT", "UPDATE_PROFILE",
                    "UPDATE_EMAIL")


def admin_event(raw: Mapping[str, object]) -> Event | None:
    """Read a Keycloak AdminEventRepresentation; None when it does not concern rights."""
    if not isinstance(raw, Mapping):
        return None
    event_id, time_ms = raw.get("id"), raw.get("time")
    if not isinstance(event_id, str) or not isinstance(time_ms, int):
        return None
    path = str(raw.get("resourcePath") or "")
    resource = str(raw.get("resourceType") or "")
    match = _USER_PATH.match(path)
    if match:
        return Event(event_id, time_ms, user_id=match.group(1))
    if resource in _EVERYONE and not _NOT_RIGHTS.search(path):
        return Event(event_id, time_ms, touches_everyone=True)
    return Event(event_id, time_ms)  # still recorded in the cursor, so it is not re-read


def user_event(raw: Mapping[str, object]) -> Event | None:
    """Read a Keycloak EventRepresentation (a user event)."""
    if not isinstance(raw, Mapping):
        return None
    event_id, time_ms, user_id = raw.get("id"), raw.get("time"), raw.get("userId")
    if not isinstance(event_id, str) or not isinstance(time_ms, int):
        return None
    return Event(event_id, time_ms, user_id=user_id if isinstance(user_id, str) else None)


# --- what becomes of an owner's keys ----------------------------------------------------


@dataclass(frozen=True)
class KeycloakUser:
    """A user as the admin API shows them now: the facts effective rights are built from."""

    id: str
    username: str
    email: str | None
    enabled: bool
    roles: frozenset[str]  # "role" (realm) and "client_id:role" (client), composites resolved
    groups: tuple[str, ...]  # full paths, sorted
    # The attributes named in APIKM_OAUTH2_ATTRIBUTES that the user has: name -> values.
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class LiveKey:
    id: str
    status: str  # active | suspended


@dataclass(frozen=True)
class OwnerPlan:
    enabled: bool
    disabled_at: datetime | None
    suspend: tuple[str, ...] = ()
    reactivate: tuple[str, ...] = ()
    revoke: tuple[str, ...] = ()
    revoke_reason: str | None = None


def plan_owner(observed: KeycloakUser | None, disabled_at: datetime | None,
               keys: Sequence[LiveKey], now: datetime, grace: timedelta) -> OwnerPlan:
    """Decide the owner's state and the fate of their live keys from what Keycloak shows.

    Revocation is final, so it rests only on what Keycloak confirms: the user is gone, or
    is *still* disabled once the grace period since we first saw them disabled has passed.
    A user found enabled gets suspended keys back, even after a long sync outage.
    """
    if observed is None:
        return OwnerPlan(False, disabled_at or now, revoke=_ids(keys),
                         revoke_reason="owner deleted in Keycloak")
    if observed.enabled:
        return OwnerPlan(True, None,
                         reactivate=_ids(k for k in keys if k.status == "suspended"))
    since = disabled_at or now
    if now - since >= grace:
        return OwnerPlan(False, since, revoke=_ids(keys), revoke_reason=(
            f"owner disabled in Keycloak for more than {format_duration(grace)}"))
    return OwnerPlan(False, since, suspend=_ids(k for k in keys if k.status == "active"))


class MalformedAnswer(ValueError):
    """A 200 answer of the admin API without the shape Keycloak documents (a proxy's error
    page, a truncated body, another version): that user cannot be read this time."""


def names_in(rows: object, field: str, what: str) -> list[str]:
    """``[row[field] for row in rows]`` of a JSON list of objects, each with a text field."""
    if not isinstance(rows, list):
        raise MalformedAnswer(f"{what}: not a JSON list")
    found: list[str] = []
    for row in rows:
        value = row.get(field) if isinstance(row, dict) else None
        if not isinstance(value, str) or not value:
            raise MalformedAnswer(f"{what}: an entry without {field!r}")
        found.append(value)
    return found


def user_from_answers(user_id: str, rep: object, realm_roles: Iterable[str],
                      groups: Iterable[str], client_roles: Mapping[str, Iterable[str]],
                      attribute_names: Sequence[str] = ()) -> KeycloakUser:
    """The user from the admin API's answers (``UserRepresentation``, role and group names).

    ``enabled`` is required, never assumed: a missing flag read as "disabled" would suspend
    the owner's keys, and revoke them once the grace period passed."""
    if not isinstance(rep, dict):
        raise MalformedAnswer("user: not a JSON object")
    if rep.get("id") != user_id:
        raise MalformedAnswer("user: the answer is about another user, or has no id")
    enabled, username, email = rep.get("enabled"), rep.get("username"), rep.get("email")
    if not isinstance(enabled, bool):
        raise MalformedAnswer("user: no 'enabled' flag")
    roles = set(realm_roles)
    for client_id, names in client_roles.items():
        roles.update(f"{client_id}:{name}" for name in names)
    return KeycloakUser(
        id=user_id, username=username if isinstance(username, str) and username else user_id,
        email=email if isinstance(email, str) and email else None, enabled=enabled,
        roles=frozenset(roles), groups=tuple(sorted(groups)),
        attributes=wanted_attributes(rep.get("attributes"), attribute_names))


def wanted_attributes(found: object, names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The named attributes of a UserRepresentation's ``attributes`` (name -> list of
    strings); anything else Keycloak keeps about the user is not stored."""
    if not names or not isinstance(found, dict):
        return {}
    kept: dict[str, tuple[str, ...]] = {}
    for name in names:
        values = found.get(name)
        if isinstance(values, str):
            values = [values]
        if isinstance(values, list):
            texts = tuple(v for v in values if isinstance(v, str))
            if texts:
                kept[name] = texts
    return kept


def _ids(keys: Iterable[LiveKey]) -> tuple[str, ...]:
    return tuple(sorted(k.id for k in keys))


def revocation_due(disabled_at: datetime | None, now: datetime, grace: timedelta) -> bool:
    """A disabled owner whose grace period ended: check Keycloak now, do not wait for the
    next full pass."""
    return disabled_at is not None and now - disabled_at >= grace


def clients_of(granted_roles: Iterable[str]) -> frozenset[str]:
    """The Keycloak clients whose roles the keys carry: only their roles can matter."""
    return frozenset(r.partition(":")[0] for r in granted_roles if ":" in r)


@dataclass
class Backoff:
    """Exponential retry delay with a ceiling; ``reset`` after a success."""

    initial: float = 1.0
    maximum: float = 15.0
    failures: int = 0

    def next_delay(self) -> float:
        delay: float = min(self.maximum, self.initial * 2.0 ** self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
