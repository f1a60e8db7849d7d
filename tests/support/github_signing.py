"""A test stand-in for GitHub's secret scanning signing key: a fresh ECDSA P-256 key pair,
its public half in the formats APIKM_LEAK_REPORT_KEYS takes, and reports signed as GitHub
signs them (DER signature over the raw body, base64, in Github-Public-Key-Signature)."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


@dataclass
class SigningKey:
    identifier: str = field(default_factory=lambda: secrets.token_hex(32))
    private: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()), repr=False)

    @property
    def public_pem(self) -> str:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def github_document(self, *others: SigningKey) -> str:
        """As https://api.github.com/meta/public_keys/secret_scanning publishes keys."""
        return json.dumps({"public_keys": [
            {"key_identifier": key.identifier, "key": key.public_pem, "is_current": index == 0}
            for index, key in enumerate((self, *others))]})

    def sign(self, body: bytes) -> str:
        return base64.b64encode(self.private.sign(body, ec.ECDSA(hashes.SHA256()))).decode()

    def headers(self, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/json",
                "Github-Public-Key-Identifier": self.identifier,
                "Github-Public-Key-Signature": self.sign(body)}
