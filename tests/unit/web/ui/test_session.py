from __future__ import annotations

import os
import stat
import time
from dataclasses import replace
from pathlib import Path

import pytest

from apikm.web.ui.session import (
    MAX_COOKIE_BYTES,
    CookieCodec,
    SecretError,
    SessionCodec,
    load_or_create_secret_file,
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


def test_the_development_secret_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "session-secret"
    first = load_or_create_secret_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret_file(path) == first


def test_a_session_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "session-secret"
    load_or_create_secret_file(path)
    path.chmod(0o640)
    with pytest.raises(SecretError, match=f"chmod 600 {path}"):
        load_or_create_secret_file(path)
