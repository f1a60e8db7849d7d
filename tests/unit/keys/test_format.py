from __future__ import annotations

import re

import pytest

from apikm.keys.format import (
    ALPHABET,
    BODY_LENGTH,
    PUBLIC_ID_LENGTH,
    checksum,
    encode_base62,
    generate_key,
    key_hint,
    key_pattern,
    parse_key,
)


def test_generated_key_has_prefix_fixed_length_and_valid_checksum() -> None:
    key = generate_key("apikm")
    assert key.full.startswith("apikm_")
    assert len(key.full) == len("apikm_") + BODY_LENGTH
    assert parse_key(key.full, "apikm") == key
    assert key.full[6 : 6 + PUBLIC_ID_LENGTH] == key.public_id


def test_keys_are_unique_and_carry_at_least_160_random_bits() -> None:
    keys = {generate_key("apikm").full for _ in range(2000)}
    assert len(keys) == 2000
    # 28 secret characters + 8 public id characters from 62 symbols
    import math

    assert 28 * math.log2(len(ALPHABET)) >= 160


@pytest.mark.parametrize("position", [6, 10, 20, 40, -1])
def test_single_character_typo_is_rejected(position: int) -> None:
    key = generate_key("apikm").full
    original = key[position]
    replacement = "A" if original != "A" else "B"
    typo = key[:position] + replacement + (key[position + 1 :] if position != -1 else "")
    assert parse_key(typo, "apikm") is None


@pytest.mark.parametrize("text", [
    "", "apikm_", "apikm_short", "other_" + "a" * BODY_LENGTH, "apikm-" + "a" * BODY_LENGTH,
    "apikm_" + "é" * BODY_LENGTH, "apikm_" + "a" * (BODY_LENGTH + 1),
    "apikm_" + "!" * BODY_LENGTH,
])
def test_malformed_text_is_rejected(text: str) -> None:
    assert parse_key(text, "apikm") is None


def test_key_of_another_prefix_is_rejected() -> None:
    key = generate_key("acme").full
    assert parse_key(key, "acme") is not None
    assert parse_key(key, "apikm") is None


def test_truncated_key_is_rejected() -> None:
    key = generate_key("apikm").full
    assert parse_key(key[:-1], "apikm") is None


def test_rotation_can_keep_public_id_with_new_secret() -> None:
    first = generate_key("apikm")
    second = generate_key("apikm", public_id=first.public_id)
    assert second.public_id == first.public_id and second.full != first.full


def test_base62_checksum_is_six_chars_and_deterministic() -> None:
    assert len(checksum("x")) == 6 and checksum("x") == checksum("x") != checksum("y")
    assert encode_base62(0, 3) == "000" and encode_base62(61, 2) == "0z"
    assert encode_base62(62, 2) == "10"


def test_repr_and_hint_do_not_leak_the_secret() -> None:
    key = generate_key("apikm")
    assert key.full not in repr(key)
    assert key_hint("apikm", key.public_id) == f"apikm_{key.public_id}..."


def test_pattern_finds_keys_in_text_for_scanners() -> None:
    key = generate_key("apikm").full
    found = key_pattern("apikm").findall(f"token={key}&x=1 and {key[:-2]}")
    assert found == [key]
    assert re.fullmatch(key_pattern("apikm"), key)
