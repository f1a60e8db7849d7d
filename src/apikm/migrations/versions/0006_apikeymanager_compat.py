"""APIKeyManager compatibility (issue 11): all-roles keys, imported keys, owner attributes.

- ``api_keys.all_roles``: the key carries all of its owner's current roles (opt-in);
- ``api_keys.imported_from``: where an imported key came from (``apikeymanager``); such a
  key may be a uuid4 and is stored, until first use, as the old service's unsalted SHA-256
  (``pepper_id`` ``sha256``);
- ``owners.attributes``: the Keycloak user attributes named in ``APIKM_OAUTH2_ATTRIBUTES``.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("all_roles", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column("imported_from", sa.String(32), nullable=True))
    with op.batch_alter_table("owners", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attributes", _JSON, nullable=False,
                                      server_default=sa.text("'{}'")))


def downgrade() -> None:
    with op.batch_alter_table("owners", schema=None) as batch_op:
        batch_op.drop_column("attributes")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("imported_from")
        batch_op.drop_column("all_roles")
