"""Two replicas on one PostgreSQL (and a variant sharing a Redis): a change made through one
replica, the sync or the CLI reaches the other's answers within a second, failure limits are
shared, and a replica killed mid-load leaves the other answering."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from apikm.devstack import keycloak as devstack
from tests.support.apikm_server import ApikmServer
from tests.support.keycloak_tokens import password_grant
from tests.support.keycloak_users import set_enabled, throwaway_user
from tests.support.keys import create_key, user_client, verify_key
from tests.support.redis import redis_server
from tests.support.replicas import replica_pair

pytestmark = pytest.mark.integration

Pair = tuple[ApikmServer, ApikmServer]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="module", params=["postgresql", "postgresql+redis"])
def pair(request: pytest.FixtureRequest, postgres_url: str,
         keycloak: devstack.StackInfo) -> Iterator[Pair]:
    redis = request.getfixturevalue("redis_url") if "redis" in request.param else None
    with replica_pair(postgres_url, keycloak.base_url, redis, rate_limit="5/minute",
                      keycloak_sync_freq="300") as servers:
        yield servers


def until(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``check`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "condition not reached in time"
        time.sleep(0.01)
    return time.monotonic() - started


def test_revoke_on_one_replica_stops_the_key_on_the_other(
        pair: Pair, token: Callable[[str], str]) -> None:
    a, b = pair
    with user_client(a.url, token("alice")) as alice, httpx.Client(base_url=b.url) as on_b:
        key, created = create_key(alice, ["analyst"])
        assert verify_key(on_b, key)["code"] == "VALID"  # now cached on B
        assert alice.delete(f"/v1/keys/{created['id']}").status_code == 200
        seconds = until(lambda: verify_key(on_b, key)["code"] == "REVOKED", timeout=1.0)
    assert seconds < 1.0


def test_rotation_on_one_replica_reaches_the_other(
        pair: Pair, token: Callable[[str], str]) -> None:
    a, b = pair
    with user_client(a.url, token("alice")) as alice, httpx.Client(base_url=b.url) as on_b:
        old, created = create_key(alice, ["analyst"])
        assert verify_key(on_b, old)["code"] == "VALID"
        rotated = alice.post(f"/v1/keys/{created['id']}/rotate", json={"overlap_seconds": 0})
        assert rotated.status_code == 200, rotated.text
        # Rotated without overlap, the old secret is retired at once: REVOKED ("rotated").
        until(lambda: verify_key(on_b, old) == {"valid": False, "code": "REVOKED",
                                                "message": "API key has been revoked",
                                                "reason": "rotated"}, timeout=1.0)
        assert verify_key(on_b, rotated.json()["key"])["code"] == "VALID"


def test_cli_revocation_reaches_both_replicas(pair: Pair, token: Callable[[str], str]) -> None:
    a = pair[0]
    with user_client(a.url, token("alice")) as alice:
        key, created = create_key(alice, ["analyst"])
        for server in pair:
            with httpx.Client(base_url=server.url) as client:
                assert verify_key(client, key)["code"] == "VALID"
        subprocess.run([sys.executable, "-m", "apikm.cli", "keys", "revoke", created["id"]],
                       env=a.env, check=True, capture_output=True)
        for server in pair:
            with httpx.Client(base_url=server.url) as client:
                until(lambda c=client: verify_key(c, key)["code"] == "REVOKED", timeout=1.0)


def test_owner_disabled_in_keycloak_is_refused_by_both(
        pair: Pair, keycloak: devstack.StackInfo) -> None:
    with throwaway_user(keycloak.base_url) as user:
        grant = password_grant(keycloak.issuer, user.username, user.password)
        with user_client(pair[0].url, grant["access_token"]) as owner:
            key, _ = create_key(owner, ["analyst"])
        clients = [httpx.Client(base_url=server.url) for server in pair]
        try:
            assert all(verify_key(c, key)["code"] == "VALID" for c in clients)
            set_enabled(keycloak.base_url, user.id, False)
            # The sync (on whichever replica leads) sees Keycloak's event within a couple
            # of seconds; then both replicas must refuse.
            until(lambda: all(verify_key(c, key)["code"] == "USER_DISABLED" for c in clients),
                  timeout=10.0)
        finally:
            for client in clients:
                client.close()


def test_failure_limit_is_shared(pair: Pair) -> None:
    a, b = pair
    address = f"10.77.{os.getpid() % 250}.{int(time.time()) % 250}"
    wrong = "apikm_" + "A" * 42  # shaped like a key, so it counts as a guess
    answers = []
    with httpx.Client(base_url=a.url) as on_a, httpx.Client(base_url=b.url) as on_b:
        for client in (on_a, on_b, on_a, on_b, on_a):  # 5 failures, spread over both
            answers.append(verify_key(client, wrong, client_ip=address)["code"])
        assert answers == ["MALFORMED"] * 5
        # The allowance (5/minute) is used up across the pair: both refuse now.
        for client in (on_b, on_a):
            until(lambda c=client: verify_key(c, wrong, client_ip=address)["code"]
                  == "RATE_LIMITED", timeout=1.0)


def test_a_replica_killed_mid_load_leaves_the_other_answering(
        postgres_url: str, keycloak: devstack.StackInfo, token: Callable[[str], str]) -> None:
    with replica_pair(postgres_url, keycloak.base_url) as (a, b):
        with user_client(a.url, token("alice")) as alice:
            key, created = create_key(alice, ["analyst"])
        codes: dict[str, int] = {}
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=b.url, timeout=5) as on_b:
                while not stop.is_set():
                    answer = verify_key(on_b, key)["code"]
                    codes[answer] = codes.get(answer, 0) + 1

        worker = threading.Thread(target=load)
        worker.start()
        try:
            time.sleep(0.5)
            a.kill()
            time.sleep(1.5)
        finally:
            stop.set()
            worker.join()
        assert set(codes) == {"VALID"}, codes
        # B flushes its own counts: nothing it answered is lost.
        with user_client(b.url, token("alice")) as on_b:
            until(lambda: on_b.get(f"/v1/keys/{created['id']}").json()["use_count"]
                  >= codes["VALID"], timeout=5.0)
