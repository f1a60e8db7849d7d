"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 12:20:04.322967
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import apikm.db

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('public_id', sa.String(length=16), nullable=False),
    sa.Column('owner_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('description', sa.String(length=1000), server_default='', nullable=False),
    sa.Column('roles', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('allowed_networks', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('meta', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('rate_limit', sa.String(length=32), nullable=True),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('pepper_id', sa.String(length=32), nullable=False),
    sa.Column('previous_secret_hash', sa.String(length=64), nullable=True),
    sa.Column('previous_pepper_id', sa.String(length=32), nullable=True),
    sa.Column('previous_secret_expires_at', apikm.db.UTCDateTime(), nullable=True),
    sa.Column('status', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('expires_at', apikm.db.UTCDateTime(), nullable=False),
    sa.Column('created_at', apikm.db.UTCDateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('updated_at', apikm.db.UTCDateTime(), nullable=False),
    sa.Column('rotated_at', apikm.db.UTCDateTime(), nullable=True),
    sa.Column('suspended_at', apikm.db.UTCDateTime(), nullable=True),
    sa.Column('revoked_at', apikm.db.UTCDateTime(), nullable=True),
    sa.Column('revoked_by', sa.String(length=255), nullable=True),
    sa.Column('revoked_reason', sa.String(length=255), nullable=True),
    sa.Column('last_used_at', apikm.db.UTCDateTime(), nullable=True),
    sa.Column('last_used_ip', sa.String(length=45), nullable=True),
    sa.Column('use_count', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('previous_secret_hash', name=op.f('uq_api_keys_previous_secret_hash')),
    sa.UniqueConstraint('public_id', name=op.f('uq_api_keys_public_id')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_api_keys_secret_hash'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_owner_id'), ['owner_id'], unique=False)

    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', apikm.db.UTCDateTime(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=False),
    sa.Column('actor_name', sa.String(length=255), nullable=False),
    sa.Column('actor_ip', sa.String(length=45), nullable=True),
    sa.Column('key_id', sa.String(length=36), nullable=True),
    sa.Column('owner_id', sa.String(length=64), nullable=True),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_key_id'), ['key_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_owner_id'), ['owner_id'], unique=False)

    op.create_table('owners',
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('username', sa.String(length=255), nullable=False),
    sa.Column('email', sa.String(length=255), nullable=True),
    sa.Column('enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('roles', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('groups', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('synced_at', apikm.db.UTCDateTime(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('disabled_at', apikm.db.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_owners'))
    )
    op.create_table('key_usage_daily',
    sa.Column('key_id', sa.String(length=36), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['api_keys.id'], name=op.f('fk_key_usage_daily_key_id_api_keys'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key_id', 'day', name=op.f('pk_key_usage_daily'))
    )


def downgrade() -> None:
    op.drop_table('key_usage_daily')
    op.drop_table('owners')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_owner_id'))
        batch_op.drop_index(batch_op.f('ix_audit_events_key_id'))
        batch_op.drop_index(batch_op.f('ix_audit_events_at'))

    op.drop_table('audit_events')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_owner_id'))

    op.drop_table('api_keys')
