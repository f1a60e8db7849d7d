"""Rotating the pepper: old keys keep working and move to the new pepper when used, so the
old pepper can then be removed."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from apikm.devstack.keycloak import StackInfo
from tests.support.apikm_server import apikm_server
from tests.support.keycloak_tokens import access_token

pytestmark = pytest.mark.integration
OLD = "old:" + "o" * 32
NEW = "new:" + "n" * 32


def verify(url: str, key: str) -> str:
    body = httpx.post(f"{url}/v1/verify", json={"key": key, "client_ip": "10.7.7.7"}).json()
    return str(body["code"])


def peppers_in_use(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-m", "apikm.cli", "keys", "peppers"], env=env,
                          check=True, capture_output=True, text=True).stdout


def test_keys_move_to_the_new_pepper_when_used(keycloak: StackInfo) -> None:
    with apikm_server(None, keycloak.base_url, peppers=OLD) as first:
        token = access_token(keycloak.issuer, "alice")
        key = httpx.post(f"{first.url}/v1/keys", json={"name": "pepper"},
                         headers={"Authorization": f"Bearer {token}"}).json()["key"]
        database = first.database_url
    # the operator prepends a new pepper and restarts
    with apikm_server(database, keycloak.base_url, peppers=f"{NEW},{OLD}") as second:
        assert "old" in peppers_in_use({**second.env, "APIKM_PEPPERS": f"{NEW},{OLD}"})
        assert verify(second.url, key) == "VALID"
        time.sleep(1.5)  # one usage flush
        counts = peppers_in_use({**second.env, "APIKM_PEPPERS": f"{NEW},{OLD}"})
        assert "old" not in counts and counts.split() == ["new", "1"]
    # the old pepper is removed: the key still works
    with apikm_server(database, keycloak.base_url, peppers=NEW) as third:
        assert verify(third.url, key) == "VALID"
