from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from apikm.verify.codes import Code
from apikm.verify.record import KeyRecord
from apikm.verify.rules import decide

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
RECORD = KeyRecord(
    id="k1", public_id="AbCd1234", name="n", status="active", expires_at=NOW + timedelta(days=1),
    granted_roles=frozenset({"analyst", "geo:read", "geo:write"}), allowed_networks=(),
    meta={}, rate_limit=None, secret_hash="new", previous_secret_hash="old",
    previous_secret_expires_at=NOW + timedelta(minutes=5), revoked_reason=None, owner_id="u1",
    username="alice", email=None, owner_enabled=True,
    owner_roles=frozenset({"analyst", "geo:read", "other"}), owner_groups=("/staff",),
    owner_synced_at=NOW - timedelta(minutes=1),
)


def code(record: KeyRecord = RECORD, presented: str = "new", ip: str | None = "10.0.0.1",
         roles: tuple[str, ...] = (), staleness: timedelta | None = None) -> Code:
    seconds = staleness.total_seconds() if staleness is not None else None
    return decide(record, presented, NOW.timestamp(), ip, roles, seconds).code


def test_valid_key() -> None:
    assert code() is Code.VALID


def test_effective_roles_are_grant_intersected_with_owner_roles() -> None:
    # geo:write was granted but the owner no longer holds it; "other" was never granted
    assert RECORD.effective_roles == {"analyst", "geo:read"}
    result = decide(RECORD, "new", NOW.timestamp(), None, ["geo:write", "other"])
    assert result.code is Code.INSUFFICIENT_ROLES
    assert result.missing_roles == ("geo:write", "other")


def test_revoked_wins_over_everything() -> None:
    revoked = replace(RECORD, status="revoked", revoked_reason="leaked",
                      expires_at=NOW - timedelta(days=1))
    result = decide(revoked, "new", NOW.timestamp(), None, [])
    assert result.code is Code.REVOKED and result.reason == "leaked"


def test_expired() -> None:
    assert code(replace(RECORD, expires_at=NOW)) is Code.EXPIRED


def test_previous_secret_valid_only_during_overlap() -> None:
    assert code(presented="old") is Code.VALID
    over = replace(RECORD, previous_secret_expires_at=NOW - timedelta(seconds=1))
    assert code(over, presented="old") is Code.REVOKED
    assert code(over, presented="new") is Code.VALID


def test_suspended_key_or_disabled_owner() -> None:
    assert code(replace(RECORD, status="suspended")) is Code.USER_DISABLED
    assert code(replace(RECORD, owner_enabled=False)) is Code.USER_DISABLED


def test_staleness() -> None:
    old = replace(RECORD, owner_synced_at=NOW - timedelta(hours=2))
    assert code(old, staleness=timedelta(hours=1)) is Code.STALE
    assert code(old, staleness=None) is Code.VALID


def test_networks() -> None:
    limited = replace(RECORD, allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),
                                                ipaddress.ip_network("2001:db8::/32")))
    assert code(limited, ip="10.2.3.4") is Code.VALID
    assert code(limited, ip="::ffff:10.2.3.4") is Code.VALID
    assert code(limited, ip="2001:db8::9") is Code.VALID
    for ip in ("11.0.0.1", None, "", "garbage", "2001:db9::1"):
        assert code(limited, ip=ip) is Code.IP_NOT_ALLOWED
