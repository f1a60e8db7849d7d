"""What replicas share: change events (cache invalidation, address blocks) and, without
Redis, the failure counts of the brute-force limiter.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from apikm.db import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("until", UTCDateTime()),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_cluster_events"),
    )
    op.create_index("ix_cluster_events_at", "cluster_events", ["at"])
    op.create_table(
        "failure_counts",
        sa.Column("address_group", sa.String(64), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("address_group", "window_start", name="pk_failure_counts"),
    )


def downgrade() -> None:
    op.drop_table("failure_counts")
    op.drop_index("ix_cluster_events_at", table_name="cluster_events")
    op.drop_table("cluster_events")
