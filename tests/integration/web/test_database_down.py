"""PostgreSQL stops under a running ``apikm serve``: every endpoint that needs it answers a
JSON 503 with ``Retry-After`` (never a 500, never a trace), and all is well once it is back."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from apikm.devstack.keycloak import StackInfo
from apikm.keys.format import generate_key
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.keys import create_key, user_client
from tests.support.postgres import PostgresCluster, postgres_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with postgres_cluster() as running:
        yield running


@pytest.fixture(scope="module")
def server(cluster: PostgresCluster, keycloak: StackInfo) -> Iterator[ApikmServer]:
    with apikm_server(cluster.url, keycloak.base_url) as running:
        yield running


def _unavailable(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert int(response.headers["retry-after"]) > 0
    body: dict[str, object] = response.json()
    assert body["error"] == "unavailable"
    return body


def test_database_outage_answers_503(cluster: PostgresCluster, server: ApikmServer,
                                     token: Callable[[str], str]) -> None:
    alice = user_client(server.url, token("alice"))
    key, created = create_key(alice, ["analyst"])
    unknown = generate_key("apikm").full  # never cached: every use asks the database
    exchange = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": unknown,
                "subject_token_type": "urn:ietf:params:oauth:token-type:api_key"}
    cluster.stop()
    try:
        _unavailable(httpx.post(f"{server.url}/oauth/token", data=exchange))
        _unavailable(httpx.post(f"{server.url}/oauth/introspect", data={"token": unknown}))
        _unavailable(alice.get("/v1/keys"))
        _unavailable(alice.get(f"/v1/keys/{created['id']}"))
        _unavailable(alice.post("/v1/keys", json={"name": "x", "roles": ["analyst"]}))
        _unavailable(alice.delete(f"/v1/keys/{created['id']}"))
        assert "Traceback" not in server.log_text()
    finally:
        cluster.start()
    assert alice.get("/v1/keys").status_code == 200
    introspected = httpx.post(f"{server.url}/oauth/introspect", data={"token": key})
    assert introspected.json()["active"] is True
