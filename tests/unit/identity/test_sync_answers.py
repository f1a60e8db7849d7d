"""The sync against Keycloak answers it cannot read, and federated (``f:``) user ids.

The admin client's parsing runs for real on a mocked Keycloak (``httpx.MockTransport``), the
sync worker on a real SQLite database built by the migrations.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.db import create_engine, utcnow
from apikm.identity.admin_client import AdminCredentials, KeycloakAdmin
from apikm.identity.sync import SyncConfig, SyncWorker
from apikm.identity.tables import owners
from apikm.keys.tables import api_keys
from apikm.migrations import upgrade

FEDERATED = "f:3f5c8a2e-0d7b-4c51-9a3e-2b1f6c7d8e90:carol"
GOOD, NOT_JSON, NO_FLAG, BAD_ROLES = "u-good", "u-html", "u-noflag", "u-badroles"
OWNERS = (GOOD, NOT_JSON, NO_FLAG, BAD_ROLES, FEDERATED)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'apikm.db'}"
    upgrade(url)
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    now = utcnow()
    async with engine.begin() as conn:
        for n, owner in enumerate(OWNERS):
            await conn.execute(sa.insert(api_keys).values(
                id=f"00000000-0000-0000-0000-00000000000{n}", public_id=f"pub{n}",
                owner_id=owner, name="k", roles=["analyst"], allowed_networks=[], meta={},
                secret_hash=f"{n:064d}", pepper_id="p", status="active",
                expires_at=now + timedelta(days=1), created_at=now - timedelta(hours=1),
                created_by=owner, updated_at=now))
    yield engine
    await engine.dispose()


def keycloak(events: list[dict[str, Any]]) -> httpx.MockTransport:
    """A realm whose admin API answers some users with what no parser should trust."""
    def user(uid: str) -> httpx.Response:
        if uid == NOT_JSON:
            return httpx.Response(200, text="<html>proxy maintenance page</html>")
        if uid == NO_FLAG:
            return httpx.Response(200, json={"id": uid, "username": "nora"})
        return httpx.Response(200, json={"id": uid, "username": uid.rsplit(":")[-1],
                                         "enabled": True})

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 300})
        path = request.url.path.removeprefix("/admin/realms/demo")
        if path == "/admin-events":
            return httpx.Response(200, json=events)
        if path == "/events":
            return httpx.Response(200, content=json.dumps([]).encode())
        _, _, uid, *rest = path.split("/")
        if not rest:
            return user(uid)
        if rest[0] == "groups":
            return httpx.Response(200, json=[{"path": "/staff"}])
        if uid == BAD_ROLES:
            return httpx.Response(200, json=[{"id": "r1"}])  # a role without a name
        return httpx.Response(200, json=[{"name": "analyst"}])

    return httpx.MockTransport(handle)


def worker(engine: AsyncEngine, events: list[dict[str, Any]] | None = None) -> SyncWorker:
    http = httpx.AsyncClient(transport=keycloak(events or []))
    admin = KeycloakAdmin(AdminCredentials("http://keycloak", "demo", "apikm", "s"), http)
    return SyncWorker(engine, admin, SyncConfig(concurrency=2))


async def stored(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        return {row.user_id: row for row in await conn.execute(sa.select(owners))}


async def key_statuses(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(sa.select(api_keys.c.status))).scalars())


async def test_full_pass_counts_unreadable_answers_and_goes_on(engine: AsyncEngine) -> None:
    report = await worker(engine).full_pass()
    assert (report.owners, report.failed) == (5, 3)
    found = await stored(engine)
    assert set(found) == {GOOD, FEDERATED}  # the readable ones were synced
    assert found[FEDERATED].username == "carol" and found[FEDERATED].roles == ["analyst"]
    assert await key_statuses(engine) == {"active"}  # no flag is not "disabled"


async def test_events_name_federated_users_and_survive_bad_answers(engine: AsyncEngine) -> None:
    now_ms = int(time.time() * 1000)
    events = [{"id": "e1", "time": now_ms, "resourceType": "USER", "operationType": "UPDATE",
               "resourcePath": f"users/{FEDERATED}"},
              {"id": "e2", "time": now_ms, "resourceType": "USER", "operationType": "UPDATE",
               "resourcePath": f"users/{NOT_JSON}"},
              "not an event", {"id": "e3", "time": "later"}]
    assert await worker(engine, events).poll_events() == 2
    assert set(await stored(engine)) == {FEDERATED}
