"""Exact bookkeeping under concurrency, on SQLite and PostgreSQL (issue 9).

After any burst of concurrent operations: never more live keys than the limit, exactly one
key row per successful create, exactly one audit row per change (one ``create`` per key,
one ``revoke`` per revoked key, one ``rotate`` per successful rotation), and usage counts
from several replicas that add up. Part one drives ``KeyService`` directly (1,000
concurrent operations per database); part two runs real ``apikm serve`` processes: two
replicas on one database, and a SIGKILL in the middle of a burst of creates.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.db import create_engine
from apikm.devstack.keycloak import StackInfo
from apikm.identity.principal import Principal
from apikm.keys.hashing import parse_peppers
from apikm.keys.policy import LifetimePolicy, PolicyError
from apikm.keys.service import (
    Actor,
    KeyChanges,
    KeyLimitReached,
    KeyPolicy,
    KeyService,
    NewKey,
)
from apikm.keys.tables import api_keys, audit_events, key_usage_daily
from apikm.migrations import upgrade
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.keycloak_tokens import access_token
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.integration

PEPPERS = "t1:" + "p" * 40
ADMIN = Actor("admin-id", "admin")


# --- databases ----------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database: a SQLite file, or a new database on the test server."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'apikm.db'}"
    else:
        url = fresh_database(request.getfixturevalue("postgres_url"))
    upgrade(url)  # runs its own event loop: keep it out of async fixtures
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def key_service(engine: AsyncEngine, limit: int) -> KeyService:
    rules = KeyPolicy(prefix="apikm",
                      lifetime=LifetimePolicy(timedelta(days=1), timedelta(days=30)),
                      max_keys_per_user=limit, max_meta_bytes=4096,
                      max_rotation_overlap=timedelta(hours=1))
    return KeyService(engine, rules, parse_peppers(PEPPERS))


def owner() -> Principal:
    user_id = f"user-{secrets.token_hex(4)}"
    return Principal(user_id, user_id, None, frozenset({"analyst", "viewer"}), ())


# --- the books ----------------------------------------------------------------------------
@dataclass
class Books:
    keys: dict[str, Any]  # key id -> row
    audits: dict[str, Counter[str]]  # action -> key id -> rows

    @property
    def live(self) -> list[str]:
        return [k for k, row in self.keys.items() if row.status != "revoked"]

    @property
    def revoked(self) -> set[str]:
        return {k for k, row in self.keys.items() if row.status == "revoked"}

    def assert_one_create_per_key(self) -> None:
        assert self.audits["create"] == Counter(list(self.keys)), "create audits != key rows"


async def books(engine: AsyncEngine, owner_id: str | None = None) -> Books:
    async with engine.connect() as conn:
        query = sa.select(api_keys)
        if owner_id is not None:
            query = query.where(api_keys.c.owner_id == owner_id)
        keys = {row.id: row for row in await conn.execute(query)}
        audits: dict[str, Counter[str]] = {}
        events = sa.select(audit_events.c.action, audit_events.c.key_id)
        if owner_id is not None:
            events = events.where(audit_events.c.owner_id == owner_id)
        for action, key_id in await conn.execute(events):
            audits.setdefault(action, Counter())[key_id] += 1
    for action in ("create", "revoke", "rotate", "update"):
        audits.setdefault(action, Counter())
    return Books(keys, audits)


async def run_all(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Start every call at once; results in order, exceptions as values."""
    return await asyncio.gather(*(call() for call in calls), return_exceptions=True)


def outcome(result: object) -> str:
    if isinstance(result, KeyLimitReached):
        return "limit"
    if isinstance(result, PolicyError):
        return "refused"
    if isinstance(result, BaseException):
        return f"error: {result!r}"
    return "ok"


# --- part one: the service, 1,000 concurrent operations per database ----------------------
async def test_concurrent_creates_stop_exactly_at_the_limit(engine: AsyncEngine) -> None:
    service, alice = key_service(engine, limit=100), owner()
    results = await run_all([lambda: service.create(alice, NewKey("k", ["analyst"]))] * 400)

    assert Counter(map(outcome, results)) == {"ok": 100, "limit": 300}
    ledger = await books(engine, alice.user_id)
    assert len(ledger.keys) == 100
    assert set(ledger.keys) == {r.key["id"] for r in results if outcome(r) == "ok"}
    ledger.assert_one_create_per_key()


