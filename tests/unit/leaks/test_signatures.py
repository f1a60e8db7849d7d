from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from apikm.config import ConfigError, load_settings
from apikm.leaks.signatures import LeakKeysError, load_public_keys
from tests.support.github_signing import SigningKey

BODY = b'[{"source":"commit","token":"some_token","type":"some_type","url":"https://x/"}]'


def test_a_body_signed_as_github_signs_verifies_and_nothing_else_does() -> None:
    key, other = SigningKey(), SigningKey()
    keys = load_public_keys(key.github_document(other))
    assert len(keys) == 2 and keys.knows(key.identifier)
    assert keys.verify(key.identifier, key.sign(BODY), BODY)
    assert not keys.verify(key.identifier, key.sign(BODY), BODY + b" ")  # raw body, exactly
    assert not keys.verify(other.identifier, key.sign(BODY), BODY)  # another key's signature
    assert not keys.verify("unknown", key.sign(BODY), BODY)
    for garbage in ("", "not base64!", "QUJD", "A" * 1000):
        assert not keys.verify(key.identifier, garbage, BODY)


def test_keys_as_a_mapping_or_from_a_file(tmp_path: Path) -> None:
    key = SigningKey()
    assert load_public_keys(json.dumps({key.identifier: key.public_pem})).knows(key.identifier)
    path = tmp_path / "secret_scanning.json"
    path.write_text(key.github_document())
    assert load_public_keys(str(path)).verify(key.identifier, key.sign(BODY), BODY)
    assert len(load_public_keys("")) == 0


def _pem(private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.mark.parametrize(("spec", "says"), [
    ("{not json", "not JSON"),
    ('{"public_keys": [{"key": "x"}]}', "key_identifier"),
    ('{"k1": "not a pem"}', "not a PEM public key"),
    ('{"k1": 5}', "PEM string"),
    ("[1, 2]", "expected"),
    (json.dumps({"rsa": _pem(rsa.generate_private_key(65537, 2048))}), "not an ECDSA P-256"),
    (json.dumps({"p384": _pem(ec.generate_private_key(ec.SECP384R1()))}), "not an ECDSA P-256"),
    ("/nonexistent/keys.json", "cannot read"),
])
def test_unusable_keys_are_refused_saying_why(spec: str, says: str) -> None:
    with pytest.raises(LeakKeysError, match=says):
        load_public_keys(spec)


def test_a_wrong_setting_stops_apikm_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="APIKM_LEAK_REPORT_KEYS"):
        load_settings(leak_report_keys='{"k1": "not a pem"}')


def test_a_signature_header_is_judged_before_the_body() -> None:
    from apikm.leaks.signatures import decode_signature

    key = SigningKey()
    assert decode_signature(key.sign(BODY)) is not None
    for garbage in ("", "not base64!", "QUJD", "A" * 1000, "MAAA", "AAAAAAAAAAAA"):
        assert decode_signature(garbage) is None, garbage
