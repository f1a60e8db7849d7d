"""The change-event log every replica follows (see ``bus.py``)."""

from __future__ import annotations

import sqlalchemy as sa

from apikm.db import UTCDateTime, metadata

# One row per change that cached answers depend on. Written in the same transaction as the
# change itself, so an event exists exactly when the change committed; rows older than a
# minute are pruned (a replica that fell that far behind clears its whole cache).
cluster_events = sa.Table(
    "cluster_events",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # key | owner | all | block | signing
    sa.Column("ref", sa.String(255), nullable=False),  # key id, owner id, address group, kid
    sa.Column("until", UTCDateTime()),  # blocks: when the block ends
    sa.Column("at", UTCDateTime(), nullable=False, index=True),
)
