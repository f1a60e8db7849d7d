"""Keycloak-like access-token claims for a verified key, so resource servers that read
Keycloak tokens (``realm_access``, ``resource_access``, ``groups``, ...) read these unchanged.

Rights are the key's *effective* roles (grant ∩ what the owner holds now), never the grant,
and the token never outlives the key.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from apikm.verify.record import KeyRecord

DEFAULT_SCOPE = "profile email"


def split_roles(roles: Iterable[str]) -> tuple[list[str], dict[str, list[str]]]:
    """("role", "client:role", ...) -> realm roles, {client: roles}."""
    realm: list[str] = []
    clients: dict[str, list[str]] = {}
    for role in sorted(roles):
        client, sep, name = role.partition(":")
        if sep and client and name:
            clients.setdefault(client, []).append(name)
        else:
            realm.append(role)
    return realm, clients


def token_audiences(record: KeyRecord, configured: Iterable[str]) -> list[str]:
    """Configured audiences plus every client the key holds a role of (as Keycloak does)."""
    _realm, clients = split_roles(record.effective_roles)
    return sorted(set(configured) | set(clients))


def access_token_claims(
    record: KeyRecord,
    *,
    issuer: str,
    audience: list[str],
    authorized_party: str,
    now: int,
    ttl_seconds: int,
    scope: str = DEFAULT_SCOPE,
) -> dict[str, Any]:
    realm_roles, client_roles = split_roles(record.effective_roles)
    expires = min(now + ttl_seconds, int(record.expires_at.timestamp()))
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": record.owner_id,
        "aud": audience[0] if len(audience) == 1 else audience,
        "exp": expires,
        "iat": now,
        "nbf": now,
        "jti": secrets.token_urlsafe(16),
        "typ": "Bearer",
        "azp": authorized_party,
        "scope": scope,
        "realm_access": {"roles": realm_roles},
        "resource_access": {client: {"roles": roles} for client, roles in client_roles.items()},
        "groups": list(record.owner_groups),
        "preferred_username": record.username,
        "key_id": record.id,
    }
    if record.email:
        claims["email"] = record.email
    if record.owner_attributes:  # APIKM_OAUTH2_ATTRIBUTES, as synced from Keycloak
        claims["attributes"] = record.owner_attributes
    return claims
