from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path

import pytest

from apikm.keys.hashing import PepperError, load_or_create_pepper_file, parse_peppers


def test_digest_is_hmac_sha256_with_the_current_pepper() -> None:
    ring = parse_peppers("v2:new-pepper-0123456789,v1:old-pepper-0123456789")
    assert ring.current_id == "v2"
    expected = hmac.new(b"new-pepper-0123456789", b"apikm_x", hashlib.sha256).hexdigest()
    assert ring.digest("apikm_x") == expected
    assert ring.digest("apikm_x", "v1") != expected


def test_candidates_cover_every_pepper_current_first() -> None:
    ring = parse_peppers("v2:new-pepper-0123456789,v1:old-pepper-0123456789")
    candidates = ring.candidates("apikm_x")
    assert list(candidates.values()) == ["v2", "v1"]
    assert ring.digest("apikm_x", "v1") in candidates


@pytest.mark.parametrize("spec", [
    "", "nocolon", "v1:tooshort", "v1:aaaaaaaaaaaaaaaaaa,v1:bbbbbbbbbbbbbbbbbbbb",
    "bad id:aaaaaaaaaaaaaaaaaaaa",
])
def test_bad_pepper_specs_are_refused_without_echoing_secrets(spec: str) -> None:
    with pytest.raises(PepperError) as info:
        parse_peppers(spec)
    message = str(info.value)
    for secret in ("aaaaaaaaaaaa", "bbbbbbbbbbbb", "tooshort"):
        assert secret not in message


def test_ring_repr_hides_peppers() -> None:
    ring = parse_peppers("v1:super-secret-pepper-value")
    assert "super-secret" not in repr(ring)


def test_dev_pepper_file_is_created_once_with_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "pepper"
    first = load_or_create_pepper_file(path)
    second = load_or_create_pepper_file(path)
    assert first.digest("k") == second.digest("k")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_a_pepper_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "pepper"
    load_or_create_pepper_file(path)
    path.chmod(mode)
    with pytest.raises(PepperError) as info:
        load_or_create_pepper_file(path)
    assert str(path) in str(info.value) and f"chmod 600 {path}" in str(info.value)
    path.chmod(0o400)  # read-only for its owner is fine
    load_or_create_pepper_file(path)
