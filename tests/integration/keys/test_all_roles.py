"""All-roles keys in the key service, on a real (SQLite) database: opt-in, gated by policy,
their roles follow the owner and cannot be narrowed into a chosen grant."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import pytest

from apikm.db import create_engine
from apikm.identity.principal import Principal
from apikm.keys.hashing import parse_peppers
from apikm.keys.policy import LifetimePolicy, PolicyError
from apikm.keys.service import Actor, KeyChanges, KeyPolicy, KeyService, NewKey
from apikm.migrations import upgrade

OWNER = Principal(user_id="u-all", username="alice", email=None,
                  roles=frozenset({"analyst", "geoserver:read"}), groups=())


@pytest.fixture
def database() -> str:
    url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'k.db'}"
    upgrade(url)  # runs its own event loop: outside the tests' loop
    return url


def service(url: str, allow: bool) -> KeyService:
    rules = KeyPolicy(prefix="apikm", lifetime=LifetimePolicy(timedelta(days=1),
                                                             timedelta(days=10)),
                      max_keys_per_user=10, max_meta_bytes=1024,
                      max_rotation_overlap=timedelta(hours=1), allow_all_roles=allow)
    return KeyService(create_engine(url), rules, parse_peppers("p1:" + "x" * 24))


async def test_all_roles_key_records_the_roles_held_and_cannot_be_narrowed(
        database: str) -> None:
    keys = service(database, allow=True)
    created = await keys.create(OWNER, NewKey(name="all", roles=[], all_roles=True))
    assert created.key["all_roles"] is True
    assert created.key["roles"] == ["analyst", "geoserver:read"]
    with pytest.raises(PolicyError, match="follows"):
        await keys.update(created.key["id"], OWNER.user_id, KeyChanges(roles=["analyst"]),
                          Actor.of(OWNER))
    with pytest.raises(PolicyError, match="not both"):
        await keys.create(OWNER, NewKey(name="x", roles=["analyst"], all_roles=True))


async def test_policy_can_turn_all_roles_keys_off(database: str) -> None:
    keys = service(database, allow=False)
    with pytest.raises(PolicyError, match="APIKM_ALLOW_ALL_ROLES_KEYS") as refused:
        await keys.create(OWNER, NewKey(name="all", roles=[], all_roles=True))
    assert refused.value.field == "all_roles"
    chosen = await keys.create(OWNER, NewKey(name="chosen", roles=["analyst"]))
    assert chosen.key["all_roles"] is False
