"""The token path must not undo what the sync learnt: older tokens and absent groups claims.

Runs on a real (SQLite) database built by the migrations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.db import create_engine
from apikm.identity.owners import remember_owner
from apikm.identity.principal import principal_from_claims
from apikm.identity.tables import owners
from apikm.migrations import upgrade

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'apikm.db'}"
    upgrade(url)  # runs its own event loop: keep it out of the async fixture
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def claims(issued: datetime, roles: list[str], groups: list[str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"sub": "u1", "preferred_username": "ursula",
                            "iat": int(issued.timestamp()), "realm_access": {"roles": roles}}
    if groups is not None:
        body["groups"] = groups
    return body


async def stored(engine: AsyncEngine) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(owners).where(owners.c.user_id == "u1"))).one()


async def test_principal_carries_issue_time_and_whether_groups_were_claimed() -> None:
    with_groups = principal_from_claims(claims(T0, [], ["/staff"]))
    without = principal_from_claims(claims(T0, [], None))
    assert with_groups.issued_at == T0 and with_groups.groups_in_token
    assert without.groups == () and not without.groups_in_token


async def test_token_without_groups_claim_keeps_known_groups(engine: AsyncEngine) -> None:
    await remember_owner(engine, principal_from_claims(claims(T0, ["a"], ["/staff/gis"])))
    later = T0 + timedelta(minutes=1)
    await remember_owner(engine, principal_from_claims(claims(later, ["a", "b"], None)))
    row = await stored(engine)
    assert row.groups == ["/staff/gis"]
    assert row.roles == ["a", "b"] and row.synced_at == later


async def test_first_token_without_groups_claim_stores_no_groups(engine: AsyncEngine) -> None:
    await remember_owner(engine, principal_from_claims(claims(T0, ["a"], None)))
    assert (await stored(engine)).groups == []


async def test_older_token_does_not_overwrite_newer_facts(engine: AsyncEngine) -> None:
    await remember_owner(engine, principal_from_claims(claims(T0, ["a"], [])))
    # The sync then saw role "b" removed and the user disabled.
    async with engine.begin() as conn:
        await conn.execute(sa.update(owners).values(
            roles=["a"], enabled=False, disabled_at=T0 + timedelta(minutes=2),
            synced_at=T0 + timedelta(minutes=2), source="sync"))
    # A token issued before that still carries "b" and proves nothing about today.
    stale = principal_from_claims(claims(T0 + timedelta(minutes=1), ["a", "b"], []))
    await remember_owner(engine, stale)
    row = await stored(engine)
    assert (row.roles, row.enabled, row.source) == (["a"], False, "sync")
    # A token issued after it is news: Keycloak only issues tokens to enabled users.
    fresh = principal_from_claims(claims(T0 + timedelta(minutes=3), ["a", "b"], []))
    await remember_owner(engine, fresh)
    row = await stored(engine)
    assert (row.roles, row.enabled, row.disabled_at, row.source) == (["a", "b"], True, None,
                                                                     "token")
