"""Properties of log redaction (Hypothesis): a key or a JWT never survives, whatever text
surrounds it, and text without one comes out unchanged."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from apikm.keys.format import generate_key
from apikm.logs import Redactor

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
REDACT = Redactor("apikm").scrub
# text around a secret: anything, with the characters that matter near the pattern's edges
around = st.text(alphabet=st.one_of(st.characters(), st.sampled_from("_-.eyJapikm0aZ ")),
                 max_size=40)
jwts = st.builds(lambda h, p, s: f"eyJ{h}.{p}.{s}",
                 st.text(alphabet=B64URL, min_size=5, max_size=30),
                 st.text(alphabet=B64URL, min_size=5, max_size=30),
                 st.text(alphabet=B64URL, max_size=30))


@given(around, around)
def test_a_key_never_survives(before: str, after: str) -> None:
    key = generate_key("apikm").full
    assert key not in REDACT(before + key + after)


@given(around, jwts, around)
def test_a_jwt_never_survives(before: str, jwt: str, after: str) -> None:
    assert jwt not in REDACT(before + jwt + after)


@given(st.text(alphabet=st.characters(exclude_characters="yJ_")))
def test_text_without_a_secret_is_left_alone(text: str) -> None:
    assert REDACT(text) == text
