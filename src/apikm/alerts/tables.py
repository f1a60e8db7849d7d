"""Tables of the alert domain."""

from __future__ import annotations

import sqlalchemy as sa

from apikm.db import UTCDateTime, metadata

# Networks (/24 IPv4, /48 IPv6) each key was used from. A row inserted by a flush (not one
# that was there already) is a first use from that network: replicas inserting the same row
# at once see one insert succeed, so one alert is written.
key_networks = sa.Table(
    "key_networks",
    metadata,
    sa.Column("key_id", sa.String(36), sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("network", sa.String(64), primary_key=True),
    sa.Column("first_seen_at", UTCDateTime(), nullable=False),
)

# One row per alert already written for a deduplication window ("secret_reuse:<key>:<address>
# :<hour>"): the replica whose insert succeeds writes the alert, the others skip it. Rows
# are pruned once their window is over.
alert_marks = sa.Table(
    "alert_marks",
    metadata,
    sa.Column("mark", sa.String(200), primary_key=True),
    sa.Column("until", UTCDateTime(), nullable=False, index=True),
)
