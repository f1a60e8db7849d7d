from __future__ import annotations

import os
import time
from dataclasses import replace

import pytest

from apikm.web.ui.session import (
    MAX_COOKIE_BYTES,
    CookieCodec,
    SecretError,
    SessionCodec,
    new_session,
    parse_session_secrets,
)

SECRET = b"s" * 40
OTHER = b"o" * 40


def session(**changes: object):  # type: ignore[no-untyped-def]
    base = new_session("user-1", "alice", 3600, "refresh-token", "id-token")
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_session_survives_the_round_trip_and_is_not_readable() -> None:
    codec = SessionCodec([SECRET])
    value = codec.encode(session())
    assert "alice" not in value and "refresh-token" not in value
    decoded = codec.decode(value)
    assert decoded is not None
    assert (decoded.username, decoded.refresh_token, decoded.id_token) == (
        "alice", "refresh-token", "id-token")


def test_tampered_foreign_and_expired_cookies_are_refused() -> None:
    codec = SessionCodec([SECRET])
    value = codec.encode(session())
    flipped = value[:-5] + ("A" if value[-5] != "A" else "B") + value[-4:]
    assert codec.decode(flipped) is None
    assert SessionCodec([OTHER]).decode(value) is None
    assert codec.decode("not-a-jwe") is None
    assert codec.decode(codec.encode(session(expires_at=time.time() - 1))) is None


def test_an_older_secret_still_opens_cookies_after_rotation() -> None:
    value = SessionCodec([OTHER]).encode(session())
    assert SessionCodec([SECRET, OTHER]).decode(value) is not None


def test_a_login_cookie_cannot_pass_for_a_session() -> None:
    login = CookieCodec([SECRET], "login").encode({"state": "x"})
    assert SessionCodec([SECRET]).decode(login) is None


def test_an_oversized_id_token_is_left_out_rather_than_losing_the_cookie() -> None:
    codec = SessionCodec([SECRET])
    big = session(id_token=os.urandom(3000).hex())
    value = codec.encode(big)
    assert len(value) <= MAX_COOKIE_BYTES
    decoded = codec.decode(value)
    assert decoded is not None and decoded.id_token is None
    assert decoded.refresh_token == "refresh-token"


def test_session_secrets_are_parsed_and_checked() -> None:
    assert parse_session_secrets(f"{'a' * 32}, {'b' * 32}") == [b"a" * 32, b"b" * 32]
    with pytest.raises(SecretError):
        parse_session_secrets("short")
    with pytest.raises(SecretError):
        parse_session_secrets(" , ")
