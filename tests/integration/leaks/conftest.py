"""apikm servers that take GitHub-signed leak reports: on SQLite one server; on PostgreSQL
two replicas of one database, reports sent to the first and keys checked on the second."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apikm.devstack import keycloak as devstack
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.github_signing import SigningKey
from tests.support.replicas import replica_pair

# Checking revoked keys counts as failures of this address: keep the limit out of the way.
SETTINGS = {"rate_limit": "1000/minute", "leak_report_max_bytes": str(256 * 1024)}


@pytest.fixture(scope="session")
def github_key() -> SigningKey:
    return SigningKey()


@pytest.fixture(scope="session")
def other_github_key() -> SigningKey:
    """Published too (GitHub lists several keys); reports must name the key that signed."""
    return SigningKey()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def leak_servers(request: pytest.FixtureRequest, keycloak: devstack.StackInfo,
                 github_key: SigningKey, other_github_key: SigningKey,
                 ) -> Iterator[tuple[ApikmServer, ApikmServer]]:
    settings = {**SETTINGS, "leak_report_keys": github_key.github_document(other_github_key)}
    if request.param == "sqlite":
        with apikm_server(None, keycloak.base_url, **settings) as server:
            yield server, server
        return
    postgres_url = request.getfixturevalue("postgres_url")
    with replica_pair(postgres_url, keycloak.base_url, **settings) as pair:
        yield pair
