"""What apikm knows of each key owner in Keycloak: the basis of effective rights."""

from __future__ import annotations

import sqlalchemy as sa

from apikm.db import JSONType, UTCDateTime, metadata

owners = sa.Table(
    "owners",
    metadata,
    sa.Column("user_id", sa.String(255), primary_key=True),  # Keycloak subject
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("email", sa.String(255)),
    sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
    # Effective roles, composites resolved: "role" (realm) and "client_id:role" (client).
    sa.Column("roles", JSONType, nullable=False),
    sa.Column("groups", JSONType, nullable=False),
    # When these facts were last confirmed by Keycloak (token or admin API).
    sa.Column("synced_at", UTCDateTime(), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # token | sync
    sa.Column("disabled_at", UTCDateTime()),
    # Keycloak user attributes named in APIKM_OAUTH2_ATTRIBUTES (name -> values), synced.
    sa.Column("attributes", JSONType, nullable=False, server_default=sa.text("'{}'")),
)

# The sync's own state (issue 3). One row per name, so several replicas share it.
# "admin_events" / "user_events": event cursors; "health": last results, for every replica.
sync_state = sa.Table(
    "sync_state",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", JSONType, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Leader lease: the replica named in ``holder`` syncs until ``expires_at``; it renews the
# lease well before then. A plain row works the same on SQLite and PostgreSQL.
sync_leases = sa.Table(
    "sync_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("acquired_at", UTCDateTime(), nullable=False),
)

# Web UI sessions that were signed out, so that every replica refuses their cookie. A row
# lives until the session would have expired anyway (``until``), then it is deleted.
ui_ended_sessions = sa.Table(
    "ui_ended_sessions",
    metadata,
    sa.Column("sid", sa.String(64), primary_key=True),
    sa.Column("until", UTCDateTime(), nullable=False, index=True),
)

# The show-once hand-off between a web UI form's POST and the page it redirects to: the new
# secret, encrypted with APIKM_ENCRYPTION_KEY, read once by its owner then deleted (any
# replica may answer the GET). Rows left unread are deleted after ``until``.
ui_handoffs = sa.Table(
    "ui_handoffs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # SHA-256 of the URL's token
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("key_id", sa.String(36), nullable=False),
    sa.Column("rotated", sa.Boolean(), nullable=False),
    sa.Column("encryption_key_id", sa.String(32), nullable=False),
    sa.Column("secret", sa.LargeBinary(), nullable=False),
    sa.Column("until", UTCDateTime(), nullable=False, index=True),
)
