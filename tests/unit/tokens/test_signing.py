"""Signing keys on disk: creation, permissions, rotation window, verification by kid."""

from __future__ import annotations

from pathlib import Path

import pytest
from joserfc import jws, jwt
from joserfc.jwk import KeySet

from apikm.tokens.signing import PUBLISHED, SigningKeys


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_first_key_is_created_private_and_signs(tmp_path: Path, alg: str) -> None:
    keys = SigningKeys(tmp_path / "signing-keys", alg)
    token = keys.sign({"sub": "x"})
    header = jws.extract_compact(token.encode()).protected
    assert header["alg"] == alg and header["kid"] == keys.current().kid
    assert jwt.decode(token, KeySet.import_key_set(keys.jwks())).claims == {"sub": "x"}
    directory = tmp_path / "signing-keys"
    assert directory.stat().st_mode & 0o777 == 0o700
    (pem,) = directory.glob("*.pem")
    assert pem.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE" not in str(keys.jwks()) and "d" not in keys.jwks()["keys"][0]


def test_rotation_keeps_the_previous_key_published_and_drops_older(tmp_path: Path) -> None:
    keys = SigningKeys(tmp_path, "ES256")
    first = keys.current()
    old_token = keys.sign({"n": 1})
    second = keys.rotate()
    assert keys.current().kid == second.kid != first.kid
    assert [k["kid"] for k in keys.jwks()["keys"]] == [second.kid, first.kid]
    assert jwt.decode(old_token, KeySet.import_key_set(keys.jwks())).claims == {"n": 1}
    third = keys.rotate()
    published = [k["kid"] for k in keys.jwks()["keys"]]
    assert published == [third.kid, second.kid] and len(published) == PUBLISHED
    assert len(list(tmp_path.glob("*.pem"))) == PUBLISHED


def test_another_process_rotation_is_noticed(tmp_path: Path) -> None:
    server, cli = SigningKeys(tmp_path, "ES256"), SigningKeys(tmp_path, "ES256")
    before = server.current().kid
    rotated = cli.rotate()
    server._checked_at = 0.0  # skip the once-a-second throttle instead of sleeping
    assert server.current().kid == rotated.kid != before


def test_algorithm_change_creates_a_key_of_the_new_kind(tmp_path: Path) -> None:
    es = SigningKeys(tmp_path, "ES256").current()
    rs = SigningKeys(tmp_path, "RS256").current()
    assert (es.alg, rs.alg) == ("ES256", "RS256")
    assert {k["kid"] for k in SigningKeys(tmp_path, "RS256").jwks()["keys"]} == {es.kid, rs.kid}


def test_unrelated_files_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "notes.pem").write_text("not a key")
    (tmp_path / "README").write_text("hello")
    keys = SigningKeys(tmp_path, "ES256")
    assert len(keys.jwks()["keys"]) == 1
