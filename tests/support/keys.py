"""Creating keys through the real key API, as a signed-in user would."""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from apikm.db import create_engine
from apikm.keys.tables import api_keys


def create_key(client: httpx.Client, roles: list[str], **fields: Any) -> tuple[str, dict[str, Any]]:
    """(the secret key, the key's JSON) for a fresh key of the client's user."""
    body = {"name": f"test {secrets.token_hex(3)}", "roles": roles, **fields}
    response = client.post("/v1/keys", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return str(created["key"]), created


def user_client(base_url: str, access_token: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=30,
                        headers={"Authorization": f"Bearer {access_token}"})


def new_key(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    """The created key's JSON (secret under "key"); an analyst key unless fields say else."""
    body = {"name": f"test {secrets.token_hex(3)}", "roles": ["analyst"], **fields}
    response = client.post("/v1/keys", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def verify_key(client: httpx.Client, key: object, **fields: Any) -> dict[str, Any]:
    """apikm's answer to POST /v1/verify (always 200 for a well-formed body)."""
    response = client.post("/v1/verify", json={"key": key, **fields})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def age_key(server: Any, key_id: str, days: float = 2) -> None:
    """Make a key of ``server`` (an ApikmServer) look created ``days`` ago, in its database."""
    async def run() -> None:
        engine = create_engine(server.database_url)
        async with engine.begin() as conn:
            await conn.execute(sa.update(api_keys).where(api_keys.c.id == key_id).values(
                created_at=datetime.now(UTC) - timedelta(days=days)))
        await engine.dispose()

    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, run()).result()
