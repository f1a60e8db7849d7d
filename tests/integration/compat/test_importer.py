"""``apikm import apikeymanager`` into a running apikm, from an old database on the same
kind of database (SQLite file, or PostgreSQL as TimescaleDB deployments had), then every
imported key through every path, as its holder would use it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from apikm.compat.check_key import WRONG
from apikm.compat.importer import key_id_for
from apikm.config import normalize_database_url
from apikm.devstack import keycloak as devstack
from tests.integration.compat.conftest import KcUser, Users, client_address, wait_until
from tests.support.apikeymanager import (
    OldKey,
    naive_utc,
    old_database,
    old_hash,
    old_key,
)
from tests.support.apikm_server import ApikmServer
from tests.support.keycloak_tokens import password_grant
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.integration
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
API_KEY_TYPE = "urn:apikm:params:oauth:token-type:api-key"


def old_url(server: ApikmServer, postgres_url: str | None) -> str:
    """Where the old service's database lives: same kind of database as the server's."""
    if server.database_url.startswith("postgresql") and postgres_url:
        return fresh_database(postgres_url)
    return f"sqlite:///{Path(tempfile.mkdtemp(prefix='apikeymanager-')) / 'test.db'}"


def run_import(server: ApikmServer, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "apikm.cli", "import", "apikeymanager",
                           "--from", url, *extra], env=server.env, capture_output=True,
                          text=True, timeout=120)


def rows_of(server: ApikmServer, query: sa.Select[Any]) -> list[Any]:
    async def read() -> list[Any]:
        engine = create_async_engine(normalize_database_url(server.database_url))
        async with engine.connect() as conn:
            rows = list((await conn.execute(query)).all())
        await engine.dispose()
        return rows
    return asyncio.run(read())


def stored_hashes(server: ApikmServer, key_id: str) -> tuple[str, str]:
    rows = rows_of(server, sa.text("SELECT secret_hash, pepper_id FROM api_keys WHERE id = :i")
                   .bindparams(i=key_id))  # type: ignore[arg-type]
    return rows[0][0], rows[0][1]


def every_path(server: ApikmServer, key: str) -> dict[str, Any]:
    """The key through every way apikm takes one; what each said."""
    xff = {"X-Forwarded-For": client_address()}
    check = httpx.get(f"{server.url}/auth/check_key", headers={"x-api-key": key, **xff})
    in_path = httpx.get(f"{server.url}/k/{key}/auth/check_key", headers=xff)
    verify = httpx.post(f"{server.url}/v1/verify", json={"key": key}).json()
    auth = httpx.get(f"{server.url}/v1/auth", headers={"X-API-Key": key, **xff})
    token = httpx.post(f"{server.url}/oauth/token", data={
        "grant_type": EXCHANGE, "subject_token": key, "subject_token_type": API_KEY_TYPE})
    introspect = httpx.post(f"{server.url}/oauth/introspect", data={"token": key}).json()
    return {"check": check, "path": in_path, "verify": verify, "auth": auth, "token": token,
            "introspect": introspect}


@pytest.fixture
def holder(users: Users) -> KcUser:
    return users.make(("analyst", "editor"))


def build_old_keys(user: KcUser) -> dict[str, OldKey]:
    login = user.username
    return {
        "plain": old_key(user.id, login, config={"project": "s2"}),
        "forever": old_key(user.id, login, never_expire=True, expiration_date=None),
        "far": old_key(user.id, login, expiration_date=naive_utc(timedelta(days=4000))),
        "referers": old_key(user.id, login, allowed_referers=["maps.example.org"]),
        "clear": old_key(user.id, login, hashed=False),  # the oldest versions' rows
        "expired": old_key(user.id, login, expiration_date=naive_utc(timedelta(days=-1))),
        "revoked": old_key(user.id, login, is_active=False),
    }


def test_import_keeps_every_key_working_through_every_path(
        compat_server: ApikmServer, holder: KcUser, keycloak: devstack.StackInfo,
        request: pytest.FixtureRequest) -> None:
    postgres = request.getfixturevalue("postgres_url") \
        if compat_server.database_url.startswith("postgresql") else None
    keys = build_old_keys(holder)
    url = old_url(compat_server, postgres)
    old_database(url, list(keys.values()))

    dry = run_import(compat_server, url, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would import 5 keys, skipped 2" in dry.stdout
    assert "dry run: nothing was written" in dry.stdout
    assert every_path(compat_server, keys["plain"].key)["check"].status_code == 403

    first = run_import(compat_server, url)
    assert first.returncode == 0, first.stderr
    assert "imported 5 keys, skipped 2" in first.stdout
    assert "revoked in APIKeyManager" in first.stdout
    assert "expired (" in first.stdout
    assert "never expired in APIKeyManager" in first.stdout
    assert "allowed_referers not carried over (maps.example.org)" in first.stdout
    assert "stored in clear" in first.stdout

    # The owner is confirmed by the Keycloak sync, as any owner is (the old rows said only
    # "analyst"; Keycloak says "analyst" and "editor").
    wait_until(lambda: owner_source(compat_server, holder.id) == "sync", 20,
               "owner confirmed by the sync")
    usable = ("plain", "forever", "far", "referers", "clear")
    for name in usable:
        key = keys[name].key
        digest = old_hash(key)
        key_id = key_id_for(digest)
        assert stored_hashes(compat_server, key_id) == (digest, "sha256")
        # The running server learns of the import through the change-event log.
        wait_until(lambda k=key: httpx.post(f"{compat_server.url}/v1/verify", json={
            "key": k}).json()["valid"], 10, f"imported key {name} is valid")
        seen = every_path(compat_server, key)
        assert seen["check"].status_code == 200, (name, seen["check"].text)
        body = seen["check"].json()
        assert set(body) == {"user_id", "user_login", "iam_roles", "config"}
        assert body["user_id"] == holder.id
        assert {"analyst", "editor"} <= set(body["iam_roles"])
        assert seen["path"].status_code == 200
        assert seen["path"].json() == body
        assert seen["verify"]["code"] == "VALID"
        assert seen["verify"]["key_id"] == key_id
        assert seen["auth"].status_code == 200
        assert seen["auth"].headers["x-auth-user-id"] == holder.id
        assert seen["token"].status_code == 200, seen["token"].text
        assert seen["introspect"]["active"] is True
        if name == "plain":
            assert body["config"] == {"project": "s2"}
        # First use moved it to the pepper: the unsalted hash is gone from the database.
        wait_until(lambda i=key_id: stored_hashes(compat_server, i)[1] != "sha256", 10,
                   f"{name} rehashed")
        secret_hash, pepper = stored_hashes(compat_server, key_id)
        assert secret_hash != digest
        assert pepper == compat_server.env["APIKM_PEPPERS"].split(":")[0]
        assert not rows_of(compat_server, sa.text(
            "SELECT id FROM api_keys WHERE secret_hash = :h OR previous_secret_hash = :h")
            .bindparams(h=digest))  # type: ignore[arg-type]
        # ... and the key goes on working, from its new hash.
        wait_until(lambda k=key: httpx.get(f"{compat_server.url}/auth/check_key", headers={
            "x-api-key": k, "X-Forwarded-For": client_address()}).status_code == 200, 10,
            f"{name} still valid after the move")

    for name in ("expired", "revoked"):
        response = httpx.get(f"{compat_server.url}/auth/check_key", headers={
            "x-api-key": keys[name].key, "X-Forwarded-For": client_address()})
        assert (response.status_code, response.json()) == (403, {"detail": WRONG})

    again = run_import(compat_server, url)
    assert again.returncode == 0, again.stderr
    assert "imported 0 keys, skipped 7" in again.stdout
    assert "5  already imported" in again.stdout

    # What the holder and the admin see: all-roles keys, lifetimes within policy, one audit.
    token = str(password_grant(holder.issuer, holder.username, holder.password)["access_token"])
    listed = httpx.get(f"{compat_server.url}/v1/keys", headers={
        "Authorization": f"Bearer {token}"}).json()
    imported = [k for k in listed if k["imported_from"] == "apikeymanager"]
    assert len(imported) == 5
    assert all(k["all_roles"] for k in imported)
    admin = str(password_grant(keycloak.issuer, "admin")["access_token"])
    for key in imported:
        events = httpx.get(f"{compat_server.url}/v1/admin/audit", params={
            "key_id": key["id"]}, headers={"Authorization": f"Bearer {admin}"}).json()
        assert [e["action"] for e in events].count("import") == 1


def owner_source(server: ApikmServer, user_id: str) -> str:
    rows = rows_of(server, sa.text("SELECT source FROM owners WHERE user_id = :u")
                   .bindparams(u=user_id))  # type: ignore[arg-type]
    return str(rows[0][0]) if rows else ""


def test_import_refuses_what_is_not_an_apikeymanager_database(
        compat_server: ApikmServer) -> None:
    missing = run_import(compat_server, "sqlite:////nonexistent/apikeymanager.db")
    assert missing.returncode == 1
    assert "no SQLite file at /nonexistent/apikeymanager.db" in missing.stderr
    empty = Path(tempfile.mkdtemp()) / "empty.db"
    old_database(f"sqlite:///{empty}", [])
    asyncio.run(_drop_table(f"sqlite:///{empty}"))
    wrong = run_import(compat_server, f"sqlite:///{empty}")
    assert wrong.returncode == 1
    assert "has no table 'api_tokens'" in wrong.stderr
    refused = run_import(compat_server, "postgresql://nobody:secret@127.0.0.1:9/none")
    assert refused.returncode == 1
    assert "cannot read postgresql://nobody:***@127.0.0.1:9/none" in refused.stderr
    assert "secret" not in refused.stderr


async def _drop_table(url: str) -> None:
    engine = create_async_engine(normalize_database_url(url))
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP TABLE api_tokens"))
    await engine.dispose()
