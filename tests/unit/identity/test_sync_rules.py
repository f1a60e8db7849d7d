"""The sync's pure rules: durations, the event cursor, event classification, key fates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from apikm.config import ConfigError, load_settings
from apikm.identity.sync_rules import (
    Backoff,
    Event,
    EventCursor,
    KeycloakUser,
    LiveKey,
    MalformedAnswer,
    admin_event,
    clients_of,
    format_duration,
    names_in,
    parse_duration,
    plan_owner,
    revocation_due,
    user_event,
    user_from_answers,
)

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
GRACE = timedelta(hours=24)


# --- durations --------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("24h", 86400), ("7d", 604800), ("1w", 604800),
    ("1h30m", 5400), ("250ms", 0.25), ("90", 90), ("1.5h", 5400), (" 2 h ", 7200),
    ("0", 0), (45, 45), (timedelta(minutes=2), 120),
])
def test_parse_duration(text: str | int | timedelta, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "h", "5x", "-5s", "1h-5m", "s5"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (86400, "1d"), (3600, "1h"), (90, "90s"), (300, "5m"), (1.5, "1.5s"), (1209600, "2w")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


def test_settings_read_durations_and_refuse_staleness_below_full_pass() -> None:
    settings = load_settings(max_staleness="2h", revoke_disabled_after="30s")
    assert settings.max_staleness == timedelta(hours=2)
    assert settings.revoke_disabled_after == timedelta(seconds=30)
    with pytest.raises(ConfigError, match="APIKM_MAX_STALENESS"):
        load_settings(max_staleness="60s", keycloak_sync_freq=120)
    with pytest.raises(ConfigError, match="APIKM_REVOKE_DISABLED_AFTER"):
        load_settings(revoke_disabled_after="tomorrow")
    # Without a sync, only tokens refresh owners: any staleness limit is the operator's call.
    assert load_settings(max_staleness="60s", keycloak_sync_freq=120,
                         sync_enabled=False).max_staleness == timedelta(seconds=60)


# --- event cursor -----------------------------------------------------------------------
def ev(event_id: str, time_ms: int, user: str | None = "u1") -> Event:
    return Event(event_id, time_ms, user_id=user)


def test_cursor_hands_out_each_event_once_across_overlapping_polls() -> None:
    overlap = 1_000
    cursor = EventCursor(10_000)
    assert cursor.query_from(overlap) == 9_000
    first = cursor.unseen([ev("a", 10_100), ev("b", 10_200)])
    cursor = cursor.advanced(first, overlap)
    # The next poll re-reads the window and finds a, b again plus c: only c is new.
    second = cursor.unseen([ev("a", 10_100), ev("b", 10_200), ev("c", 10_300)])
    assert [e.id for e in second] == ["c"]
    cursor = cursor.advanced(second, overlap)
    assert cursor.time_ms == 10_300
    assert cursor.query_from(overlap) == 9_300


def test_cursor_catches_an_event_committed_late_with_an_older_time() -> None:
    overlap = 5_000
    cursor = EventCursor(0).advanced([ev("new", 20_000)], overlap)
    # "late" was stamped before "new" but only became visible afterwards: still in window.
    late = cursor.unseen([ev("late", 19_000), ev("new", 20_000)])
    assert [e.id for e in late] == ["late"]
    cursor = cursor.advanced(late, overlap)
    assert cursor.time_ms == 20_000  # never moves backwards
    assert set(cursor.seen) == {"late", "new"}


def test_cursor_forgets_ids_that_left_the_window() -> None:
    overlap = 1_000
    cursor = EventCursor(0).advanced([ev("old", 1_000)], overlap)
    cursor = cursor.advanced(cursor.unseen([ev("young", 5_000)]), overlap)
    assert set(cursor.seen) == {"young"}  # memory stays bounded by the window


def test_cursor_sorts_and_deduplicates_repeated_page_entries() -> None:
    cursor = EventCursor(0)
    fresh = cursor.unseen([ev("b", 2), ev("a", 1), ev("b", 2), ev("c", 1)])
    assert [e.id for e in fresh] == ["a", "c", "b"]


def test_cursor_round_trips_through_json() -> None:
    cursor = EventCursor(0).advanced([ev("a", 100), ev("b", 200)], 1_000)
    assert EventCursor.from_json(cursor.to_json()) == cursor
    with pytest.raises(ValueError):
        EventCursor.from_json({"time_ms": "yesterday", "seen": {}})


# --- events -----------------------------------------------------------------------------
USER = "0ee54156-cf20-41e3-96d0-05e475af6827"


@pytest.mark.parametrize(("resource", "path"), [
    ("USER", f"users/{USER}"),
    ("REALM_ROLE_MAPPING", f"users/{USER}/role-mappings/realm"),
    ("CLIENT_ROLE_MAPPING", f"users/{USER}/role-mappings/clients/abc"),
    ("GROUP_MEMBERSHIP", f"users/{USER}/groups/abc"),
])
def test_admin_events_about_one_user_name_that_user(resource: str, path: str) -> None:
    event = admin_event({"id": "e1", "time": 5, "resourceType": resource, "resourcePath": path})
    assert event == Event("e1", 5, user_id=USER)


# Users of a federation provider without import (LDAP): "f:<component id>:<external id>",
# as Keycloak writes them, decoded, in resourcePath.
FEDERATED = "f:3f5c8a2e-0d7b-4c51-9a3e-2b1f6c7d8e90:alice"


@pytest.mark.parametrize(("path", "user_id"), [
    (f"users/{FEDERATED}", FEDERATED),
    (f"users/{FEDERATED}/role-mappings/realm", FEDERATED),
    (f"users/{FEDERATED}/groups/abc", FEDERATED),
    ("users/f:ldap-1:alice.smith@example.org", "f:ldap-1:alice.smith@example.org"),
    ("users/f:3f5c8a2e:CN=Alice Smith,OU=Staff/reset-password",
     "f:3f5c8a2e:CN=Alice Smith,OU=Staff"),
])
def test_admin_events_about_federated_users_name_them(path: str, user_id: str) -> None:
    event = admin_event({"id": "e1", "time": 5, "resourceType": "USER", "resourcePath": path})
    assert event == Event("e1", 5, user_id=user_id)


@pytest.mark.parametrize("path", ["users/f:", "users/f:abc", "users/f::alice", "users/f:abc:",
                                  "users/../x", "users/" + "a" * 65])
def test_admin_event_paths_that_are_no_user_id(path: str) -> None:
    event = admin_event({"id": "e1", "time": 5, "resourceType": "USER", "resourcePath": path})
    assert event is not None and event.user_id is None


@pytest.mark.parametrize(("resource", "path"), [
    ("REALM_ROLE_MAPPING", "groups/g1/role-mappings/realm"),
    ("GROUP", "groups/g1"),
    ("REALM_ROLE", "roles-by-id/r1/composites"),
    ("CLIENT_ROLE", "clients/c1/roles/write"),
    ("CLIENT", "clients/c1"),
    ("COMPONENT", "components/ldap"),
])
def test_admin_events_that_move_many_users_ask_for_a_full_pass(resource: str, path: str) -> None:
    event = admin_event({"id": "e1", "time": 5, "resourceType": resource, "resourcePath": path})
    assert event is not None and event.touches_everyone and event.user_id is None


@pytest.mark.parametrize(("resource", "path"), [
    ("REALM_ROLE_MAPPING", "clients/c1/scope-mappings/realm"),
    ("AUTH_FLOW", "authentication/flows/browser"),
])
def test_admin_events_that_do_not_touch_rights_are_only_recorded(resource: str,
                                                                  path: str) -> None:
    event = admin_event({"id": "e1", "time": 5, "resourceType": resource, "resourcePath": path})
    assert event == Event("e1", 5)


def test_malformed_events_are_ignored() -> None:
    assert admin_event({"time": 5, "resourcePath": "users/x"}) is None
    assert admin_event(["not", "an", "object"]) is None  # type: ignore[arg-type]
    assert user_event("nonsense") is None  # type: ignore[arg-type]
    assert user_event({"id": "e", "time": "now"}) is None
    assert user_event({"id": "e", "time": 7, "userId": "u"}) == Event("e", 7, user_id="u")


# --- key fates --------------------------------------------------------------------------
def user(enabled: bool = True) -> KeycloakUser:
    return KeycloakUser("u1", "ursula", None, enabled, frozenset({"analyst"}), ("/staff",))


KEYS = [LiveKey("k-active", "active"), LiveKey("k-suspended", "suspended")]


def test_disabled_owner_keys_are_suspended_and_the_time_is_remembered() -> None:
    plan = plan_owner(user(enabled=False), None, KEYS, NOW, GRACE)
    assert plan.enabled is False and plan.disabled_at == NOW
    assert plan.suspend == ("k-active",) and not plan.revoke and not plan.reactivate


def test_still_disabled_within_grace_keeps_the_first_disabled_time() -> None:
    since = NOW - timedelta(hours=23)
    plan = plan_owner(user(enabled=False), since, KEYS, NOW, GRACE)
    assert plan.disabled_at == since and plan.suspend == ("k-active",) and not plan.revoke


def test_still_disabled_when_grace_ends_revokes_every_live_key_with_a_reason() -> None:
    since = NOW - GRACE
    plan = plan_owner(user(enabled=False), since, KEYS, NOW, GRACE)
    assert plan.revoke == ("k-active", "k-suspended") and not plan.suspend
    assert plan.revoke_reason == "owner disabled in Keycloak for more than 1d"


def test_enabled_again_reactivates_suspended_keys_and_clears_the_disabled_time() -> None:
    plan = plan_owner(user(), NOW - timedelta(hours=2), KEYS, NOW, GRACE)
    assert plan.enabled is True and plan.disabled_at is None
    assert plan.reactivate == ("k-suspended",) and not plan.revoke


def test_enabled_owner_keeps_suspended_keys_back_even_after_a_long_sync_outage() -> None:
    # Revocation rests on Keycloak confirming the owner is still disabled after the grace.
    plan = plan_owner(user(), NOW - timedelta(days=3), KEYS, NOW, GRACE)
    assert plan.reactivate == ("k-suspended",) and not plan.revoke


def test_deleted_owner_keys_are_revoked() -> None:
    plan = plan_owner(None, None, KEYS, NOW, GRACE)
    assert plan.enabled is False and plan.disabled_at == NOW
    assert plan.revoke == ("k-active", "k-suspended")
    assert plan.revoke_reason == "owner deleted in Keycloak"


def test_revocation_due_only_after_the_grace_period() -> None:
    assert not revocation_due(None, NOW, GRACE)
    assert not revocation_due(NOW - GRACE + timedelta(seconds=1), NOW, GRACE)
    assert revocation_due(NOW - GRACE, NOW, GRACE)


def test_clients_of_grants() -> None:
    assert clients_of(["analyst", "geoserver:read", "stac:read", "geoserver:write"]) == {
        "geoserver", "stac"}


def test_backoff_doubles_up_to_a_ceiling_and_resets() -> None:
    backoff = Backoff(initial=1, maximum=5)
    assert [backoff.next_delay() for _ in range(5)] == [1, 2, 4, 5, 5]
    backoff.reset()
    assert backoff.next_delay() == 1


# --- reading the admin API's answers ----------------------------------------------------
def test_names_in_lists_of_objects() -> None:
    assert names_in([{"name": "a", "id": 1}, {"name": "b"}], "name", "roles") == ["a", "b"]
    assert names_in([], "name", "roles") == []


@pytest.mark.parametrize("rows", [None, "text", {"name": "a"}, [{"id": 1}], [{"name": 5}],
                                  [{"name": ""}], ["a"], [None], [{"name": "a"}, 7]])
def test_names_in_refuses_other_shapes(rows: object) -> None:
    with pytest.raises(MalformedAnswer, match="roles"):
        names_in(rows, "name", "roles")


def test_user_from_answers() -> None:
    rep = {"id": "u1", "username": "ursula", "email": "u@example.org", "enabled": True}
    found = user_from_answers("u1", rep, ["analyst"], ["/b", "/a"], {"geo": ["read"]})
    assert found == KeycloakUser("u1", "ursula", "u@example.org", True,
                                 frozenset({"analyst", "geo:read"}), ("/a", "/b"))
    bare = user_from_answers(FEDERATED, {"id": FEDERATED, "enabled": False}, [], [], {})
    assert bare.username == FEDERATED and bare.email is None and not bare.enabled


@pytest.mark.parametrize("rep", [
    None, [], "<html>", {"username": "ursula", "enabled": True},
    {"id": "someone-else", "enabled": True}, {"id": "u1"}, {"id": "u1", "enabled": "yes"},
    {"id": "u1", "enabled": None},
])
def test_user_answers_without_id_or_enabled_flag_are_malformed(rep: object) -> None:
    """A missing flag must not read as "disabled": that would suspend, then revoke, keys."""
    with pytest.raises(MalformedAnswer):
        user_from_answers("u1", rep, [], [], {})


def test_only_the_named_attributes_are_kept() -> None:
    from apikm.identity.sync_rules import wanted_attributes

    found = {"project": ["s2"], "site": ["a", "b"], "secret": ["x"], "odd": [1, "y"],
             "plain": "v"}
    assert wanted_attributes(found, ("project", "site", "odd", "plain", "absent")) == {
        "project": ("s2",), "site": ("a", "b"), "odd": ("y",), "plain": ("v",)}
    assert wanted_attributes(found, ()) == {}
    assert wanted_attributes(None, ("project",)) == {}
