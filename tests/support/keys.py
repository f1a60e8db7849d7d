"""Creating keys through the real key API, as a signed-in user would."""

from __future__ import annotations

import secrets
from typing import Any

import httpx


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
