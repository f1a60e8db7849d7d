"""Who is calling: a Keycloak user as their validated access token describes them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Principal:
    user_id: str
    username: str
    email: str | None
    roles: frozenset[str]  # "role" (realm) and "client_id:role" (client), composites resolved
    groups: tuple[str, ...]
    client_ip: str | None = None
    # When Keycloak vouched for these facts (the token's iat), and whether the token had a
    # groups claim at all: the owners table must not take older or absent facts as news.
    issued_at: datetime | None = None
    groups_in_token: bool = True

    def has_role(self, role: str) -> bool:
        return role in self.roles


def roles_from_claims(claims: Mapping[str, Any]) -> frozenset[str]:
    """Keycloak puts effective realm roles in realm_access and client roles in resource_access."""
    roles: set[str] = set()
    realm_access = claims.get("realm_access")
    if isinstance(realm_access, dict):
        roles.update(str(r) for r in realm_access.get("roles", []) if isinstance(r, str))
    resource_access = claims.get("resource_access")
    if isinstance(resource_access, dict):
        for client, access in resource_access.items():
            if isinstance(access, dict):
                roles.update(f"{client}:{r}" for r in access.get("roles", []) if isinstance(r, str))
    return frozenset(roles)


def principal_from_claims(claims: Mapping[str, Any], client_ip: str | None = None) -> Principal:
    groups = claims.get("groups")
    return Principal(
        user_id=str(claims["sub"]),
        username=str(claims.get("preferred_username") or claims["sub"]),
        email=str(claims["email"]) if claims.get("email") else None,
        roles=roles_from_claims(claims),
        groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
        client_ip=client_ip,
        issued_at=_timestamp(claims.get("iat")),
        groups_in_token=isinstance(groups, list),
    )


def _timestamp(value: object) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None
