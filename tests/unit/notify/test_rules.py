"""What is notified to whom and when: thresholds, recipients, preferences, retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from apikm.notify import rules

NOW = datetime(2030, 1, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
OLD = NOW - 60 * DAY  # created long ago


def crossed(expires_at: datetime, since: datetime, created: datetime = OLD) -> int | None:
    return rules.crossed_threshold(expires_at, created, since, NOW, (30, 7, 1))


def test_a_threshold_crossed_in_the_window_is_named() -> None:
    since = NOW - timedelta(seconds=5)
    assert crossed(NOW + 7 * DAY - timedelta(seconds=1), since) == 7
    assert crossed(NOW + 30 * DAY, since) == 30
    assert crossed(NOW - timedelta(seconds=2), since) == 0  # expired just now


def test_nothing_is_crossed_between_thresholds() -> None:
    since = NOW - timedelta(seconds=5)
    assert crossed(NOW + 10 * DAY, since) is None
    assert crossed(NOW + 7 * DAY + timedelta(seconds=1), since) is None  # in a second


def test_after_an_outage_only_the_nearest_threshold_is_named() -> None:
    # Away for 10 days: the key crossed 7 days and 1 day meanwhile; one warning, "1 day".
    assert crossed(NOW + 12 * 3600 * timedelta(seconds=1), NOW - 10 * DAY) == 1


def test_a_key_made_inside_a_threshold_is_not_warned_for_it() -> None:
    since = NOW - timedelta(seconds=5)
    created = NOW - timedelta(seconds=2)  # made to last just under 7 days
    assert crossed(NOW + 7 * DAY - timedelta(seconds=3), since, created) is None


@given(st.integers(min_value=1, max_value=40 * 86400), st.integers(min_value=1, max_value=600))
def test_every_threshold_is_crossed_in_exactly_one_of_consecutive_windows(
        offset: int, step: int) -> None:
    """Scanning in consecutive windows names each crossed threshold once, never twice."""
    expires_at = NOW + timedelta(seconds=offset)
    named = []
    at = NOW
    while at < expires_at + timedelta(seconds=step):
        following = at + timedelta(seconds=step)
        found = rules.crossed_threshold(expires_at, OLD, at, following, (30, 7, 1))
        if found is not None:
            named.append(found)
        at = following
    assert len(named) == len(set(named))
    assert named[-1] == 0  # expiry itself


def test_crossing_windows_cover_the_thresholds() -> None:
    since = NOW - timedelta(seconds=5)
    windows = rules.crossing_windows(since, NOW, (7, 1))
    assert windows == [(since, NOW), (since + DAY, NOW + DAY), (since + 7 * DAY, NOW + 7 * DAY)]


def test_expiry_refs_differ_per_threshold_and_expiry() -> None:
    refs = {rules.expiry_ref("k", 7, NOW), rules.expiry_ref("k", 1, NOW),
            rules.expiry_ref("k", 7, NOW + DAY)}
    assert len(refs) == 3


def test_owner_mail_for_revocations_by_others_only() -> None:
    assert not rules.mail_owner("key.revoked", "alice-id", "alice-id", {})
    assert rules.mail_owner("key.revoked", "admin-id", "alice-id", {"reason": "audit"})
    assert rules.mail_owner("key.revoked", "sync", "alice-id", {"reason": "owner deleted"})
    assert rules.mail_owner("key.created", "alice-id", "alice-id", {})


def test_a_leak_gives_one_mail_not_a_revoke_mail_as_well() -> None:
    assert not rules.mail_owner("key.revoked", "leaks", "alice-id", {"reason": "leaked"})
    assert rules.mail_owner("key.leaked", "leaks", "alice-id", {"url": "https://x"})


def test_alerts_go_to_admins() -> None:
    assert {e for e in rules.EVENT_TYPES if rules.mail_admins(e)} == {
        "key.new_network", "key.secret_reuse", "key.limit_tripped", "key.leaked"}


def test_preferences_layer_and_always_topics_stay_on() -> None:
    topics = rules.merged_topics({"created": False, "expired": False},
                                 {"expired": True, "leaked": False, "bogus": True})
    assert topics["created"] is False  # admins' default
    assert topics["expired"] is True  # the user's own choice wins
    assert topics["leaked"] is True  # cannot be turned off
    assert "bogus" not in topics


def test_webhook_filters() -> None:
    assert rules.webhook_wants([], "key.created")
    assert rules.webhook_wants(["key.created"], "key.created")
    assert not rules.webhook_wants(["key.revoked"], "key.created")


def test_only_allow_listed_details_are_shown() -> None:
    shown = rules.shown_details({"reason": "r", "secret": "s", "key": "k", "nested": {"a": 1}})
    assert shown == {"reason": "r"}


def test_retry_delays_double_up_to_a_ceiling() -> None:
    assert [rules.retry_delay(n, 30) for n in (1, 2, 3)] == [30, 60, 120]
    assert rules.retry_delay(20, 30) == rules.MAX_RETRY_DELAY


def test_http_outcomes() -> None:
    assert rules.http_outcome(204, "").ok
    failed = rules.http_outcome(500, "boom")
    assert not failed.ok and not failed.permanent and failed.status_code == 500
    assert rules.http_outcome(410, "gone").permanent


def test_webhook_endpoint_fields_are_checked() -> None:
    import pytest

    from apikm.notify.webhooks import (
        EndpointError,
        check_description,
        check_events,
        check_secret,
        check_url,
        new_secret,
    )

    assert check_url(" https://hooks.example.org/x ") == "https://hooks.example.org/x"
    for url in ("ftp://x", "https://", "http://[", "http://x:99999/", "http://a\x00b",
                "https://u:p@x/", "http://x/ y", "x" * 3000):
        with pytest.raises(EndpointError):
            check_url(url)
    assert check_secret(new_secret()).startswith("whsec_")
    for secret in ("whsec_", "whsec_c2hvcnQ=", "whsec_\x00", "nöt"):
        with pytest.raises(EndpointError):
            check_secret(secret)
    with pytest.raises(EndpointError):
        check_events(["key.created", "key.bogus"])
    with pytest.raises(EndpointError):
        check_description("a\x00")


def test_producers_and_the_notifier_agree_on_revocation_reasons() -> None:
    """The revocations written together with an alert carry the reasons the notifier knows,
    so their owners get the alert's mail alone."""
    from apikm.alerts.writer import REUSE_REASON
    from apikm.leaks.handler import LEAKED

    assert rules.ALERT_REVOCATIONS == {LEAKED, REUSE_REASON}


def test_a_revocation_that_comes_with_an_alert_is_not_mailed_twice() -> None:
    for reason in ("secret_reuse", "leaked"):
        assert not rules.mail_owner("key.revoked", "apikm", "alice-id", {"reason": reason})
        assert rules.mail_owner("key.revoked", "admin-id", "alice-id", {"reason": "left"})
    assert rules.mail_owner("key.secret_reuse", "apikm", "alice-id", {"revoked": True})


def test_an_alerts_time_and_generation_reach_webhooks() -> None:
    shown = rules.shown_details({"network": "10.1.2.0/24", "at": "2030-01-10T12:00:00+00:00",
                                 "generation": 2, "token": "apikm_x", "extra": {"a": 1}})
    assert shown == {"network": "10.1.2.0/24", "at": "2030-01-10T12:00:00+00:00",
                     "generation": 2}
