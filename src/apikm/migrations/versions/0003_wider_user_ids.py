"""Wider user id columns: Keycloak subjects of federated users ("f:<provider>:<id>") can be
longer than 64 characters.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = {
    "api_keys": ("owner_id", "created_by"),
    "audit_events": ("actor_id", "owner_id"),
    "owners": ("user_id",),
}


def _resize(length_from: int, length_to: int) -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(column, existing_type=sa.String(length_from),
                                   type_=sa.String(length_to))


def upgrade() -> None:
    _resize(64, 255)


def downgrade() -> None:
    _resize(255, 64)
