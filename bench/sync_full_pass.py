"""Keycloak sync: full-pass time for 1,000 key owners, and the delay of the event path.

1. Makes sure the local Keycloak has 1,000 users ``bench-sync-0000`` ... (realm role
   ``analyst``, client role ``geoserver:read``, group ``/bench-sync``); they are created once
   through the admin API and reused by later runs.
2. Gives each of them a key in a fresh apikm database (through ``KeyService``, as the API
   would, without 1,000 password grants).
3. Times the sync's full pass over those 1,000 owners: a first pass (every owner new to
   apikm) and a steady-state pass (nothing changed).
4. Starts the real ``apikm serve`` on that database, creates one key through the API with a
   real token, then changes the user in Keycloak (disable/enable, remove/add a role) and
   measures how long until ``/v1/verify`` answers differently.

    .venv/bin/python -m bench.sync_full_pass [--users 1000] [--concurrency 8] [--samples 12]
                                             [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from apikm.config import load_settings
from apikm.db import create_engine
from apikm.devstack import keycloak
from apikm.devstack.sync_roles import ensure_sync_roles
from apikm.identity.admin_client import AdminCredentials, KeycloakAdmin
from apikm.identity.principal import Principal
from apikm.identity.sync import SyncConfig, SyncWorker
from apikm.keys.service import NewKey
from apikm.migrations import upgrade
from apikm.web.context import build_context
from tests.support.apikm_server import apikm_server
from tests.support.keycloak_tokens import admin_token, password_grant
from tests.support.postgres import postgres_server

PREFIX = "bench-sync-"
GROUP = "bench-sync"
PASSWORD = "bench-sync-password"  # noqa: S105 - throwaway users on the loopback dev Keycloak
SECRET = "apikm-demo-secret"  # noqa: S105 - the demo realm's dev-only client secret
ROLES = frozenset({"analyst", "geoserver:read"})


class Admin:
    """Master-realm admin calls with a token refreshed before its 60 s lifetime ends."""

    def __init__(self, stack: keycloak.StackInfo) -> None:
        self.stack = stack
        self.http = httpx.AsyncClient(base_url=f"{stack.base_url}/admin/realms/{stack.realm}",
                                      timeout=60, trust_env=False)
        self._token, self._at = "", 0.0

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if time.monotonic() - self._at > 30:
            self._token = await asyncio.to_thread(admin_token, self.stack.base_url)
            self._at = time.monotonic()
        response = await self.http.request(method, path, **kwargs,
                                           headers={"Authorization": f"Bearer {self._token}"})
        response.raise_for_status()
        return response


async def ensure_users(admin: Admin, count: int) -> dict[str, str]:
    """username -> id of the bench users, creating the missing ones."""
    groups = (await admin.call("GET", "/groups", params={"search": GROUP, "exact": "true"})).json()
    if not any(g["name"] == GROUP for g in groups):
        await admin.call("POST", "/groups", json={"name": GROUP})
    existing = await _bench_users(admin)
    analyst = (await admin.call("GET", "/roles/analyst")).json()
    geoserver = (await admin.call("GET", "/clients", params={"clientId": "geoserver"})).json()
    read = (await admin.call("GET", f"/clients/{geoserver[0]['id']}/roles/read")).json()
    wanted = [f"{PREFIX}{i:04d}" for i in range(count) if f"{PREFIX}{i:04d}" not in existing]
    limit = asyncio.Semaphore(8)

    async def create(name: str) -> None:
        async with limit:
            created = await admin.call("POST", "/users", json={
                "username": name, "enabled": True, "email": f"{name}@example.org",
                "emailVerified": True, "firstName": "Bench", "lastName": "Sync",
                "groups": [f"/{GROUP}"],
                "credentials": [{"type": "password", "value": PASSWORD, "temporary": False}]})
            user_id = created.headers["location"].rsplit("/", 1)[1]
            await admin.call("POST", f"/users/{user_id}/role-mappings/realm", json=[analyst])
            await admin.call("POST", f"/users/{user_id}/role-mappings/clients/"
                             f"{geoserver[0]['id']}", json=[read])

    started = time.monotonic()
    await asyncio.gather(*(create(name) for name in wanted))
    print(f"Keycloak bench users: {count} ({len(wanted)} created now in "
          f"{time.monotonic() - started:.1f}s)")
    users = await _bench_users(admin)
    return {name: users[name] for name in sorted(users)[:count]}


async def _bench_users(admin: Admin) -> dict[str, str]:
    found: dict[str, str] = {}
    while True:
        page = (await admin.call("GET", "/users", params={
            "search": PREFIX, "briefRepresentation": "true", "first": len(found),
            "max": 500})).json()
        found.update({u["username"]: u["id"] for u in page})
        if len(page) < 500:
            return {k: v for k, v in found.items() if k.startswith(PREFIX)}


async def create_keys(database_url: str, peppers: str, data_dir: Path,
                      users: dict[str, str]) -> None:
    settings = load_settings(database_url=database_url, peppers=peppers, data_dir=data_dir,
                             sync_enabled=False)
    ctx = build_context(settings)
    try:
        for name, user_id in users.items():
            owner = Principal(user_id, name, None, ROLES, ())
            await ctx.keys.create(owner, NewKey(name="bench", roles=sorted(ROLES)))
    finally:
        await ctx.close()


async def time_full_passes(stack: keycloak.StackInfo, database_url: str,
                           concurrency: int) -> None:
    engine = create_engine(database_url)
    # The admin client as `apikm serve` builds it: its own pool, sized to the concurrency.
    admin = KeycloakAdmin(AdminCredentials(stack.base_url, stack.realm, "apikm", SECRET),
                          max_connections=concurrency)
    worker = SyncWorker(engine, admin, SyncConfig(concurrency=concurrency))
    await admin.check_permissions()
    for label in ("first pass (owners new to apikm)", "steady-state pass"):
        report = await worker.full_pass()
        print(f"full pass, {label}: {report.owners} owners in {report.seconds:.2f}s = "
              f"{report.owners / report.seconds:.0f} users/s (concurrency {concurrency}, "
              f"{report.changed} changed, {report.failed} failed)")
    await admin.aclose()
    await engine.dispose()


def measure_delays(stack: keycloak.StackInfo, database_url: str, peppers: str,
                   users: dict[str, str], samples: int) -> None:
    name = sorted(users)[-1]
    user_id = users[name]
    with apikm_server(database_url, stack.base_url, oidc_client_secret=SECRET, peppers=peppers,
                      rate_limit="1000000/minute", log_level="WARNING",
                      access_log="false") as server, \
            httpx.Client(timeout=30, trust_env=False) as http:
        while http.get(f"{server.url}/readyz").json()["sync"]["last_full_pass_at"] is None:
            time.sleep(0.2)  # the new leader's first pass over the 1,000 owners
        token = password_grant(stack.issuer, name, PASSWORD)["access_token"]
        key = http.post(f"{server.url}/v1/keys", json={"name": "delay", "roles": ["analyst"]},
                        headers={"Authorization": f"Bearer {token}"}).json()["key"]

        def answer() -> str:
            body = http.post(f"{server.url}/v1/verify", json={"key": key}).json()
            return f"{body['code']}:{','.join(body.get('roles', []))}"

        def admin_call(method: str, path: str, **kwargs: Any) -> None:
            http.request(method, f"{stack.base_url}/admin/realms/{stack.realm}{path}", **kwargs,
                         headers={"Authorization": f"Bearer {admin_token(stack.base_url)}"}
                         ).raise_for_status()

        analyst = http.get(f"{stack.base_url}/admin/realms/{stack.realm}/roles/analyst",
                           headers={"Authorization": f"Bearer {admin_token(stack.base_url)}"}
                           ).json()
        changes: list[tuple[str, Callable[[], None]]] = [
            ("disable", lambda: admin_call("PUT", f"/users/{user_id}", json={"enabled": False})),
            ("enable", lambda: admin_call("PUT", f"/users/{user_id}", json={"enabled": True})),
            ("remove role", lambda: admin_call("DELETE", f"/users/{user_id}/role-mappings/realm",
                                               json=[analyst])),
            ("add role", lambda: admin_call("POST", f"/users/{user_id}/role-mappings/realm",
                                            json=[analyst])),
        ]
        delays: list[float] = []
        for i in range(samples):
            label, change = changes[i % len(changes)]
            before = answer()
            # Changes arrive at any moment, not just after a poll: no phase lock with it.
            time.sleep(random.uniform(0, 1.5))
            change()
            changed_at = time.monotonic()
            while answer() == before:
                time.sleep(0.02)
            delays.append(time.monotonic() - changed_at)
            print(f"  {label:<12} {before:<22} -> {answer():<22} {delays[-1]:.2f}s")
    print(f"delay from a change in Keycloak to the key's answer ({samples} changes): "
          f"min {min(delays):.2f}s, median {statistics.median(delays):.2f}s, "
          f"max {max(delays):.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--postgres", action="store_true",
                        help="a throwaway PostgreSQL cluster instead of SQLite")
    options = parser.parse_args()
    stack = keycloak.up()
    ensure_sync_roles(stack.base_url, stack.realm, "apikm", admin_token(stack.base_url))

    async def prepare() -> dict[str, str]:
        admin = Admin(stack)
        try:
            return await ensure_users(admin, options.users)
        finally:
            await admin.http.aclose()

    users = asyncio.run(prepare())
    data_dir = Path(tempfile.mkdtemp(prefix="apikm-bench-sync-"))
    with contextlib.ExitStack() as stack_of_servers:
        if options.postgres:
            database_url = stack_of_servers.enter_context(postgres_server())
        else:
            database_url = f"sqlite+aiosqlite:///{data_dir / 'apikm.db'}"
        run(stack, options, users, database_url, data_dir)


def run(stack: keycloak.StackInfo, options: argparse.Namespace, users: dict[str, str],
        database_url: str, data_dir: Path) -> None:
    peppers = f"b1:{secrets.token_urlsafe(24)}"
    upgrade(database_url)
    started = time.monotonic()
    asyncio.run(create_keys(database_url, peppers, data_dir, users))
    kind = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    print(f"apikm keys: {len(users)} created in {time.monotonic() - started:.1f}s ({kind})")
    asyncio.run(time_full_passes(stack, database_url, options.concurrency))
    measure_delays(stack, database_url, peppers, users, options.samples)


if __name__ == "__main__":
    main()
