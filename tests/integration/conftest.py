"""Integration fixtures: the real Keycloak, a real PostgreSQL, and ``apikm serve`` on each DB.

Every test that takes ``apikm`` runs twice: once on SQLite, once on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from apikm.devstack import keycloak as devstack
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.keycloak_tokens import access_token
from tests.support.postgres import postgres_server


@pytest.fixture(scope="session")
def keycloak() -> devstack.StackInfo:
    return devstack.up()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def apikm(request: pytest.FixtureRequest, keycloak: devstack.StackInfo) -> Iterator[ApikmServer]:
    database_url = request.getfixturevalue("postgres_url") if request.param == "postgresql" \
        else None
    with apikm_server(database_url, keycloak.base_url, rate_limit="10/minute") as server:
        yield server


@pytest.fixture(scope="session")
def token(keycloak: devstack.StackInfo) -> Callable[[str], str]:
    return lambda username: access_token(keycloak.issuer, username)


@pytest.fixture
def as_user(apikm: ApikmServer, token: Callable[[str], str]) -> Iterator[
        Callable[[str], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(username: str) -> httpx.Client:
        client = httpx.Client(base_url=apikm.url, timeout=30,
                              headers={"Authorization": f"Bearer {token(username)}"})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def anonymous(apikm: ApikmServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=apikm.url, timeout=30) as client:
        yield client
