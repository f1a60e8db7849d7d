"""Verification outcomes (the public contract's ``code`` values)."""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    VALID = "VALID"
    MALFORMED = "MALFORMED"
    NOT_FOUND = "NOT_FOUND"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"
    USER_DISABLED = "USER_DISABLED"
    IP_NOT_ALLOWED = "IP_NOT_ALLOWED"
    INSUFFICIENT_ROLES = "INSUFFICIENT_ROLES"
    RATE_LIMITED = "RATE_LIMITED"
    STALE = "STALE"


MESSAGES: dict[Code, str] = {
    Code.VALID: "key is valid",
    Code.MALFORMED: "not an API key of this service (format or checksum)",
    Code.NOT_FOUND: "unknown API key",
    Code.EXPIRED: "API key has expired",
    Code.REVOKED: "API key has been revoked",
    Code.USER_DISABLED: "the key's owner is disabled in Keycloak",
    Code.IP_NOT_ALLOWED: "API key is not allowed from this network",
    Code.INSUFFICIENT_ROLES: "API key lacks the required roles",
    Code.RATE_LIMITED: "too many requests",
    Code.STALE: "the owner's rights could not be confirmed with Keycloak recently",
}

# The ``reason`` of REVOKED for a secret a rotation retired, presented after its overlap.
ROTATED = "rotated"

# Outcomes that look like guessing or stolen-key use: they count towards the per-address
# failure limit. Authorization outcomes of a good key (roles, staleness) do not.
COUNTED_FAILURES = frozenset(
    {Code.MALFORMED, Code.NOT_FOUND, Code.EXPIRED, Code.REVOKED, Code.USER_DISABLED,
     Code.IP_NOT_ALLOWED}
)
