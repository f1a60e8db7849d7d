from __future__ import annotations

import pytest

from apikm.keys.format import generate_key
from apikm.web.ui.admin_search import kept_filters, public_id_of


def test_a_whole_key_a_hint_or_a_public_id_name_the_same_key() -> None:
    key = generate_key("apikm")
    for text in (key.full, f" {key.full}\n", f"apikm_{key.public_id}...",
                 f"apikm_{key.public_id}…", f"apikm_{key.public_id}", key.public_id):
        assert public_id_of(text, "apikm") == key.public_id, text
    typo = key.full[:-1] + ("A" if key.full[-1] != "A" else "B")  # checksum wrong
    assert public_id_of(typo, "apikm") == key.public_id


@pytest.mark.parametrize("text", ["", "bob", "apikm_", "apikm_AbC", "AbCd123", "AbCd12345",
                                  "AbCd-123", "' OR 1=1 --", "?"])
def test_anything_else_is_no_public_id(text: str) -> None:
    assert public_id_of(text, "apikm") is None


def test_kept_filters_keep_only_the_lists_own_parameters() -> None:
    assert kept_filters("status=revoked&user=bob&page=2") == "user=bob&status=revoked&page=2"
    assert kept_filters("next=https://evil.example&user=bob&done=revoked") == "user=bob"
    assert kept_filters("user=a%26b&key=AbCd1234") == "user=a%26b&key=AbCd1234"
    assert kept_filters("") == "" and kept_filters(None) == ""
