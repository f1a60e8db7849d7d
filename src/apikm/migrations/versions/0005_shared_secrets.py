"""Signing keys in the database (encrypted), signed-out UI sessions (issue 9).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from apikm.db import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("generation", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("alg", sa.String(8), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("private_key", sa.LargeBinary(), nullable=False),
        sa.Column("encryption_key_id", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("generation", name="pk_signing_keys"),
        sa.UniqueConstraint("kid", name="uq_signing_keys_kid"),
    )
    op.create_table(
        "ui_ended_sessions",
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("until", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sid", name="pk_ui_ended_sessions"),
    )
    op.create_index("ix_ui_ended_sessions_until", "ui_ended_sessions", ["until"])


def downgrade() -> None:
    op.drop_index("ix_ui_ended_sessions_until", table_name="ui_ended_sessions")
    op.drop_table("ui_ended_sessions")
    op.drop_table("signing_keys")
