"""apikm's JWT signing keys, one set for every replica (see ``signing.py``)."""

from __future__ import annotations

import sqlalchemy as sa

from apikm.db import UTCDateTime, metadata

# ``generation`` numbers keys in order of creation; as the primary key it makes creating
# "the next key" an insert-if-absent: replicas starting together create exactly one.
signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("generation", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("kid", sa.String(64), nullable=False, unique=True),  # RFC 7638 thumbprint
    sa.Column("alg", sa.String(8), nullable=False),
    sa.Column("public_jwk", sa.Text(), nullable=False),  # JSON, served in the JWKS
    # AES-256-GCM (nonce || ciphertext || tag) of the private PEM, kid as associated data,
    # under the APIKM_ENCRYPTION_KEY entry named by encryption_key_id.
    sa.Column("private_key", sa.LargeBinary(), nullable=False),
    sa.Column("encryption_key_id", sa.String(32), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)
