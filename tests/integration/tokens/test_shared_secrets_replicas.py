"""Two real ``apikm serve`` replicas on one PostgreSQL: one set of signing keys, one sign-in.

Each replica has its own APIKM_DATA_DIR (as pods with an emptyDir would) and the same
APIKM_PEPPERS and APIKM_ENCRYPTION_KEY; no APIKM_SESSION_SECRET (the cookie keys are derived
from the encryption key). Sign-in goes through Keycloak's real login form with httpx.
"""

from __future__ import annotations

import asyncio
import html
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from joserfc import jws, jwt
from joserfc.jwk import KeySet

from apikm.db import create_engine
from apikm.devstack.keycloak import StackInfo
from apikm.encryption import new_key_spec, parse_encryption_keys
from apikm.migrations import upgrade
from apikm.tokens.signing import SigningKeys
from apikm.tokens.tables import signing_keys
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.keycloak_users import sign_in_allowed
from tests.support.keys import create_key, user_client
from tests.support.ports import free_port, wait_http
from tests.support.postgres import fresh_database
from tests.support.ui_login import CSRF, browser_client, sign_in

pytestmark = pytest.mark.integration

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
API_KEY_TYPE = "urn:apikm:params:oauth:token-type:api-key"
DEMO_CLIENT_SECRET = "apikm-demo-secret"


@dataclass(frozen=True)
class Replicas:
    a: ApikmServer
    b: ApikmServer
    database_url: str
    shared: dict[str, str]


@pytest.fixture(scope="module")
def replicas(postgres_url: str, keycloak: StackInfo) -> Iterator[Replicas]:
    database = fresh_database(postgres_url)
    shared = {"peppers": f"p1:{secrets.token_urlsafe(24)}", "encryption_key": new_key_spec(),
              "oidc_client_secret": DEMO_CLIENT_SECRET, "sync_enabled": "false"}
    with apikm_server(database, keycloak.base_url, **shared) as a, \
            apikm_server(database, keycloak.base_url, **shared) as b, \
            sign_in_allowed(keycloak.base_url, a.url, b.url, realm=keycloak.realm):
        yield Replicas(a, b, database, shared)


def jwks(server: ApikmServer) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/.well-known/jwks.json", timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def kids(server: ApikmServer) -> list[str]:
    return [str(key["kid"]) for key in jwks(server)["keys"]]


def exchange(server: ApikmServer, key: str) -> str:
    response = httpx.post(f"{server.url}/oauth/token", timeout=30, data={
        "grant_type": EXCHANGE, "subject_token": key, "subject_token_type": API_KEY_TYPE})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


# --- signing keys ---------------------------------------------------------------------------


def test_both_replicas_publish_the_same_keys(replicas: Replicas) -> None:
    assert jwks(replicas.a) == jwks(replicas.b)
    assert len(kids(replicas.a)) == 1
    # Nothing on disk: the keys live in the database, encrypted.
    assert not (replicas.a.data_dir / "signing-keys").exists()
    assert not (replicas.a.data_dir / "encryption-key").exists()


def test_a_token_exchanged_on_one_replica_verifies_with_the_other_s_jwks(
        replicas: Replicas, token: Callable[[str], str]) -> None:
    with user_client(replicas.a.url, token("alice")) as alice:
        key, created = create_key(alice, ["analyst"])
    access_token = exchange(replicas.a, key)
    claims = jwt.decode(access_token, KeySet.import_key_set(jwks(replicas.b)),
                        algorithms=["ES256"]).claims
    assert claims["key_id"] == created["id"] and claims["iss"] == replicas.a.url


def test_a_rotation_reaches_every_replica_within_a_second(
        replicas: Replicas, token: Callable[[str], str]) -> None:
    before = kids(replicas.a)[0]
    rotated = subprocess.run([sys.executable, "-m", "apikm.cli", "signing-keys", "rotate"],
                             env=replicas.a.env, check=True, capture_output=True, text=True)
    start = time.monotonic()
    found = re.search(r"^new signing key (\S+) ", rotated.stdout, re.M)
    assert found, rotated.stdout
    new_kid = found.group(1)
    seen: dict[str, float] = {}
    while len(seen) < 2 and time.monotonic() - start < 5:
        for name, server in (("a", replicas.a), ("b", replicas.b)):
            if name not in seen and kids(server)[:2] == [new_kid, before]:
                seen[name] = time.monotonic() - start
        time.sleep(0.05)
    assert set(seen) == {"a", "b"} and max(seen.values()) < 1.0, seen
    with user_client(replicas.b.url, token("alice")) as alice:
        key, _ = create_key(alice, ["analyst"])
    signed = exchange(replicas.b, key)
    assert jws.extract_compact(signed.encode()).protected["kid"] == new_kid
    jwt.decode(signed, KeySet.import_key_set(jwks(replicas.a)), algorithms=["ES256"])


