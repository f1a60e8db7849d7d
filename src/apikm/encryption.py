"""Secrets apikm keeps for every replica, encrypted with ``APIKM_ENCRYPTION_KEY``.

The key ring is ``'id:key,id:older'`` where each key is 32 random bytes, base64url (standard
base64 is accepted too). The first key encrypts; every key decrypts, so a new key can be put
in front and the old one removed once nothing uses it any more (``apikm signing-keys list``
shows which key protects each signing key; they move to the first one at the next start).

* Signing keys: AES-256-GCM, the key id stored beside the ciphertext, the row's ``kid`` as
  associated data (a ciphertext moved to another row does not decrypt).
* Web UI cookie secrets: derived with HKDF-SHA256 per purpose, so replicas agree on them
  without storing anything, and they rotate with the ring.

Development: with SQLite and no ``APIKM_ENCRYPTION_KEY``, a random key is kept in a 0600
file ``APIKM_DATA_DIR/encryption-key``. With a shared database (PostgreSQL) each replica
would invent its own, so apikm refuses to start instead.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from apikm.secret_files import others_may_access

if TYPE_CHECKING:
    from apikm.config import Settings

VARIABLE = "APIKM_ENCRYPTION_KEY"
KEY_FILE = "encryption-key"
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
GENERATE_HINT = ("python3 -c 'import base64,secrets; print(\"k1:\" + base64.urlsafe_b64encode("
                 "secrets.token_bytes(32)).decode().rstrip(\"=\"))'")


class EncryptionKeyError(ValueError):
    """The key ring is unusable; the message never contains key material."""


class DecryptionError(Exception):
    """A value could not be decrypted: unknown key id, wrong key, or tampered data."""


@dataclass(frozen=True)
class EncryptionKeys:
    current_id: str
    keys: dict[str, bytes] = field(repr=False)

    def encrypt(self, plaintext: bytes, associated: bytes) -> tuple[str, bytes]:
        """-> (key id, nonce || ciphertext || tag) with the current key."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.current_id]).encrypt(nonce, plaintext, associated)
        return self.current_id, nonce + sealed

    def decrypt(self, key_id: str, blob: bytes, associated: bytes) -> bytes:
        key = self.keys.get(key_id)
        if key is None:
            raise DecryptionError(f"encrypted with key id {key_id!r}, which {VARIABLE} lacks")
        try:
            return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated)
        except (InvalidTag, ValueError):
            raise DecryptionError(f"key id {key_id!r} does not decrypt it (wrong key for "
                                  "that id, or the data was changed)") from None

    def derive(self, purpose: str) -> list[bytes]:
        """One 32-byte secret per key for ``purpose``, the current key's first."""
        return [HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                     info=f"apikm {purpose} v1".encode()).derive(key)
                for key in self.keys.values()]


def _decode_key(text: str) -> bytes:
    text = text.strip().replace("+", "-").replace("/", "_")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise EncryptionKeyError("is not base64") from None


def parse_encryption_keys(spec: str) -> EncryptionKeys:
    """``'k2:base64,k1:base64'`` -> ring whose current key is ``k2``."""
    keys: dict[str, bytes] = {}
    for entry in (part.strip() for part in spec.split(",") if part.strip()):
        key_id, sep, encoded = entry.partition(":")
        if not sep or not _KEY_ID.match(key_id):
            raise EncryptionKeyError(f"{VARIABLE} must look like 'id:key,id:older-key' "
                                     f"(ids of letters, digits, '.', '_', '-')")
        try:
            key = _decode_key(encoded)
        except EncryptionKeyError:
            raise EncryptionKeyError(f"{VARIABLE} key {key_id!r} is not base64") from None
        if len(key) != KEY_BYTES:
            raise EncryptionKeyError(f"{VARIABLE} key {key_id!r} must be {KEY_BYTES} bytes "
                                     f"(base64url of 32 random bytes), not {len(key)}")
        if key_id in keys:
            raise EncryptionKeyError(f"{VARIABLE} key id {key_id!r} appears twice")
        keys[key_id] = key
    if not keys:
        raise EncryptionKeyError(f"{VARIABLE} is empty")
    return EncryptionKeys(current_id=next(iter(keys)), keys=keys)


def new_key_spec(key_id: str = "k1") -> str:
    encoded = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=")
    return f"{key_id}:{encoded}"


def load_or_create_key_file(path: Path) -> EncryptionKeys:
    """Development default: a random key in a 0600 file beside the SQLite database."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker won the race; use its key
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(new_key_spec("local1") + "\n")
    problem = others_may_access(path)
    if problem:  # whoever reads it can decrypt the signing keys and forge UI sessions
        raise EncryptionKeyError(f"refusing the encryption key file: {problem}")
    return parse_encryption_keys(path.read_text().strip())


def encryption_keys(settings: Settings) -> EncryptionKeys:
    """The configured ring; raises ``ConfigError`` when it is missing where it must be set."""
    from apikm.config import ConfigError

    if settings.encryption_key is not None:
        try:
            return parse_encryption_keys(settings.encryption_key.get_secret_value())
        except EncryptionKeyError as exc:
            raise ConfigError(str(exc)) from None
    if not settings.effective_database_url.startswith("sqlite"):
        raise ConfigError(
            f"{VARIABLE} is not set. With a shared database (PostgreSQL) every replica needs "
            f"the same key to read apikm's JWT signing keys and to accept each other's "
            f"sign-in and session cookies. Create one (e.g. {GENERATE_HINT}), keep it in "
            f"your secret store and give the same value to every replica as {VARIABLE}.")
    return load_or_create_key_file(settings.data_dir / KEY_FILE)
