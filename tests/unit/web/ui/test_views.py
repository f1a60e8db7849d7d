from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from apikm.web.ui.roles import grantable_roles
from apikm.web.ui.routes_auth import safe_next
from apikm.web.ui.views import key_state, lost_roles, relative, usage_chart

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def key(**values: Any) -> dict[str, Any]:
    return {"status": "active", "expires_at": NOW + timedelta(days=30), "revoked_at": None,
            "revoked_by": None, "revoked_reason": None, "roles": ["a", "c:r"], **values}


def test_a_revoked_key_says_by_whom_and_why() -> None:
    state = key_state(key(status="revoked", revoked_at=NOW, revoked_by="admin",
                          revoked_reason="Leaked"), NOW)
    assert state.label == "Revoked"
    assert state.reason == "Revoked 2026-03-01 12:00 UTC by admin: Leaked."
    default = key_state(key(status="revoked", revoked_at=NOW, revoked_by="alice",
                            revoked_reason="revoked by owner"), NOW)
    assert default.reason == "Revoked 2026-03-01 12:00 UTC by alice."


def test_expired_suspended_and_expiring_keys_are_told_apart() -> None:
    expired = key_state(key(status="expired", expires_at=NOW - timedelta(hours=1)), NOW)
    assert expired.tone == "bad" and "Renew it" in (expired.reason or "")
    suspended = key_state(key(status="suspended"), NOW, {"disabled_at": NOW})
    assert "disabled since 2026-03-01" in (suspended.reason or "")
    soon = key_state(key(expires_at=NOW + timedelta(days=6)), NOW)
    assert soon.expiring_soon and soon.reason is None
    assert not key_state(key(expires_at=NOW + timedelta(days=8)), NOW).expiring_soon


def test_roles_the_owner_lost_are_named() -> None:
    assert lost_roles(key(), {"a"}) == ["c:r"]


def test_relative_times_round_to_what_a_person_expects() -> None:
    assert relative(NOW + timedelta(days=7) - timedelta(seconds=3), NOW) == "in 7 days"
    assert relative(NOW - timedelta(minutes=1), NOW) == "1 minute ago"
    assert relative(NOW, NOW) == "just now"
    assert relative(None, NOW) == "never"


def test_the_usage_chart_has_one_bar_per_day_and_scales_to_the_peak() -> None:
    chart = usage_chart([{"day": "2026-03-01", "count": 7}, {"day": "2026-02-20", "count": 3},
                         {"day": "2026-01-01", "count": 99}], date(2026, 3, 1))
    assert len(chart.bars) == 30
    assert chart.bars[0].day == "2026-01-31" and chart.bars[-1].day == "2026-03-01"
    assert (chart.total, chart.peak) == (10, 7)
    assert chart.ticks[-1][1] == 10  # the axis ends at a round number above the peak
    tallest = max(chart.bars, key=lambda bar: bar.height)
    assert tallest.day == "2026-03-01"
    assert all(bar.height == 0 for bar in chart.bars if bar.count == 0)


def test_only_local_paths_are_followed_after_sign_in() -> None:
    assert safe_next("/keys/new?x=1") == "/keys/new?x=1"
    for bad in (None, "", "https://evil.example", "//evil.example", "/\\evil.example",
                "keys", "/a\r\nSet-Cookie: x"):
        assert safe_next(bad) == "/keys"


def test_keycloak_builtin_roles_are_not_offered() -> None:
    roles = frozenset({"analyst", "offline_access", "uma_authorization", "default-roles-demo",
                       "account:manage-account", "geoserver:read"})
    assert grantable_roles(roles, "demo") == ["analyst", "geoserver:read"]
