"""The web UI's show-once hand-off (POST -> redirect -> GET; issue 14).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from apikm.db import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_handoffs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("rotated", sa.Boolean(), nullable=False),
        sa.Column("encryption_key_id", sa.String(32), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("until", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ui_handoffs"),
    )
    op.create_index("ix_ui_handoffs_until", "ui_handoffs", ["until"])


def downgrade() -> None:
    op.drop_index("ix_ui_handoffs_until", table_name="ui_handoffs")
    op.drop_table("ui_handoffs")
