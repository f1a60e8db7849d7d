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
