"""Give apikm's service account the realm-management roles the Keycloak sync needs.

``demo-realm.json`` already lists them, but Keycloak's import skips a realm that exists, so a
dev Keycloak started before the file changed would miss them. This applies the same roles
through the admin API, idempotently; ``apikm keycloak up`` and the tests call it.
"""

from __future__ import annotations

from typing import Any

import httpx

from apikm.identity.admin_client import REQUIRED_ROLES


class SyncRolesError(Exception):
    """The roles could not be checked or assigned; the message says why."""


def ensure_sync_roles(base_url: str, realm: str, client_id: str, admin_token: str) -> list[str]:
    """Assign any missing role of ``REQUIRED_ROLES``; returns the roles it added."""
    with httpx.Client(base_url=f"{base_url}/admin/realms/{realm}", timeout=30,
                      trust_env=False,
                      headers={"Authorization": f"Bearer {admin_token}"}) as admin:
        account = _get(admin, f"/clients/{_client_uuid(admin, client_id)}/service-account-user")
        management = _client_uuid(admin, "realm-management")
        mappings = f"/users/{account['id']}/role-mappings/clients/{management}"
        held = {role["name"] for role in _get(admin, f"{mappings}/composite")}
        missing = [name for name in REQUIRED_ROLES if name not in held]
        if missing:
            roles = [_get(admin, f"/clients/{management}/roles/{name}") for name in missing]
            response = admin.post(mappings, json=roles)
            if response.is_error:
                raise SyncRolesError(f"assigning {missing}: HTTP {response.status_code}")
        return missing


def _client_uuid(admin: httpx.Client, client_id: str) -> str:
    found = _get(admin, "/clients", params={"clientId": client_id, "search": "false"})
    if not found:
        raise SyncRolesError(f"no client {client_id!r} in the realm")
    return str(found[0]["id"])


def _get(admin: httpx.Client, path: str, params: dict[str, str] | None = None) -> Any:
    response = admin.get(path, params=params)
    if response.is_error:
        raise SyncRolesError(f"GET {path}: HTTP {response.status_code}")
    return response.json()
