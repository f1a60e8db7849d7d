"""The verification decision as a pure function of a key record and the request.

Times are epoch seconds (``time.time()``): this runs on every request, and float
comparisons cost a fraction of building and comparing aware datetimes.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from apikm.networks import address_in
from apikm.verify.codes import ROTATED, Code
from apikm.verify.record import KeyRecord


@dataclass(frozen=True)
class Decision:
    code: Code
    missing_roles: tuple[str, ...] = ()
    reason: str | None = None


VALID = Decision(Code.VALID)


def decide(
    record: KeyRecord,
    presented_hash: str,
    now: float,
    client_ip: str | None,
    required_roles: Collection[str],
    max_staleness: float | None = None,
) -> Decision:
    if record.status == "revoked":
        return Decision(Code.REVOKED, reason=record.revoked_reason)
    # The previous secret of a rotated key: valid only during the overlap.
    if presented_hash != record.secret_hash and record.previous_expires_ts <= now:
        return Decision(Code.REVOKED, reason=ROTATED)
    if record.expires_ts <= now:
        return Decision(Code.EXPIRED)
    if record.status == "suspended" or not record.owner_enabled:
        return Decision(Code.USER_DISABLED)
    if max_staleness is not None and now - record.synced_ts > max_staleness:
        return Decision(Code.STALE)
    if record.allowed_networks and not address_in(client_ip, record.allowed_networks):
        return Decision(Code.IP_NOT_ALLOWED)
    if required_roles:
        missing = tuple(sorted(set(required_roles) - record.effective_roles))
        if missing:
            return Decision(Code.INSUFFICIENT_ROLES, missing_roles=missing)
    return VALID
