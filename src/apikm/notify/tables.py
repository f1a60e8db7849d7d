"""Tables of notifications: the outbox, its delivery attempts, webhook endpoints and mail
preferences. The worker's cursor lives in ``sync_state`` (name ``notifications``)."""

from __future__ import annotations

import sqlalchemy as sa

from apikm.db import JSONType, UTCDateTime, metadata

# One row per event, recipient and channel. The unique key makes enqueuing idempotent: two
# replicas, a restart or a re-read window may all try to enqueue the same event, and only
# the first insert counts ("exactly once" for expiry warnings rests on it).
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    # audit: ref = audit event id; expiry: ref = key id, threshold and expiry; test: random
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("ref", sa.String(128), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),  # email | webhook
    sa.Column("recipient", sa.String(255), nullable=False),  # address, or endpoint id
    sa.Column("audience", sa.String(16), nullable=False),  # owner | admin | webhook
    sa.Column("event", sa.String(32), nullable=False),  # key.created, key.expiring, ...
    sa.Column("key_id", sa.String(36), index=True),
    sa.Column("owner_id", sa.String(255)),
    # What the message says (never a secret: public id and hint only).
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending | sent | failed
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("sent_at", UTCDateTime()),
    sa.Column("last_error", sa.String(500)),
    sa.UniqueConstraint("source", "ref", "channel", "recipient",
                        name="uq_notifications_source_ref_channel_recipient"),
    sa.Index("ix_notifications_due", "status", "next_attempt_at"),
)

# Every delivery attempt: what the SMTP server or the webhook receiver answered.
notification_attempts = sa.Table(
    "notification_attempts",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("notification_id", sa.Integer(),
              sa.ForeignKey("notifications.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("ok", sa.Boolean(), nullable=False),
    sa.Column("status_code", sa.Integer()),  # HTTP status or SMTP reply code
    sa.Column("reply", sa.String(500)),
    sa.Column("error", sa.String(500)),
)

# Admins' webhook endpoints. The signing secret (Standard Webhooks, "whsec_...") is kept
# AES-256-GCM encrypted with APIKM_ENCRYPTION_KEY, the row id as associated data.
webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("description", sa.String(255), nullable=False, server_default=""),
    sa.Column("events", JSONType, nullable=False),  # event types; empty: every event
    sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("encryption_key_id", sa.String(32), nullable=False),
    sa.Column("secret", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
)

# Which mails a user gets: {topic: bool}. The row of user "*" holds the admins' defaults.
notification_preferences = sa.Table(
    "notification_preferences",
    metadata,
    sa.Column("user_id", sa.String(255), primary_key=True),
    sa.Column("mail", JSONType, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)
