"""GitHub's signature on secret scanning reports: ECDSA P-256 with SHA-256 (DER, base64) over
the raw request body, by the key named in ``Github-Public-Key-Identifier``.

The public keys come from configuration (``APIKM_LEAK_REPORT_KEYS``), read once at start-up:
apikm fetches nothing at run time, so a report never waits on GitHub's API and an attacker
who can reach apikm cannot make it download anything.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

MAX_SIGNATURE_CHARS = 200  # a DER P-256 signature is at most 72 bytes, 96 in base64
MAX_IDENTIFIER_CHARS = 128  # GitHub's are 64 hex characters


class LeakKeysError(ValueError):
    """APIKM_LEAK_REPORT_KEYS cannot be used; the message says why."""


class PublicKeys:
    """Key identifier -> P-256 public key."""

    def __init__(self, keys: Mapping[str, ec.EllipticCurvePublicKey]) -> None:
        self._keys = dict(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def knows(self, identifier: str) -> bool:
        return identifier in self._keys

    def verify(self, identifier: str, signature_b64: str, body: bytes) -> bool:
        """Whether ``signature_b64`` is the named key's signature over ``body``. (No secret
        is compared here: the keys are public, and ECDSA verification needs no constant
        time.)"""
        key = self._keys.get(identifier)
        signature = decode_signature(signature_b64)
        if key is None or signature is None:
            return False
        try:
            key.verify(signature, body, ec.ECDSA(hashes.SHA256()))
        except (ValueError, InvalidSignature):
            return False
        return True


def decode_signature(signature_b64: str) -> bytes | None:
    """The DER signature in ``Github-Public-Key-Signature``, or None when the header cannot
    hold one (checked before the body is read: a P-256 DER signature is a SEQUENCE of 8 to
    72 bytes)."""
    if not signature_b64 or len(signature_b64) > MAX_SIGNATURE_CHARS:
        return None
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    return signature if 8 <= len(signature) <= 72 and signature[0] == 0x30 else None


def load_public_keys(spec: str) -> PublicKeys:
    """``spec``: JSON, or the path of a JSON file, in either shape:

    * GitHub's ``/meta/public_keys/secret_scanning`` document:
      ``{"public_keys": [{"key_identifier": "...", "key": "-----BEGIN PUBLIC KEY-----..."}]}``
    * a plain mapping ``{"<key identifier>": "<PEM public key>"}``.

    Empty: no GitHub reports are accepted (admins' reports still are).
    """
    spec = spec.strip()
    if not spec:
        return PublicKeys({})
    if not spec.startswith(("{", "[")):
        path = Path(spec)
        try:
            spec = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise LeakKeysError(f"cannot read {path}: {exc.strerror}") from None
    try:
        document = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise LeakKeysError(f"not JSON: {exc.msg} at line {exc.lineno}") from None
    return PublicKeys({identifier: _public_key(identifier, pem)
                       for identifier, pem in _entries(document).items()})


def _entries(document: Any) -> dict[str, Any]:
    if isinstance(document, dict) and "public_keys" in document:
        listed = document["public_keys"]
        if not isinstance(listed, list) or not all(
                isinstance(item, dict) and {"key_identifier", "key"} <= item.keys()
                for item in listed):
            raise LeakKeysError("'public_keys' must be a list of objects with "
                                "'key_identifier' and 'key'")
        return {str(item["key_identifier"]): item["key"] for item in listed}
    if isinstance(document, dict):
        return {str(identifier): pem for identifier, pem in document.items()}
    raise LeakKeysError("expected {\"public_keys\": [...]} (GitHub's format) or "
                        "{\"<key identifier>\": \"<PEM>\"}")


def _public_key(identifier: str, pem: Any) -> ec.EllipticCurvePublicKey:
    if not identifier or len(identifier) > MAX_IDENTIFIER_CHARS:
        raise LeakKeysError(f"key identifiers must be 1 to {MAX_IDENTIFIER_CHARS} characters")
    if not isinstance(pem, str):
        raise LeakKeysError(f"key {identifier!r}: the key must be a PEM string")
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError:
        raise LeakKeysError(f"key {identifier!r} is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve,
                                                                        ec.SECP256R1):
        raise LeakKeysError(f"key {identifier!r} is not an ECDSA P-256 key")
    return key
