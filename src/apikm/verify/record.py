"""What verification needs to know about a key, read in one query and cached.

Everything the hot path compares is precomputed here once per lookup (epoch seconds,
effective roles), not once per request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from apikm.networks import IPNetwork, parse_networks


@dataclass(frozen=True, slots=True)  # slots: no attribute dict for the collector to walk
class KeyRecord:
    id: str
    public_id: str
    name: str
    status: str  # active | suspended | revoked
    expires_at: datetime
    granted_roles: frozenset[str]
    allowed_networks: tuple[IPNetwork, ...]
    meta: dict[str, Any]
    rate_limit: str | None
    secret_hash: str
    previous_secret_hash: str | None
    previous_secret_expires_at: datetime | None
    revoked_reason: str | None
    owner_id: str
    username: str
    email: str | None
    owner_enabled: bool
    owner_roles: frozenset[str]
    owner_groups: tuple[str, ...]
    owner_synced_at: datetime
    # Opt-in: the key carries all of its owner's current roles, not granted ∩ owner's.
    all_roles: bool = False
    # The owner's Keycloak attributes named in APIKM_OAUTH2_ATTRIBUTES (apikm.compat).
    owner_attributes: dict[str, Any] = field(default_factory=dict)
    imported_from: str | None = None
    generation: int = 1  # of the current secret; the previous one is generation - 1
    # Derived once: epoch seconds for the per-request comparisons, effective roles.
    expires_ts: float = field(init=False, repr=False)
    previous_expires_ts: float = field(init=False, repr=False)
    synced_ts: float = field(init=False, repr=False)
    effective_roles: frozenset[str] = field(init=False, repr=False)
    # Answers derived from this record (response bytes, headers), built on first use and
    # dropped with the record when the cache forgets it.
    memo: dict[str, Any] = field(init=False, repr=False, compare=False)
    # The VALID answer naming this record (a ``Verification``), made on first use. Not in
    # ``memo``: it points back here, and a memo holding only bytes and tuples of bytes is
    # one object fewer for the collector to walk per cached key.
    valid_answer: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        previous = self.previous_secret_expires_at
        object.__setattr__(self, "expires_ts", self.expires_at.timestamp())
        object.__setattr__(self, "previous_expires_ts",
                           previous.timestamp() if previous else 0.0)
        object.__setattr__(self, "synced_ts", self.owner_synced_at.timestamp())
        # Granted ∩ what the owner holds now: a key never carries more than its owner. An
        # all-roles key carries exactly what the owner holds now.
        object.__setattr__(self, "effective_roles", self.owner_roles if self.all_roles
                           else role_set(self.granted_roles & self.owner_roles))
        object.__setattr__(self, "memo", {})
        object.__setattr__(self, "valid_answer", None)


# One frozenset per distinct set of roles, shared by every record that holds it: a set is
# an object the collector always tracks, and a full collection walks every tracked object
# (three sets a record made a cache of 100,000 keys a million objects to walk).
_ROLE_SETS: dict[frozenset[str], frozenset[str]] = {}
_MAX_ROLE_SETS = 10_000


def role_set(roles: Iterable[str]) -> frozenset[str]:
    fresh = frozenset(roles)
    shared = _ROLE_SETS.get(fresh)
    if shared is None:
        if len(_ROLE_SETS) >= _MAX_ROLE_SETS:
            _ROLE_SETS.clear()  # sets still held by records stay valid; only sharing restarts
        shared = _ROLE_SETS[fresh] = fresh
    return shared


def record_from_row(row: Any) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        public_id=row.public_id,
        name=row.name,
        status=row.status,
        expires_at=row.expires_at,
        granted_roles=role_set(row.roles),
        allowed_networks=parse_networks(row.allowed_networks),
        meta=row.meta,
        rate_limit=row.rate_limit,
        secret_hash=row.secret_hash,
        previous_secret_hash=row.previous_secret_hash,
        previous_secret_expires_at=row.previous_secret_expires_at,
        revoked_reason=row.revoked_reason,
        owner_id=row.owner_id,
        username=row.username,
        email=row.email,
        owner_enabled=row.enabled,
        owner_roles=role_set(row.owner_roles),
        owner_groups=tuple(row.groups),
        owner_synced_at=row.synced_at,
        all_roles=bool(row.all_roles),
        owner_attributes=attribute_values(row.attributes),
        imported_from=row.imported_from,
        generation=row.generation,
    )


@dataclass(frozen=True)
class RetiredSecret:
    """A secret a rotation retired, found by a lookup that found no live key: it never
    verifies; it answers REVOKED and, if the key is live, raises a ``secret_reuse`` alert."""

    key_id: str
    owner_id: str
    generation: int
    key_status: str
    revoked_reason: str | None


def attribute_values(stored: Any) -> dict[str, Any]:
    """Keycloak keeps every attribute as a list of strings; answers give a single value as
    a string and several as a list (as Keycloak's own token mappers do)."""
    if not isinstance(stored, dict):
        return {}
    values: dict[str, Any] = {}
    for name, value in stored.items():
        if isinstance(value, list):
            texts = [str(v) for v in value]
            values[str(name)] = texts[0] if len(texts) == 1 else texts
        elif value is not None:
            values[str(name)] = str(value)
    return values
