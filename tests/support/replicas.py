"""Two ``apikm serve`` replicas on one PostgreSQL database (and optionally one Redis), as an
operator runs them behind a load balancer: same peppers, separate processes and caches."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.postgres import fresh_database

DEMO_SYNC_SECRET = "apikm-demo-secret"  # the demo realm's dev-only client secret


@contextmanager
def replica_pair(postgres_url: str, keycloak_url: str, redis_url: str | None = None,
                 **settings: str) -> Iterator[tuple[ApikmServer, ApikmServer]]:
    """Replica A starts first (it migrates the fresh database), then B."""
    database = fresh_database(postgres_url)
    shared = {"peppers": f"t1:{secrets.token_urlsafe(24)}",
              "oidc_client_secret": DEMO_SYNC_SECRET, **settings}
    if redis_url is not None:
        shared["rate_limit_storage"] = redis_url
    with ExitStack() as stack:
        first = stack.enter_context(apikm_server(database, keycloak_url, **shared))
        second = stack.enter_context(apikm_server(database, keycloak_url, **shared))
        yield first, second
