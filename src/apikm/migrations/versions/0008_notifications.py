"""Notifications: outbox, delivery attempts, webhook endpoints, mail preferences (issue 13),
and an index on api_keys.expires_at for the expiry warnings.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from apikm.db import JSONType, UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(255), nullable=False),
        sa.Column("audience", sa.String(16), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(36), nullable=True),
        sa.Column("owner_id", sa.String(255), nullable=True),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.UniqueConstraint("source", "ref", "channel", "recipient",
                            name="uq_notifications_source_ref_channel_recipient"),
    )
    op.create_index("ix_notifications_key_id", "notifications", ["key_id"])
    op.create_index("ix_notifications_created_at", "notifications", ["created_at"])
    op.create_index("ix_notifications_due", "notifications", ["status", "next_attempt_at"])
    op.create_table(
        "notification_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("notification_id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("reply", sa.String(500), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.ForeignKeyConstraint(["notification_id"], ["notifications.id"],
                                name="fk_notification_attempts_notification_id_notifications",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_notification_attempts"),
    )
    op.create_index("ix_notification_attempts_notification_id", "notification_attempts",
                    ["notification_id"])
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("description", sa.String(255), server_default="", nullable=False),
        sa.Column("events", JSONType, nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("encryption_key_id", sa.String(32), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoints"),
    )
    op.create_table(
        "notification_preferences",
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("mail", JSONType, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_notification_preferences"),
    )
    op.create_index("ix_api_keys_expires_at", "api_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_expires_at", table_name="api_keys")
    op.drop_table("notification_preferences")
    op.drop_table("webhook_endpoints")
    op.drop_index("ix_notification_attempts_notification_id",
                  table_name="notification_attempts")
    op.drop_table("notification_attempts")
    op.drop_index("ix_notifications_due", table_name="notifications")
    op.drop_index("ix_notifications_created_at", table_name="notifications")
    op.drop_index("ix_notifications_key_id", table_name="notifications")
    op.drop_table("notifications")
