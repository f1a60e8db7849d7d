from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from apikm.keys import policy
from apikm.keys.policy import LifetimePolicy, PolicyError

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LIFETIME = LifetimePolicy(default=timedelta(hours=360), maximum=timedelta(days=365))


def test_default_expiry_comes_from_policy() -> None:
    assert policy.resolve_expiry(None, NOW, LIFETIME) == NOW + timedelta(hours=360)


def test_expiry_within_maximum_is_kept() -> None:
    wanted = NOW + timedelta(days=30)
    assert policy.resolve_expiry(wanted, NOW, LIFETIME) == wanted


@pytest.mark.parametrize("wanted", [NOW, NOW - timedelta(seconds=1), NOW + timedelta(days=366)])
def test_expiry_in_past_or_beyond_maximum_is_refused(wanted: datetime) -> None:
    with pytest.raises(PolicyError) as info:
        policy.resolve_expiry(wanted, NOW, LIFETIME)
    assert info.value.field == "expires_at"


def test_naive_expiry_is_refused() -> None:
    with pytest.raises(PolicyError, match="time zone"):
        policy.resolve_expiry(datetime(2026, 2, 1), NOW, LIFETIME)


def test_expiry_can_only_be_brought_forward() -> None:
    current = NOW + timedelta(days=10)
    assert policy.narrowed_expiry(current, NOW + timedelta(days=5), NOW) == NOW + timedelta(days=5)
    with pytest.raises(PolicyError):
        policy.narrowed_expiry(current, NOW + timedelta(days=11), NOW)


def test_refused_roles_lists_what_the_caller_lacks() -> None:
    assert policy.refused_roles(["a", "geo:read"], {"a", "geo:read", "b"}) == []
    assert policy.refused_roles(["a", "geo:write", "z"], {"a"}) == ["geo:write", "z"]


@pytest.mark.parametrize("bad", ["", " ", ":read", "geo:", " analyst", "analyst\n",
                                 "geoserver:read ", "\tanalyst", "geo: read", "geo :read",
                                 "ana\x00lyst", "analyst\u2028", "\u00a0analyst"])
def test_invalid_role_names_are_refused(bad: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy.normalize_roles([bad])
    assert info.value.field == "roles"


def test_roles_are_unique_and_sorted() -> None:
    assert policy.normalize_roles(["b", "a", "b", "geo:read", "Data Analyst"]) == [
        "Data Analyst", "a", "b", "geo:read"]


def test_networks_are_canonical_ipv4_and_ipv6() -> None:
    assert policy.normalize_networks(["10.1.2.3/8", "2001:db8::1/32", "192.168.1.5"]) == [
        "10.0.0.0/8", "2001:db8::/32", "192.168.1.5/32"]


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not-an-ip", "300.1.1.1", "::g/64", ""])
def test_invalid_networks_are_refused(bad: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy.normalize_networks([bad])
    assert info.value.field == "allowed_networks"


def test_meta_size_limit_counts_utf8_bytes() -> None:
    assert policy.check_meta({"a": "x" * 10}, 100) == {"a": "x" * 10}
    with pytest.raises(PolicyError, match="limit is 20"):
        policy.check_meta({"a": "é" * 10}, 20)


def test_rate_limit_strings() -> None:
    assert policy.check_rate_limit("100/minute") == "100/minute"
    assert policy.check_rate_limit(None) is None
    with pytest.raises(PolicyError):
        policy.check_rate_limit("lots")


def test_rotation_overlap_is_bounded() -> None:
    assert policy.rotation_overlap(60, timedelta(hours=1)) == timedelta(seconds=60)
    with pytest.raises(PolicyError):
        policy.rotation_overlap(7200, timedelta(hours=1))
    with pytest.raises(PolicyError):
        policy.rotation_overlap(-1, timedelta(hours=1))
