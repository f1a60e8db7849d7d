"""Two ``apikm serve`` replicas on one PostgreSQL database (and optionally one Redis), as an
operator runs them behind a load balancer: same peppers, separate processes and caches."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import asyncpg  # type: ignore[import-untyped]

from tests.support.apikm_server import ApikmServer, apikm_server

DEMO_SYNC_SECRET = "apikm-demo-secret"  # the demo realm's dev-only client secret


def fresh_database(postgres_url: str) -> str:
    """A new empty database on the server of ``postgres_url``; returns its URL."""
    name = f"replicas_{secrets.token_hex(4)}"

    async def create() -> None:
        conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://",
                                                          "postgresql://"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return f"{postgres_url.rsplit('/', 1)[0]}/{name}"


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
