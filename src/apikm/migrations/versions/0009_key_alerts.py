"""Alerts on suspicious key use and secret generations (issues 13 and 14).

Keys get a secret generation (1 at creation, +1 per rotation) and the last characters of the
current secret; retired secrets are kept so one presented after its overlap is recognised;
networks each key was used from, and marks deduplicating alerts across replicas.

Keys rotated before this migration start at generation 2, their previous secret (if still
stored) as generation 1: earlier rotations are not known.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from apikm.db import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False,
                                   server_default="1"))
        batch.add_column(sa.Column("secret_tail", sa.String(8)))
    op.create_table(
        "retired_secrets",
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("pepper_id", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("secret_tail", sa.String(8)),
        sa.Column("retired_at", UTCDateTime(), nullable=False),
        sa.Column("overlap_ends_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="CASCADE",
                                name="fk_retired_secrets_key_id_api_keys"),
        sa.PrimaryKeyConstraint("secret_hash", name="pk_retired_secrets"),
    )
    op.create_index("ix_retired_secrets_key_id", "retired_secrets", ["key_id"])
    op.create_table(
        "key_networks",
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("network", sa.String(64), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="CASCADE",
                                name="fk_key_networks_key_id_api_keys"),
        sa.PrimaryKeyConstraint("key_id", "network", name="pk_key_networks"),
    )
    op.create_table(
        "alert_marks",
        sa.Column("mark", sa.String(200), nullable=False),
        sa.Column("until", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("mark", name="pk_alert_marks"),
    )
    op.create_index("ix_alert_marks_until", "alert_marks", ["until"])
    _number_rotated_keys()


def _number_rotated_keys() -> None:
    keys = sa.table("api_keys", sa.column("id"), sa.column("generation"),
                    sa.column("rotated_at"), sa.column("previous_secret_hash"),
                    sa.column("previous_pepper_id"), sa.column("previous_secret_expires_at"))
    retired = sa.table("retired_secrets", sa.column("secret_hash"), sa.column("pepper_id"),
                       sa.column("key_id"), sa.column("generation"), sa.column("retired_at"),
                       sa.column("overlap_ends_at"))
    op.execute(sa.update(keys).where(keys.c.rotated_at.is_not(None)).values(generation=2))
    op.execute(retired.insert().from_select(
        ["secret_hash", "pepper_id", "key_id", "generation", "retired_at", "overlap_ends_at"],
        sa.select(keys.c.previous_secret_hash, keys.c.previous_pepper_id, keys.c.id,
                  sa.literal(1), keys.c.rotated_at, keys.c.previous_secret_expires_at)
        .where(keys.c.previous_secret_hash.is_not(None), keys.c.rotated_at.is_not(None),
               keys.c.previous_pepper_id.is_not(None),
               keys.c.previous_secret_expires_at.is_not(None))))


def downgrade() -> None:
    op.drop_index("ix_alert_marks_until", table_name="alert_marks")
    op.drop_table("alert_marks")
    op.drop_table("key_networks")
    op.drop_index("ix_retired_secrets_key_id", table_name="retired_secrets")
    op.drop_table("retired_secrets")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("secret_tail")
        batch.drop_column("generation")
