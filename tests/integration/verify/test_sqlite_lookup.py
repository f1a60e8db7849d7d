"""The driver-level SQLite lookup reads exactly what SQLAlchemy's own execution reads."""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from apikm.db import create_sqlite_reader
from apikm.identity.tables import owners
from apikm.keys.tables import api_keys
from apikm.migrations import upgrade
from apikm.verify.record import record_from_row
from apikm.verify.sqlite_lookup import SqliteLookup
from apikm.verify.store import lookup_query

NOW = datetime(2026, 11, 23, 12, 30, 15, 123456, tzinfo=UTC)


def _key(owner_id: str, secret: str, **values: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "public_id": secret[:8], "owner_id": owner_id,
            "name": "k", "description": "", "roles": ["analyst", "gs:read"],
            "allowed_networks": [], "meta": {}, "secret_hash": secret, "pepper_id": "p1",
            "status": "active", "expires_at": NOW + timedelta(days=3), "created_at": NOW,
            "created_by": owner_id, "updated_at": NOW, "use_count": 0, **values}


@pytest.fixture(scope="module")
def reader() -> sa.Engine:
    folder = Path(tempfile.mkdtemp(prefix="apikm-lookup-"))
    upgrade(f"sqlite+aiosqlite:///{folder / 'apikm.db'}")
    engine = sa.create_engine(f"sqlite:///{folder / 'apikm.db'}")
    with engine.begin() as conn:
        conn.execute(sa.insert(owners), [
            {"user_id": "u1", "username": "alice", "email": "a@example.org", "enabled": True,
             "roles": ["analyst"], "groups": ["/staff/gis"], "synced_at": NOW, "source": "sync",
             "attributes": {"org": ["esa", "cnes"], "team": ["eo"]}},
            {"user_id": "u2", "username": "bob", "email": None, "enabled": False,
             "roles": [], "groups": [], "synced_at": NOW, "source": "token", "attributes": {}},
        ])
        for row in (
            _key("u1", "a" * 64, meta={"project": {"name": "ndvi", "n": [1, 2.5, None]}},
                 allowed_networks=["10.0.0.0/8", "2001:db8::/32"], rate_limit="10/minute",
                 previous_secret_hash="b" * 64, previous_pepper_id="p1",
                 previous_secret_expires_at=NOW + timedelta(hours=1)),
            _key("u2", "c" * 64, status="revoked", revoked_reason="leaked", all_roles=True,
                 imported_from="apikeymanager", revoked_at=NOW),
        ):  # one by one: the rows set different columns
            conn.execute(sa.insert(api_keys).values(row))
    engine.dispose()
    found = create_sqlite_reader(f"sqlite+aiosqlite:///{folder / 'apikm.db'}")
    assert found is not None
    return found


@pytest.mark.parametrize("hashes", [["a" * 64], ["b" * 64], ["c" * 64], ["x" * 64, "c" * 64],
                                    ["x" * 64, "y" * 64, "b" * 64], ["x" * 64]])
def test_same_record_as_sqlalchemy(reader: sa.Engine, hashes: list[str]) -> None:
    with reader.connect() as connection:
        expected = connection.execute(lookup_query(hashes)).first()
    row = SqliteLookup(reader, lookup_query).first(hashes)
    if expected is None:
        assert row is None
        return
    assert row is not None
    assert record_from_row(row) == record_from_row(expected)
    assert row._asdict() == expected._asdict()  # every value, typed alike
    assert row.expires_at.tzinfo is UTC and isinstance(row.enabled, bool)
