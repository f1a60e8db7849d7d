"""Properties of the input rules (Hypothesis): whatever a caller sends, a rule answers with
the accepted value or a ``PolicyError`` (a 4xx), never another exception (a 500), and what
it accepts stays within the caps."""

from __future__ import annotations

import json
import unicodedata
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from limits import parse as parse_rate_limit

from apikm.keys import policy
from apikm.keys.policy import MAX_META_DEPTH, PolicyError

MAX_BYTES = 4096

# Text as JSON can carry it: every code point, lone surrogates and NUL included.
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
SCALARS = (st.none() | st.booleans() | st.integers() | TEXT
           | st.floats(allow_nan=True, allow_infinity=True))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=4), max_leaves=60)
ANYTHING = JSON | st.builds(object) | st.sets(st.integers(), max_size=3) | st.binary(max_size=5)


def depth(value: Any) -> int:
    """Levels of containers, counted without recursion (values here can be 5000 deep)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level + 1)
            stack.extend((child, level + 1)
                         for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def nested(levels: int, kind: str = "dict") -> dict[str, Any]:
    """An object ``levels`` deep: dicts all the way, or an object holding nested lists."""
    inner: Any = 1
    for _ in range(levels - 1):
        inner = {"a": inner} if kind == "dict" else [inner]
    return {"a": inner}


@given(st.dictionaries(TEXT, JSON, max_size=6))
@settings(max_examples=300)
def test_check_meta_accepts_within_caps_or_refuses_with_policy_error(meta: dict[str, Any]
                                                                     ) -> None:
    try:
        accepted = policy.check_meta(meta, MAX_BYTES)
    except PolicyError as exc:
        assert exc.field == "meta"
        return
    assert accepted is meta
    assert depth(accepted) <= MAX_META_DEPTH
    text = json.dumps(accepted, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert len(text.encode()) <= MAX_BYTES and "\x00" not in text


@given(ANYTHING)
def test_check_meta_never_raises_anything_else(value: Any) -> None:
    try:
        policy.check_meta(value, MAX_BYTES)
    except PolicyError:
        pass


@given(st.integers(1, 5000), st.sampled_from(["dict", "list"]))
def test_meta_depth_cap_holds_at_any_depth(levels: int, kind: str) -> None:
    meta = nested(levels, kind)
    assert depth(meta) == levels
    if levels <= MAX_META_DEPTH:
        assert policy.check_meta(meta, 10**9) is meta
    else:
        with pytest.raises(PolicyError, match="levels"):
            policy.check_meta(meta, 10**9)


@given(JSON | st.integers(1, 900).map(nested))
def test_stored_meta_is_always_displayable(stored: Any) -> None:
    shown = policy.displayable_meta(stored)
    assert isinstance(shown, dict) and depth(shown) <= MAX_META_DEPTH
    json.dumps(shown)  # serialisable, whatever was stored


ROLE_LISTS = st.lists(TEXT | st.sampled_from(["analyst", "geo:read", " analyst", "a:b:c"]),
                      max_size=6)


@given(ROLE_LISTS)
@settings(max_examples=300)
def test_normalize_roles_returns_exact_names_or_refuses(roles: list[str]) -> None:
    try:
        normalized = policy.normalize_roles(roles)
    except PolicyError as exc:
        assert exc.field == "roles"
        return
    assert normalized == sorted(set(roles))
    for role in normalized:
        client, sep, name = role.partition(":")
        assert role == role.strip() and role.isprintable()
        assert not sep or (client and name and client == client.strip()
                           and name == name.strip())


@given(st.lists(ANYTHING, max_size=4))
def test_normalize_roles_never_raises_anything_else(roles: list[Any]) -> None:
    try:
        policy.normalize_roles(roles)
    except PolicyError:
        pass


@given(TEXT | st.from_regex(r"\s*[0-9]{1,12}\s*(/|per)\s*([0-9]{1,7}\s*)?"
                            r"(second|minute|hour|day|month|year)s?\s*", fullmatch=True))
@settings(max_examples=300)
def test_rate_limits_accepted_are_bounded_and_readable(value: str) -> None:
    try:
        stored = policy.check_rate_limit(value)
    except PolicyError as exc:
        assert exc.field == "rate_limit"
        return
    assert stored is not None
    item = parse_rate_limit(stored)
    assert 1 <= item.amount <= policy.MAX_RATE_LIMIT_AMOUNT
    assert 1 <= item.get_expiry() <= 86400


@given(TEXT | st.text(max_size=120))
def test_names_accepted_are_trimmed_short_and_visible(name: str) -> None:
    try:
        accepted = policy.check_name(name)
    except PolicyError as exc:
        assert exc.field == "name"
        return
    assert accepted == name.strip() and 1 <= len(accepted) <= policy.MAX_NAME
    assert all(unicodedata.category(ch) not in ("Cc", "Cs", "Zl", "Zp") for ch in accepted)


@given(st.integers())
def test_rotation_overlap_never_overflows(seconds: int) -> None:
    try:
        overlap = policy.rotation_overlap(seconds, timedelta(days=7))
    except PolicyError:
        return
    assert timedelta(0) <= overlap <= timedelta(days=7)


@given(TEXT | st.text(max_size=300))
def test_reasons_accepted_are_one_visible_line_a_database_can_hold(reason: str) -> None:
    try:
        accepted = policy.check_reason(reason)
    except PolicyError as exc:
        assert exc.field == "reason"
        return
    assert 1 <= len(accepted) <= policy.MAX_REASON and policy.storable(accepted)
    assert "\n" not in accepted and "\x00" not in accepted
