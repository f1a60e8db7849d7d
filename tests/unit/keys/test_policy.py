from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from limits import parse as parse_rate_limit

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


@pytest.mark.parametrize(("given", "stored"), [
    ("100/minute", "100/minute"), ("1/second", "1/second"), ("5000/hour", "5000/hour"),
    ("1000000/day", "1000000/day"), ("100 per minute", "100/minute"),
    ("100/Minutes", "100/minute"), ("5/10 minutes", "5/10 minutes"),
    ("5 per 10 minutes", "5/10 minutes"), ("10 per 5 seconds", "10/5 seconds"),
    ("3/24 hours", "3/24 hours"), ("7/1 day", "7/1 days"), (" 20 / hour ", "20/hour"),
])
def test_rate_limits_in_limits_notation_up_to_a_day(given: str, stored: str) -> None:
    assert policy.check_rate_limit(given) == stored
    parse_rate_limit(stored)  # what the limiter reads


@pytest.mark.parametrize("bad", [
    "lots", "", "100", "/minute", "0/minute", "1000001/minute", "99999999999999999999/year",
    "5/year", "5/month", "5 per 1000000 years", "5/2 days", "5/25 hours", "5/1441 minutes",
    "5/0 minutes", "1/second;1000/year", "1/second,5/day", "-1/minute", "1.5/minute",
    "\u0661/minute", "5/minute\n1/year",
])
def test_other_rate_limits_are_refused(bad: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy.check_rate_limit(bad)
    assert info.value.field == "rate_limit"


def test_no_rate_limit() -> None:
    assert policy.check_rate_limit(None) is None


def test_rotation_overlap_is_bounded() -> None:
    assert policy.rotation_overlap(60, timedelta(hours=1)) == timedelta(seconds=60)
    with pytest.raises(PolicyError):
        policy.rotation_overlap(7200, timedelta(hours=1))
    with pytest.raises(PolicyError):
        policy.rotation_overlap(-1, timedelta(hours=1))
    with pytest.raises(PolicyError):  # found by the fuzz test: was an OverflowError, a 500
        policy.rotation_overlap(6261529884602598370050048, timedelta(hours=1))


def nested(levels: int) -> dict[str, object]:
    """An object ``levels`` deep: nested(1) == {}, nested(2) == {"a": {}}."""
    meta: dict[str, object] = {}
    for _ in range(levels - 1):
        meta = {"a": meta}
    return meta


def test_meta_depth_is_capped() -> None:
    assert policy.check_meta(nested(policy.MAX_META_DEPTH), 4096) == nested(8)
    assert policy.check_meta({"a": [[[[[[[1]]]]]]]}, 4096)  # 8 levels: object + 7 lists
    for deep in (nested(9), nested(300), {"a": [[[[[[[[1]]]]]]]]}):
        with pytest.raises(PolicyError, match="8 levels") as info:
            policy.check_meta(deep, 10**6)
        assert info.value.field == "meta"


def test_meta_deeper_than_the_stack_is_refused_without_recursion() -> None:
    with pytest.raises(PolicyError, match="levels"):
        policy.check_meta(nested(100_000), 10**9)


@pytest.mark.parametrize("bad", [{"a": "nul\x00"}, {"nul\x00": 1}, {"a": "\ud800"},
                                 {"a": float("nan")}, {"a": [float("-inf")]}, {"a": {1, 2}},
                                 {"a": b"bytes"}, {1: "int key"}])
def test_meta_that_cannot_be_stored_everywhere_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(PolicyError) as info:
        policy.check_meta(bad, 4096)
    assert info.value.field == "meta"


def test_meta_must_be_an_object() -> None:
    with pytest.raises(PolicyError, match="object"):
        policy.check_meta(["a"], 4096)  # type: ignore[arg-type]


def test_stored_meta_too_deep_is_shown_cut_at_the_cap_never_lost() -> None:
    assert policy.displayable_meta({"p": 1}) == {"p": 1}
    shown = policy.displayable_meta(nested(300))
    inner = shown
    for _ in range(7):
        inner = inner["a"]
    assert isinstance(inner, dict) and isinstance(inner["a"], str)  # level 9 as JSON text
    assert inner["a"].startswith('{"a":{"a":')
    assert policy.displayable_meta(nested(8)) == nested(8)
    assert policy.displayable_meta(["not", "an", "object"]) == {"value": '["not","an","object"]'}
    assert policy.displayable_meta(None) == {"value": "null"}
