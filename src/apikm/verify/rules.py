"""The verification decision as a pure function of a key record and the request."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from apikm.networks import address_in
from apikm.verify.codes import Code
from apikm.verify.record import KeyRecord


@dataclass(frozen=True)
class Decision:
    code: Code
    missing_roles: tuple[str, ...] = ()
    reason: str | None = None


def decide(
    record: KeyRecord,
    presented_hash: str,
    now: datetime,
    client_ip: str | None,
    required_roles: Collection[str],
    max_staleness: timedelta | None = None,
) -> Decision:
    if record.status == "revoked":
        return Decision(Code.REVOKED, reason=record.revoked_reason)
    if presented_hash != record.secret_hash:
        # The previous secret of a rotated key: valid only during the overlap.
        expires = record.previous_secret_expires_at
        if expires is None or expires <= now:
            return Decision(Code.REVOKED, reason="rotated")
    if record.expires_at <= now:
        return Decision(Code.EXPIRED)
    if record.status == "suspended" or not record.owner_enabled:
        return Decision(Code.USER_DISABLED)
    if max_staleness is not None and now - record.owner_synced_at > max_staleness:
        return Decision(Code.STALE)
    if record.allowed_networks and not ip_allowed(client_ip, record):
        return Decision(Code.IP_NOT_ALLOWED)
    missing = tuple(sorted(set(required_roles) - record.effective_roles))
    if missing:
        return Decision(Code.INSUFFICIENT_ROLES, missing_roles=missing)
    return Decision(Code.VALID)


def ip_allowed(client_ip: str | None, record: KeyRecord) -> bool:
    return address_in(client_ip, record.allowed_networks)
