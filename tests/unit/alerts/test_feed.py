"""The in-memory side of alerts: what is queued for the writer, and what is deduplicated."""

from __future__ import annotations

import pytest

from apikm.alerts import feed as feed_module
from apikm.alerts.feed import AlertFeed

HOUR = 3600.0
T0 = 1_000 * HOUR  # on an hour boundary


def networks(feed: AlertFeed) -> list[tuple[str, str, str]]:
    return sorted((u.key_id, u.network, u.address) for u in feed.take().networks)


def test_one_pending_use_per_key_and_network() -> None:
    feed = AlertFeed()
    for address in ("10.1.2.3", "10.1.2.99", "10.1.3.1", "10.1.2.3"):
        feed.used("k1", address, T0)
    feed.used("k2", "10.1.2.3", T0)
    assert networks(feed) == [("k1", "10.1.2.0/24", "10.1.2.3"),
                              ("k1", "10.1.3.0/24", "10.1.3.1"),
                              ("k2", "10.1.2.0/24", "10.1.2.3")]
    feed.used("k1", "10.1.2.200", T0 + 1)  # known network: nothing more to write
    feed.used("k1", None, T0 + 1)  # no address: no network
    assert networks(feed) == []


def test_a_batch_given_back_is_written_next_time() -> None:
    feed = AlertFeed()
    feed.used("k1", "2001:db8:1:2::5", T0)
    feed.secret_reused("k1", "u1", 1, "10.0.0.1", T0)
    batch = feed.take()
    assert not feed.take()
    feed.give_back(batch)
    again = feed.take()
    assert [u.network for u in again.networks] == ["2001:db8:1::/48"]
    assert [r.generation for r in again.reuses] == [1]


def test_secret_reuse_once_per_key_address_and_hour() -> None:
    feed = AlertFeed()
    woken = []
    feed.urgent = lambda: woken.append(True)
    feed.secret_reused("k1", "u1", 1, "10.0.0.1", T0 + 5)
    feed.secret_reused("k1", "u1", 2, "10.0.0.1", T0 + 600)  # same address, same hour
    feed.secret_reused("k1", "u1", 1, "::ffff:10.0.0.2", T0 + 700)  # another address
    feed.secret_reused("k2", "u1", 1, "10.0.0.1", T0 + 800)  # another key
    feed.secret_reused("k1", "u1", 1, "10.0.0.1", T0 + HOUR)  # the next hour
    reuses = feed.take().reuses
    assert [(r.key_id, r.address, r.at) for r in reuses] == [
        ("k1", "10.0.0.1", T0 + 5), ("k1", "10.0.0.2", T0 + 700), ("k2", "10.0.0.1", T0 + 800),
        ("k1", "10.0.0.1", T0 + HOUR)]
    assert len({r.mark for r in reuses}) == 4 and len(woken) == 4
    feed.secret_reused("k1", "u1", 1, "10.0.0.1", T0 + 10)  # written already: still deduped
    assert not feed.take()


def test_limit_tripped_once_per_key_and_limit_per_window() -> None:
    feed = AlertFeed()
    for second in (0, 10, 59, 61, 3000):  # a 60 s limit: still one alert an hour
        feed.limit_tripped("k1", "u1", "key_rate", "10.0.0.1", T0 + second, 60)
    feed.limit_tripped("k1", "u1", "failures", "10.0.0.1", T0 + 1, 60)
    feed.limit_tripped("k1", "u1", "key_rate", "10.0.0.1", T0 + 86_400, 86_400)  # a day's
    feed.limit_tripped("k1", "u1", "key_rate", "10.0.0.1", T0 + 90_000, 86_400)
    trips = feed.take().trips
    assert [(t.limit, t.at) for t in trips] == [("key_rate", T0), ("failures", T0 + 1),
                                                ("key_rate", T0 + 86_400)]


def test_memory_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed_module, "MAX_KNOWN", 10)
    monkeypatch.setattr(feed_module, "MAX_PENDING", 3)
    monkeypatch.setattr(feed_module, "MAX_MARKS", 5)
    feed = AlertFeed(clock=lambda: T0)
    for n in range(50):
        feed.used(f"k{n}", f"10.0.{n}.1", T0)
        feed.secret_reused(f"k{n}", "u1", 1, "10.0.0.1", T0)
    assert feed._known <= 10 and len(feed._marks) <= 5
    batch = feed.take()
    assert len(batch.networks) == 3 and len(batch.reuses) == 3
    assert feed.dropped == 47 + 47
