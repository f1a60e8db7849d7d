from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from apikm.keys.format import generate_key
from apikm.logs import Redactor


def test_keys_jwts_and_secret_fields_are_masked() -> None:
    key = generate_key("apikm").full
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl"
    event = {"event": f"failed for {key}", "detail": f"Bearer {jwt}", "client_secret": "s3cr3t",
             "Authorization": "Bearer x", "pepper": "p", "user": "alice", "count": 3}
    out = Redactor("apikm")(None, "info", dict(event))
    text = repr(out)
    for secret in (key, jwt, "s3cr3t", "Bearer x"):
        assert secret not in text
    assert out["user"] == "alice" and out["count"] == 3
    assert out["event"] == "failed for [key]"


def test_jwt_redaction_matches_the_jwt_only() -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl"
    scrub = Redactor("apikm").scrub
    assert scrub(f"x-{jwt}.tail y") == "x-[jwt].tail y"
    assert scrub(f"/p/{jwt}/q?t={jwt}") == "/p/[jwt]/q?t=[jwt]"
    # an unsigned token (empty third part) and one after a failed candidate in the same run
    assert scrub("eyJab.cd eyJhbGciOi.eyJzdWIi.") == "eyJab.cd [jwt]"
    assert scrub("eyJabcdef.ab.eyJhbGciOi.eyJzdWIi.sig") == "eyJabcdef.ab.[jwt]"
    long_failure = "eyJ" + "a" * 70 + ".ab."  # swallowed whole, given back unchanged
    assert scrub(long_failure + jwt) == long_failure + "[jwt]"
    # glued to a word character: masked all the same
    assert scrub(f"a{jwt}") == "a[jwt]"
    assert scrub("eyJhbGciOi.eyJzdWIi") == "eyJhbGciOi.eyJzdWIi"  # two parts: not a JWT


def _seconds(scrub: Callable[[str], str], text: str) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        scrub(text)
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize("shape", [
    "eyJ-", "eyJ.", "eyJab.", "eyJabcde.", "eyJabcdef.abcde.", "eyJ_", "A", "-",
    "apikm_", "apikm_a", "apikm-", " apikm_" + "a" * 41, " apikm_" + "a" * 43,
    "apikm_" + "a" * 42 + "_", "eyJabcdef.", "-eyJabcdef.abcde", "aB3_-x9Z",
], ids=repr)
def test_redaction_is_linear_on_pathological_input(shape: str) -> None:
    """A path of ``"eyJ-" * 16000`` once blocked the event loop for a second (the JWT
    pattern backtracked quadratically). Every shape must cost about what ordinary text of the
    same length costs."""
    scrub = Redactor("apikm").scrub
    length = 64_000
    hostile = (shape * (length // len(shape) + 1))[:length]
    ordinary = ("GET /data/dem.tif?x=1 from 10.0.0.1 ok; " * (length // 40 + 1))[:length]
    baseline = max(_seconds(scrub, ordinary), 1e-4)
    # quadratic cost was over 10,000 times the baseline; linear stays under 20
    assert _seconds(scrub, hostile) < 100 * baseline