def test_replicas_starting_together_create_exactly_one_key(postgres_url: str) -> None:
    database = fresh_database(postgres_url)
    upgrade(database)
    ring = parse_encryption_keys(new_key_spec())

    async def run() -> tuple[set[str], int]:
        engines = [create_engine(database) for _ in range(6)]
        replicas = [SigningKeys(engine, ring, "ES256") for engine in engines]
        try:
            await asyncio.gather(*(keys.start() for keys in replicas))
            async with engines[0].connect() as conn:
                count = await conn.scalar(sa.select(sa.func.count()).select_from(signing_keys))
            return {keys.current().kid for keys in replicas}, int(count or 0)
        finally:
            for engine in engines:
                await engine.dispose()

    current, rows = asyncio.run(run())
    assert rows == 1 and len(current) == 1


# --- start-up checks ------------------------------------------------------------------------


def _serve(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "apikm.cli", "serve", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_postgresql_without_the_encryption_key_refuses_to_start(replicas: Replicas) -> None:
    env = {k: v for k, v in replicas.a.env.items() if k != "APIKM_ENCRYPTION_KEY"}
    env["APIKM_PORT"] = str(free_port())
    process = _serve(env)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2, output
    assert "APIKM_ENCRYPTION_KEY is not set" in output and "every replica" in output


def test_a_replica_with_another_encryption_key_refuses_to_start(replicas: Replicas) -> None:
    env = {**replicas.a.env, "APIKM_ENCRYPTION_KEY": new_key_spec("other"),
           "APIKM_PORT": str(free_port())}
    process = _serve(env, "--no-migrate")
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0, output
    assert "cannot be decrypted with APIKM_ENCRYPTION_KEY" in output


def test_port_option_names_the_issuer_and_a_third_replica_joins(replicas: Replicas) -> None:
    port = free_port()
    env = {k: v for k, v in replicas.a.env.items() if k not in ("APIKM_PORT", "APIKM_HOST")}
    process = _serve(env, "--no-migrate", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", timeout=60, alive=process.poll)
        discovery = httpx.get(f"{url}/.well-known/openid-configuration").json()
        assert discovery["issuer"] == url
        assert discovery["jwks_uri"] == f"{url}/.well-known/jwks.json"
        assert httpx.get(discovery["jwks_uri"]).json() == jwks(replicas.a)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)


# --- web UI sessions ------------------------------------------------------------------------

def test_a_sign_in_started_on_one_replica_continues_on_the_other(
        replicas: Replicas, token: Callable[[str], str]) -> None:
    with user_client(replicas.a.url, token("alice")) as alice:
        _key, created = create_key(alice, ["analyst"])
    with browser_client() as browser:
        landed = sign_in(browser, replicas.a.url, replicas.b.url, "alice", "alice")
        assert landed.status_code == 303 and landed.headers["location"] == "/keys", landed.text
        for server in (replicas.a, replicas.b):  # the session works on both
            page = browser.get(f"{server.url}/keys/{created['id']}")
            assert page.status_code == 200, page.text[:2000]
            assert "alice" in page.text and html.escape(created["name"]) in page.text
        csrf = CSRF.search(browser.get(f"{replicas.b.url}/keys").text)
        assert csrf
        cookies = dict(browser.cookies)  # what a copy of the cookie would replay
        out = browser.post(f"{replicas.a.url}/logout", data={"csrf_token": csrf.group(1)})
        assert out.status_code == 303
    # The Keycloak session is still alive (the end-session redirect was not followed), and B
    # holds a cached access token for the session: only the shared sign-out refuses it.
    with httpx.Client(timeout=30, cookies=cookies) as replay:
        deadline = time.monotonic() + 1.0
        while True:
            page = replay.get(f"{replicas.b.url}/keys/{created['id']}")
            if page.status_code == 303 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert replay.get(f"{replicas.a.url}/keys").status_code == 303