async def test_concurrent_revokes_revoke_and_audit_once(engine: AsyncEngine) -> None:
    service, bob = key_service(engine, limit=100), owner()
    keys = [(await service.create(bob, NewKey(f"k{i}", ["analyst"]))).key["id"]
            for i in range(20)]
    # 10 revokes of each key, by the owner and by an admin, all at once, shuffled
    calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
    for key_id in keys:
        for n in range(10):
            by_admin = n % 3 == 0
            calls.append((key_id, partial(service.revoke, key_id,
                                          None if by_admin else bob.user_id,
                                          ADMIN if by_admin else Actor.of(bob), "test")))
    random.shuffle(calls)
    results = await run_all([call for _key, call in calls])

    assert Counter(map(outcome, results)) == {"ok": 200}
    ledger = await books(engine, bob.user_id)
    assert ledger.revoked == set(keys)
    assert ledger.audits["revoke"] == Counter(keys)  # one row each, not ten
    for (key_id, _call), answer in zip(calls, results, strict=True):
        assert answer["status"] == "revoked"
        assert answer["revoked_at"] == ledger.keys[key_id].revoked_at  # one revocation


async def test_mixed_creates_revokes_rotates_updates_keep_exact_books(
        engine: AsyncEngine) -> None:
    limit = 40
    service, carol = key_service(engine, limit), owner()
    seeded = [(await service.create(carol, NewKey(f"s{i}", ["analyst", "viewer"]))).key["id"]
              for i in range(limit)]
    rng = random.Random(9)
    calls: list[tuple[str, str, Callable[[], Awaitable[Any]]]] = []
    for _ in range(160):
        calls.append(("create", "", lambda: service.create(carol, NewKey("new", ["analyst"]))))
    for _ in range(100):
        k = rng.choice(seeded)
        calls.append(("revoke", k, partial(service.revoke, k, carol.user_id, Actor.of(carol))))
    for _ in range(100):
        k = rng.choice(seeded)
        calls.append(("rotate", k, partial(service.rotate, k, carol.user_id, 60,
                                           Actor.of(carol))))
    for i in range(40):
        k = rng.choice(seeded)
        calls.append(("update", k, partial(
            service.update, k, carol.user_id,
            KeyChanges(name=f"renamed {i}", roles=["analyst"]), Actor.of(carol))))
    rng.shuffle(calls)
    results = await run_all([call for _op, _key, call in calls])

    by_op: dict[str, Counter[str]] = {}
    for (op, _key, _call), result in zip(calls, results, strict=True):
        by_op.setdefault(op, Counter())[outcome(result)] += 1
    assert set(by_op["create"]) <= {"ok", "limit"}, by_op
    assert set(by_op["revoke"]) == {"ok"}, by_op
    assert set(by_op["rotate"]) <= {"ok", "refused"}, by_op  # refused: revoked before
    assert set(by_op["update"]) <= {"ok", "refused"}, by_op

    ledger = await books(engine, carol.user_id)
    created = [r.key["id"] for (op, _k, _c), r in zip(calls, results, strict=True)
               if op == "create" and outcome(r) == "ok"]
    assert set(ledger.keys) == set(seeded) | set(created)  # as many rows as 201s
    assert len(ledger.live) <= limit
    assert len(created) <= len(ledger.revoked)  # only freed places were taken
    ledger.assert_one_create_per_key()
    assert ledger.audits["revoke"] == Counter(ledger.revoked)
    rotated = Counter(k for (op, k, _c), r in zip(calls, results, strict=True)
                      if op == "rotate" and outcome(r) == "ok")
    assert ledger.audits["rotate"] == rotated
    updated = Counter(k for (op, k, _c), r in zip(calls, results, strict=True)
                      if op == "update" and outcome(r) == "ok" and r["name"].startswith("ren"))
    assert ledger.audits["update"] <= updated  # a rename to the same name changes nothing
    # the secret in force is the one the last successful rotation handed out
    peppers = parse_peppers(PEPPERS)
    for key_id in rotated:
        row = ledger.keys[key_id]
        if row.status != "revoked":
            secrets_given = {r.secret for (op, k, _c), r in zip(calls, results, strict=True)
                             if op == "rotate" and k == key_id and outcome(r) == "ok"}
            assert row.secret_hash in {peppers.digest(s) for s in secrets_given}


# --- part two: real servers ---------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def server_database(request: pytest.FixtureRequest) -> str | None:
    """None: each server makes its own SQLite file; else a new PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return fresh_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def alice_token(keycloak: StackInfo) -> str:
    return access_token(keycloak.issuer, "alice")


async def fire(urls: list[str], token: str, count: int,
               after_each: Callable[[httpx.Response], None] = lambda _r: None,
               ) -> list[httpx.Response | BaseException]:
    """``count`` key creates at once, spread over ``urls`` in turn."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=60, limits=limits,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        async def create(i: int) -> httpx.Response:
            response = await client.post(f"{urls[i % len(urls)]}/v1/keys",
                                         json={"name": f"burst {i}", "roles": ["analyst"]})
            after_each(response)
            return response

        return await asyncio.gather(*(create(i) for i in range(count)),
                                    return_exceptions=True)


