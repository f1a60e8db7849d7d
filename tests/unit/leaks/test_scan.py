from __future__ import annotations

import io
import random
import re
from pathlib import Path

import pytest
import yaml

from apikm.keys.format import generate_key, key_pattern, parse_key
from apikm.leaks.scan import find_keys
from tests.support.leak_samples import near_misses, sample

RULES = Path(__file__).resolve().parents[3] / "deploy" / "secret-scanning"


def test_finds_every_key_once_with_its_lines_and_no_near_miss() -> None:
    text, keys = sample(20)
    repeated = keys[3]
    found = find_keys((text + f"again: {repeated}\n").splitlines(), "apikm")
    assert [item.token for item in found] == keys
    by_token = {item.token: item.lines for item in found}
    assert len(by_token[repeated]) == 2
    lines = text.splitlines()
    assert all(keys[0] in lines[n - 1] for n in by_token[keys[0]])


@pytest.mark.parametrize("miss", near_misses())
def test_a_near_miss_is_not_found(miss: str) -> None:
    assert find_keys([f"value = {miss}"], "apikm") == []


def test_the_prefix_is_configurable() -> None:
    key = generate_key("acme").full
    assert [f.token for f in find_keys([f"k={key} apikm_x"], "acme")] == [key]
    assert find_keys([f"k={key}"], "apikm") == []


def test_a_key_shaped_string_with_a_wrong_checksum_is_found_for_checking() -> None:
    key = generate_key("apikm").full
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert [f.token for f in find_keys([wrong], "apikm")] == [wrong]
    assert parse_key(wrong, "apikm") is None  # and then refused without a lookup


def test_progress_counts_what_was_read() -> None:
    seen: list[int] = []
    find_keys(["abc", "de"], "apikm", seen.append)
    assert sum(seen) == 5


def _gitleaks_regex() -> str:
    import tomllib

    rules = tomllib.loads((RULES / "gitleaks.toml").read_text())["rules"]
    assert [rule["id"] for rule in rules] == ["apikm-api-key"]
    return str(rules[0]["regex"])


def _trufflehog_regex() -> str:
    document = yaml.safe_load((RULES / "trufflehog.yaml").read_text())
    [detector] = document["detectors"]
    assert detector["name"] and detector["keywords"] == ["apikm_"]
    [regex] = detector["regex"].values()
    return str(regex)


def test_scanner_rules_use_the_key_pattern_apikm_finds_keys_with() -> None:
    assert _gitleaks_regex() == key_pattern("apikm").pattern
    assert _trufflehog_regex().replace("(", "").replace(")", "") == key_pattern("apikm").pattern


@pytest.mark.parametrize("regex", [_gitleaks_regex(), _trufflehog_regex()],
                         ids=["gitleaks", "trufflehog"])
def test_scanner_rules_find_the_keys_and_no_near_miss(regex: str) -> None:
    # Go's regexp (RE2) has ASCII word boundaries, as re.ASCII gives.
    text, keys = sample(20)
    assert [m.group(0) for m in re.finditer(regex, text, re.ASCII)] == keys


def _pieced(text: str, size: int) -> list[tuple[str, list[int]]]:
    from apikm.leaks.scan import find_keys_in

    return [(f.token, f.lines) for f in find_keys_in(io.StringIO(text), "apikm",
                                                       piece_chars=size)]


@pytest.mark.parametrize("size", [1, 2, 7, 48, 49, 50, 51, 97, 1000])
def test_a_file_read_in_pieces_finds_what_whole_lines_find(size: int) -> None:
    """Keys at every offset against the cuts, glued to word characters (no key), at line
    starts and ends, repeated, and on a last line without a line break."""
    rng = random.Random(size)
    keys = [generate_key("apikm").full for _ in range(6)]
    parts = []
    for n in range(60):
        key = keys[n % len(keys)]
        glue = rng.choice(["", " ", "=", "x", "_", "é", "\n", ", "])
        parts.append(rng.choice(["", "a", "ab ", "-" * rng.randrange(90)]) + glue + key + glue)
    text = "".join(parts) + " " + keys[0]
    expected = [(f.token, f.lines) for f in find_keys(text.split("\n"), "apikm")]
    assert expected  # the sample holds findable keys, and near misses glued to letters
    assert _pieced(text, size) == expected


def test_a_line_without_breaks_is_read_in_bounded_pieces() -> None:
    from apikm.leaks.scan import find_keys_in

    key = generate_key("apikm").full
    text = "\x00\x01binary" * 200_000 + f" {key} " + "z" * 3_000_000 + f"\n{key}"
    sizes: list[int] = []

    class Recording(io.StringIO):
        def readline(self, size: int | None = -1, /) -> str:
            line = super().readline(size)
            sizes.append(len(line))
            return line

    found = find_keys_in(Recording(text), "apikm", piece_chars=64 * 1024)
    assert [(f.token, f.lines) for f in found] == [(key, [1, 2])]
    assert max(sizes) <= 64 * 1024
