"""What the import decides for each old row (pure: no database)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from apikm.compat.importer import OldKey, Outcome, Planned, key_id_for, plan
from apikm.keys.policy import LifetimePolicy
from apikm.keys.service import KeyPolicy

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RULES = KeyPolicy(prefix="apikm", lifetime=LifetimePolicy(timedelta(hours=360),
                                                         timedelta(days=365)),
                  max_keys_per_user=100, max_meta_bytes=4096,
                  max_rotation_overlap=timedelta(days=7))
KEY = str(uuid.uuid4())
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()


def row(**values: object) -> OldKey:
    base: dict[str, object] = {
        "api_key": DIGEST, "name": "gdal", "user_id": "u-1", "user_login": "alice",
        "expiration_date": datetime(2026, 6, 10), "iam_roles": ["analyst"],
        "config": {"project": "s2"}, "total_queries": 3,
        "latest_sync_date": datetime(2026, 6, 1, 11, 0)}
    return OldKey(**{**base, **values})  # type: ignore[arg-type]


def planned(old: OldKey) -> Planned:
    result = plan(old, NOW, RULES, public_id=lambda: "Pub1d000")
    assert isinstance(result, Planned), result
    return result


def skipped(old: OldKey) -> str:
    result = plan(old, NOW, RULES)
    assert isinstance(result, Outcome) and not result.imported
    return result.reason


def test_a_usable_key_keeps_its_hash_roles_config_and_use() -> None:
    result = planned(row())
    key, owner = result.key, result.owner
    assert key["secret_hash"] == DIGEST and key["pepper_id"] == "sha256"
    assert key["id"] == key_id_for(DIGEST) == planned(row()).key["id"]  # same on every run
    assert key["all_roles"] is True and key["roles"] == ["analyst"]
    assert key["meta"] == {"project": "s2"}
    assert key["use_count"] == 3
    assert key["expires_at"] == datetime(2026, 6, 10, tzinfo=UTC)  # naive: UTC
    assert key["imported_from"] == "apikeymanager"
    assert owner["username"] == "alice" and owner["enabled"] is True
    assert owner["synced_at"] == datetime(2026, 6, 1, 11, 0, tzinfo=UTC)
    assert result.outcome.notes == []


def test_never_expiring_and_too_long_keys_get_the_longest_lifetime() -> None:
    forever = planned(row(never_expire=True, expiration_date=None))
    assert forever.key["expires_at"] == NOW + timedelta(days=365)
    assert "never expired in APIKeyManager" in forever.outcome.notes[0]
    far = planned(row(expiration_date=datetime(2040, 1, 1)))
    assert far.key["expires_at"] == NOW + timedelta(days=365)
    assert "past the longest lifetime" in far.outcome.notes[0]


def test_a_key_kept_in_clear_by_the_oldest_versions_is_hashed() -> None:
    result = planned(row(api_key=KEY))
    assert result.key["secret_hash"] == DIGEST
    assert "stored in clear" in result.outcome.notes[0]


@pytest.mark.parametrize(("values", "reason"), [
    ({"is_active": False}, "revoked in APIKeyManager"),
    ({"expiration_date": datetime(2026, 5, 1)}, "expired (2026-05-01 00:00 UTC)"),
    ({"expiration_date": None}, "no expiration_date"),
    ({"api_key": "not-a-hash"}, "api_key is neither"),
    ({"user_id": ""}, "no usable user_id"),
    ({"config": [1, 2]}, "config cannot become the key's meta"),
])
def test_unusable_rows_are_skipped_with_the_reason(values: dict[str, object],
                                                    reason: str) -> None:
    assert skipped(row(**values)).startswith(reason)


def test_referers_and_disabled_owners_and_bad_names_are_reported() -> None:
    result = planned(row(allowed_referers='["maps.example.org"]', user_active=False,
                         name="bad\nname", config='{"a": 1}'))
    notes = " | ".join(result.outcome.notes)
    assert "allowed_referers not carried over (maps.example.org)" in notes
    assert "owner disabled in APIKeyManager" in notes
    assert "now 'badname'" in notes
    assert result.owner["enabled"] is False
    assert result.key["meta"] == {"a": 1}  # JSON kept as text by some databases