async def database_books(url: str) -> Books:
    engine = create_engine(url)
    try:
        return await books(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def two_replicas(server_database: str | None, keycloak: StackInfo,
                 ) -> Iterator[tuple[ApikmServer, ApikmServer]]:
    """Two ``apikm serve`` on one database (SQLite file or PostgreSQL), same peppers."""
    settings = {"peppers": PEPPERS, "max_keys_per_user": "30"}
    with apikm_server(server_database, keycloak.base_url, **settings) as first, \
            apikm_server(first.database_url, keycloak.base_url, **settings) as second:
        yield first, second


async def test_creates_split_across_two_replicas_respect_the_limit(
        two_replicas: tuple[ApikmServer, ApikmServer], alice_token: str) -> None:
    first, second = two_replicas
    results = await fire([first.url, second.url], alice_token, 160)

    statuses = Counter(r.status_code if isinstance(r, httpx.Response) else repr(r)
                       for r in results)
    assert statuses == {201: 30, 409: 130}
    ledger = await database_books(first.database_url)
    assert set(ledger.keys) == {r.json()["id"] for r in results
                                if isinstance(r, httpx.Response) and r.status_code == 201}
    ledger.assert_one_create_per_key()


async def test_a_hard_kill_mid_burst_leaves_no_key_without_its_audit_row(
        server_database: str | None, keycloak: StackInfo, alice_token: str) -> None:
    with apikm_server(server_database, keycloak.base_url, peppers=PEPPERS,
                      max_keys_per_user="1000") as server:
        answered: list[httpx.Response] = []

        def kill_at_100(response: httpx.Response) -> None:
            answered.append(response)
            if len(answered) == 100:
                server.kill()

        results = await fire([server.url], alice_token, 300, kill_at_100)
        database = server.database_url

    lost = [r for r in results if isinstance(r, BaseException)]
    assert lost, "the kill came after the last answer: nothing was interrupted"
    created = {r.json()["id"] for r in results
               if isinstance(r, httpx.Response) and r.status_code == 201}
    ledger = await database_books(database)
    assert created <= set(ledger.keys)  # every 201 was committed
    assert len(ledger.keys) < 300
    ledger.assert_one_create_per_key()
    if database.startswith("sqlite"):
        engine = create_engine(database)
        try:
            async with engine.connect() as conn:
                assert (await conn.exec_driver_sql("PRAGMA integrity_check")).scalar() == "ok"
        finally:
            await engine.dispose()


@pytest.fixture
def postgres_database(postgres_url: str) -> str:
    return fresh_database(postgres_url)  # not in an async test: it runs its own loop


async def test_usage_counted_on_two_replicas_adds_up_exactly(
        keycloak: StackInfo, postgres_database: str, alice_token: str) -> None:
    database = postgres_database
    settings = {"peppers": PEPPERS}
    with apikm_server(database, keycloak.base_url, **settings) as first, \
            apikm_server(database, keycloak.base_url, **settings) as second:
        uses = 600
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            created = await client.post(f"{first.url}/v1/keys",
                                        json={"name": "used", "roles": ["analyst"]},
                                        headers={"Authorization": f"Bearer {alice_token}"})
            assert created.status_code == 201, created.text
            key, key_id = created.json()["key"], created.json()["id"]

            async def verify(i: int) -> str:
                url = (first.url, second.url)[i % 2]
                response = await client.post(f"{url}/v1/verify",
                                             json={"key": key, "client_ip": "10.9.9.9"})
                return str(response.json()["code"])

            codes = await asyncio.gather(*(verify(i) for i in range(uses)))
        assert Counter(codes) == {"VALID": uses}

        engine = create_engine(database)
        try:
            async def counts() -> tuple[int, int]:
                async with engine.connect() as conn:
                    use_count = await conn.scalar(
                        sa.select(api_keys.c.use_count).where(api_keys.c.id == key_id))
                    daily = await conn.scalar(sa.select(sa.func.sum(key_usage_daily.c.count))
                                              .where(key_usage_daily.c.key_id == key_id))
                return int(use_count or 0), int(daily or 0)

            for _ in range(60):  # both replicas flush every 0.5 s
                if await counts() == (uses, uses):
                    break
                await asyncio.sleep(0.25)
            await asyncio.sleep(1.5)  # three more flushes of both replicas: nothing more
            assert await counts() == (uses, uses)
        finally:
            await engine.dispose()
