"""Change events followed by every replica (cache invalidation, shared address blocks).

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


def downgrade() -> None:
    op.drop_index("ix_cluster_events_at", table_name="cluster_events")
    op.drop_table("cluster_events")
