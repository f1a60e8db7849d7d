"""APIKM_ENCRYPTION_KEY: parsing, AES-256-GCM round trips, derivation, the dev default."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from apikm.config import ConfigError, load_settings
from apikm.encryption import (
    DecryptionError,
    EncryptionKeyError,
    encryption_keys,
    load_or_create_key_file,
    new_key_spec,
    parse_encryption_keys,
)

K1, K2 = new_key_spec("k1"), new_key_spec("k2")


def test_the_first_key_encrypts_and_every_key_decrypts() -> None:
    old = parse_encryption_keys(K1)
    key_id, sealed = old.encrypt(b"secret pem", b"kid-1")
    assert key_id == "k1" and b"secret pem" not in sealed
    both = parse_encryption_keys(f"{K2},{K1}")
    assert both.current_id == "k2"
    assert both.decrypt(key_id, sealed, b"kid-1") == b"secret pem"
    assert both.encrypt(b"x", b"a")[0] == "k2"


def test_wrong_key_id_data_or_row_is_refused() -> None:
    keys = parse_encryption_keys(f"{K2},{K1}")
    key_id, sealed = keys.encrypt(b"secret pem", b"kid-1")
    with pytest.raises(DecryptionError, match="lacks"):
        parse_encryption_keys(K1).decrypt(key_id, sealed, b"kid-1")
    with pytest.raises(DecryptionError):
        keys.decrypt(key_id, sealed, b"kid-2")  # moved to another row
    with pytest.raises(DecryptionError):
        keys.decrypt(key_id, sealed[:-1] + bytes([sealed[-1] ^ 1]), b"kid-1")
    with pytest.raises(DecryptionError):  # another key under the same id
        parse_encryption_keys(new_key_spec("k2")).decrypt(key_id, sealed, b"kid-1")


@pytest.mark.parametrize("spec", [
    "", "nokeyid", "k1:" + "A" * 10, "k 1:" + K1.split(":")[1], f"{K1},{K1}", "k1:***",
])
def test_unusable_rings_are_refused_without_echoing_the_key(spec: str) -> None:
    with pytest.raises(EncryptionKeyError) as info:
        parse_encryption_keys(spec)
    assert "APIKM_ENCRYPTION_KEY" in str(info.value)
    assert K1.split(":")[1] not in str(info.value)


def test_standard_base64_is_accepted_too() -> None:
    import base64

    raw = bytes(range(32))
    assert parse_encryption_keys("a:" + base64.b64encode(raw).decode()).keys["a"] == raw


def test_derived_secrets_agree_across_processes_and_differ_by_purpose() -> None:
    one, two = parse_encryption_keys(f"{K2},{K1}"), parse_encryption_keys(f"{K2},{K1}")
    assert one.derive("ui-cookies") == two.derive("ui-cookies")
    assert len(one.derive("ui-cookies")) == 2 and len(one.derive("ui-cookies")[0]) == 32
    assert one.derive("ui-cookies") != one.derive("other")
    assert parse_encryption_keys(K1).derive("ui-cookies")[0] == one.derive("ui-cookies")[1]


def test_the_development_key_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "encryption-key"
    first = load_or_create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key_file(path) == first


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "encryption-key"
    load_or_create_key_file(path)
    path.chmod(0o640)
    with pytest.raises(EncryptionKeyError, match=f"chmod 600 {path}"):
        load_or_create_key_file(path)


def test_sqlite_without_a_key_uses_the_file(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APIKM_ENCRYPTION_KEY", raising=False)
    monkeypatch.delenv("APIKM_DATABASE_URL", raising=False)
    settings = load_settings(_env_file=None, data_dir=tmp_path)
    keys = encryption_keys(settings)
    assert (tmp_path / "encryption-key").exists() and keys.current_id == "local1"


def test_postgresql_without_a_key_refuses_to_start(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APIKM_ENCRYPTION_KEY", raising=False)
    settings = load_settings(_env_file=None, data_dir=tmp_path,
                             database_url="postgresql://apikm@db/apikm")
    with pytest.raises(ConfigError) as info:
        encryption_keys(settings)
    assert "APIKM_ENCRYPTION_KEY is not set" in str(info.value)
    assert "every replica" in str(info.value)
    assert not (tmp_path / "encryption-key").exists()


def test_a_malformed_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKM_ENCRYPTION_KEY", "k1:tooshort")
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None)
    assert "APIKM_ENCRYPTION_KEY" in str(info.value) and "tooshort" not in str(info.value)
