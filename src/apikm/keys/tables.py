"""Tables of the key domain. SQLAlchemy Core: the hot path reads rows, not ORM objects."""

from __future__ import annotations

import sqlalchemy as sa

from apikm.db import JSONType, UTCDateTime, metadata

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("public_id", sa.String(16), nullable=False, unique=True),
    sa.Column("owner_id", sa.String(255), nullable=False, index=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("description", sa.String(1000), nullable=False, server_default=""),
    sa.Column("roles", JSONType, nullable=False),
    sa.Column("allowed_networks", JSONType, nullable=False),
    sa.Column("meta", JSONType, nullable=False),
    sa.Column("rate_limit", sa.String(32)),
    # HMAC-SHA256 hex of the key, and of the previous key during a rotation overlap.
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("pepper_id", sa.String(32), nullable=False),
    sa.Column("previous_secret_hash", sa.String(64), unique=True),
    sa.Column("previous_pepper_id", sa.String(32)),
    sa.Column("previous_secret_expires_at", UTCDateTime()),
    # active | suspended | revoked; "expired" is derived from expires_at.
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    # Indexed: the notification worker looks for keys crossing an expiry-warning threshold.
    sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
    # Indexed: the Keycloak sync follows new keys to confirm their owner's roles at once.
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("rotated_at", UTCDateTime()),
    sa.Column("suspended_at", UTCDateTime()),
    sa.Column("revoked_at", UTCDateTime()),
    sa.Column("revoked_by", sa.String(255)),
    sa.Column("revoked_reason", sa.String(255)),
    sa.Column("last_used_at", UTCDateTime()),
    sa.Column("last_used_ip", sa.String(45)),
    sa.Column("use_count", sa.BigInteger(), nullable=False, server_default="0"),
    # Opt-in: the key carries all of its owner's current roles (``roles`` keeps the roles
    # held at creation, for display and for which clients the sync reads).
    sa.Column("all_roles", sa.Boolean(), nullable=False, server_default=sa.false()),
    # "apikeymanager" for keys imported from CS Group's APIKeyManager (apikm.compat).
    sa.Column("imported_from", sa.String(32)),
    # Secret generation: 1 at creation, +1 per rotation; with the last characters of the
    # current secret (part of its checksum, nothing to use it with) a person can tell which
    # secret a tool holds: the public id stays the same across rotations.
    sa.Column("generation", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("secret_tail", sa.String(8)),
)

# Every secret a rotation retired, so that one presented after its overlap is recognised
# (REVOKED "rotated", a ``secret_reuse`` alert) instead of answering NOT_FOUND. Read only on
# a lookup that found no live key, never on the cached path.
retired_secrets = sa.Table(
    "retired_secrets",
    metadata,
    sa.Column("secret_hash", sa.String(64), primary_key=True),
    sa.Column("pepper_id", sa.String(32), nullable=False),
    sa.Column("key_id", sa.String(36), sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("generation", sa.Integer(), nullable=False),
    sa.Column("secret_tail", sa.String(8)),
    sa.Column("retired_at", UTCDateTime(), nullable=False),
    # The end of the overlap it was given (its retirement time without one); cut short when
    # a later rotation or a revocation ends it.
    sa.Column("overlap_ends_at", UTCDateTime(), nullable=False),
)

key_usage_daily = sa.Table(
    "key_usage_daily",
    metadata,
    sa.Column("key_id", sa.String(36), sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("day", sa.Date(), primary_key=True),
    sa.Column("count", sa.BigInteger(), nullable=False),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False, index=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor_id", sa.String(255), nullable=False),
    sa.Column("actor_name", sa.String(255), nullable=False),
    sa.Column("actor_ip", sa.String(45)),
    sa.Column("key_id", sa.String(36), index=True),
    sa.Column("owner_id", sa.String(255), index=True),
    sa.Column("details", JSONType, nullable=False),
)
