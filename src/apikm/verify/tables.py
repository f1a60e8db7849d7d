"""Tables of the verification domain."""

from __future__ import annotations

import sqlalchemy as sa

from apikm.db import metadata

# Failed verifications per client address group and fixed window, shared by the replicas on
# one PostgreSQL when no Redis is configured (``failure_counter.py``). Two rows per active
# group at most (this window and the one before); older rows are pruned.
failure_counts = sa.Table(
    "failure_counts",
    metadata,
    sa.Column("address_group", sa.String(64), primary_key=True),
    sa.Column("window_start", sa.BigInteger(), primary_key=True),  # epoch seconds
    sa.Column("count", sa.Integer(), nullable=False),
)
