"""Properties of the key format (Hypothesis): parsing and the cheap format check agree on any
text, every generated key parses, and the checksum refuses every single-character change."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from apikm.config import KEY_PREFIX_PATTERN
from apikm.keys.format import ALPHABET, BODY_LENGTH, generate_key, is_well_formed, parse_key

prefixes = st.from_regex(KEY_PREFIX_PATTERN, fullmatch=True)


@st.composite
def near_keys(draw: st.DrawFn) -> tuple[str, str]:
    """(candidate, prefix): texts shaped almost like keys, where bugs would hide."""
    prefix = draw(prefixes)
    body = draw(st.text(alphabet=st.sampled_from(ALPHABET + "_-é\x00 "),
                        min_size=BODY_LENGTH - 1, max_size=BODY_LENGTH + 1))
    separator = draw(st.sampled_from(["_", "-", "", "__"]))
    return prefix + separator + body, prefix


@given(st.one_of(st.tuples(st.text(), prefixes), near_keys()))
def test_parse_key_and_is_well_formed_agree(case: tuple[str, str]) -> None:
    candidate, prefix = case
    parsed = parse_key(candidate, prefix)
    assert is_well_formed(candidate, prefix) == (parsed is not None)
    if parsed is not None:
        assert parsed.full == candidate


@given(prefixes)
def test_generated_keys_always_parse(prefix: str) -> None:
    key = generate_key(prefix)
    assert parse_key(key.full, prefix) == key
    assert is_well_formed(key.full, prefix)
    assert len(key.full) == len(prefix) + 1 + BODY_LENGTH
    kept = generate_key(prefix, public_id=key.public_id)  # a rotation keeps the public id
    assert parse_key(kept.full, prefix) == kept and kept.public_id == key.public_id


@given(prefixes, st.data())
def test_any_single_character_change_is_refused(prefix: str, data: st.DataObject) -> None:
    key = generate_key(prefix).full
    index = data.draw(st.integers(0, len(key) - 1), label="index")
    replacement = data.draw(st.characters(), label="replacement")
    assume(replacement != key[index])
    changed = key[:index] + replacement + key[index + 1:]
    assert parse_key(changed, prefix) is None
    assert not is_well_formed(changed, prefix)


@given(prefixes, st.data())
def test_a_key_of_another_prefix_is_refused(prefix: str, data: st.DataObject) -> None:
    other = data.draw(prefixes, label="other")
    assume(other != prefix)
    key = generate_key(other).full
    assert parse_key(key, prefix) is None and not is_well_formed(key, prefix)
