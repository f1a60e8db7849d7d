"""The pieces of ``/auth/check_key``: where the key is, the /k/ path, the 200 body."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from apikm.compat.check_key import check_key_body, find_key, key_in_path
from apikm.compat.legacy_keys import is_legacy_key, legacy_digest
from apikm.verify.record import KeyRecord, attribute_values


def scope(path: str = "/auth/check_key", query: bytes = b"",
          headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "path": path, "raw_path": path.encode(), "query_string": query,
            "headers": headers or [], "method": "GET"}


def test_query_first_then_header() -> None:
    both = scope(query=b"api-key=from-query", headers=[(b"x-api-key", b"from-header")])
    assert find_key(both, dict(both["headers"])) == "from-query"
    header = scope(headers=[(b"x-api-key", b" from-header ")])
    assert find_key(header, dict(header["headers"])) == "from-header"
    assert find_key(scope(query=b"api-key="), {}) is None


def test_key_in_path_moves_the_key_to_the_header_and_out_of_the_path() -> None:
    request = scope("/k/apikm_abc/auth/check_key", headers=[(b"x-api-key", b"other")])
    unwrapped = key_in_path(request, request["path"])
    assert unwrapped is not None
    new, route = unwrapped
    assert route == "/auth/check_key" and new["path"] == "/auth/check_key"
    assert new["raw_path"] == b"/auth/check_key"
    assert new["headers"] == [(b"x-api-key", b"apikm_abc")]
    rooted = scope("/apikm/k/0f0e-1/v1/keys")
    found = key_in_path(rooted, "/k/0f0e-1/v1/keys")
    assert found is not None and found[0]["path"] == "/apikm/v1/keys"
    assert key_in_path(scope("/k//auth/check_key"), "/k//auth/check_key") is None
    assert key_in_path(scope("/k/a b/x"), "/k/a b/x") is None


def test_a_path_beyond_latin1_after_the_key_is_carried_not_a_crash() -> None:
    found = key_in_path(scope("/k/apikm_abc/v1/auth/€"), "/k/apikm_abc/v1/auth/€")
    assert found is not None
    assert found[0]["path"] == "/v1/auth/€" and found[0]["raw_path"] == b"/v1/auth/%E2%82%AC"


def record(**values: Any) -> KeyRecord:
    base: dict[str, Any] = dict(
        id="k1", public_id="p", name="n", status="active",
        expires_at=datetime(2030, 1, 1, tzinfo=UTC), granted_roles=frozenset({"a", "b"}),
        allowed_networks=(), meta={"project": "mine", "quota": 5}, rate_limit=None,
        secret_hash="h", previous_secret_hash=None, previous_secret_expires_at=None,
        revoked_reason=None, owner_id="u1", username="alice", email=None,
        owner_enabled=True, owner_roles=frozenset({"a", "c", "app:r"}), owner_groups=(),
        owner_synced_at=datetime(2026, 1, 1, tzinfo=UTC))
    return KeyRecord(**{**base, **values})


def test_body_has_exactly_the_old_fields_and_attributes_win_over_meta() -> None:
    attributes = attribute_values({"project": ["s2"], "site": ["a", "b"]})
    body = json.loads(check_key_body(record(owner_attributes=attributes)))
    assert body == {"user_id": "u1", "user_login": "alice", "iam_roles": ["a"],
                    "config": {"project": "s2", "quota": 5, "site": ["a", "b"]}}


def test_all_roles_keys_carry_the_owners_roles_now() -> None:
    body = json.loads(check_key_body(record(all_roles=True)))
    assert body["iam_roles"] == ["a", "app:r", "c"]


def test_legacy_key_format_and_hash() -> None:
    assert is_legacy_key("0b9f6b2e-4d1c-4f0a-9d7e-3c2b1a0f9e8d")
    assert not is_legacy_key("0B9F6B2E-4D1C-4F0A-9D7E-3C2B1A0F9E8D")
    assert not is_legacy_key("apikm_0b9f6b2e")
    assert legacy_digest("abc") == \
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
