"""The roles a user may put on a key, grouped by application, with Keycloak's descriptions.

The roles themselves always come from the user's current access token. Descriptions are a
nicety read from Keycloak's admin API: first with the user's own token (enough for realm
administrators), else with apikm's service account (``view-users`` reads the descriptions
of a user's realm roles; client role descriptions need ``view-clients``). Whatever cannot be
read is shown by name only; a Keycloak hiccup never blocks key creation.

An application is shown by its display name (Keycloak's client "Name", e.g. "GeoServer"), not
by the client's description: that one is written for Keycloak administrators ("Resource
server; only holds client roles") and means nothing to a key owner. Role descriptions are
written for people granting the role, so they are shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from apikm.config import Settings
from apikm.identity.principal import Principal
from apikm.web.ui.oidc import OidcClient

# Keycloak's built-in roles mean nothing to a resource server; offering them only confuses.
BUILTIN_REALM_ROLES = frozenset({"offline_access", "uma_authorization"})
BUILTIN_CLIENTS = frozenset({"account", "realm-management", "broker"})
CACHE_SECONDS = 300.0


@dataclass(frozen=True)
class RoleOption:
    value: str  # as stored on the key: "role" or "client_id:role"
    name: str
    description: str | None = None


@dataclass(frozen=True)
class RoleGroup:
    application: str | None  # the client id; None: realm roles
    label: str | None  # the client's display name, when it has one besides its id
    roles: tuple[RoleOption, ...]


@dataclass
class _Descriptions:
    realm: dict[str, str] = field(default_factory=dict)
    clients: dict[str, str] = field(default_factory=dict)  # client id -> its display name
    client_roles: dict[str, str] = field(default_factory=dict)  # "client:role" -> description


def grantable_roles(roles: frozenset[str], realm: str) -> list[str]:
    """The user's roles minus Keycloak's built-ins, sorted: what the form offers."""
    result = []
    for role in roles:
        client, sep, _name = role.partition(":")
        if sep and client in BUILTIN_CLIENTS:
            continue
        if not sep and (role in BUILTIN_REALM_ROLES or role == f"default-roles-{realm}"):
            continue
        result.append(role)
    return sorted(result)


def _readable(description: object) -> str | None:
    # "${role_offline-access}" is a message key for Keycloak's own UI, not a description.
    if isinstance(description, str) and description and not description.startswith("${"):
        return description
    return None


class RoleCatalog:
    def __init__(self, settings: Settings, oidc: OidcClient) -> None:
        self._admin = f"{settings.keycloak_url}/admin/realms/{quote(settings.keycloak_realm)}"
        self._realm = settings.keycloak_realm
        self._oidc = oidc
        self._cache: dict[str, tuple[float, _Descriptions]] = {}

    async def groups(self, http: httpx.AsyncClient, principal: Principal,
                     user_token: str) -> list[RoleGroup]:
        roles = grantable_roles(principal.roles, self._realm)
        found = await self._descriptions(http, principal, roles, user_token)
        realm = tuple(RoleOption(r, r, found.realm.get(r)) for r in roles if ":" not in r)
        by_client: dict[str, list[RoleOption]] = {}
        for role in roles:
            client, sep, name = role.partition(":")
            if sep:
                by_client.setdefault(client, []).append(
                    RoleOption(role, name, found.client_roles.get(role)))
        groups = [RoleGroup(None, None, realm)] if realm else []
        groups += [RoleGroup(client, found.clients.get(client), tuple(options))
                   for client, options in sorted(by_client.items())]
        return groups

    async def _descriptions(self, http: httpx.AsyncClient, principal: Principal,
                            roles: list[str], user_token: str) -> _Descriptions:
        cached = self._cache.get(principal.user_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        tokens = [user_token]
        service = await self._oidc.service_token(http)
        if service:
            tokens.append(service)
        found = _Descriptions()
        realm_roles = await self._first(http, tokens, "/users/"
                                        f"{quote(principal.user_id)}/role-mappings/realm/composite")
        for role in realm_roles or []:
            if isinstance(role, dict) and _readable(role.get("description")):
                found.realm[str(role["name"])] = str(role["description"])
        for client in sorted({r.partition(":")[0] for r in roles if ":" in r}):
            await self._client_descriptions(http, tokens, client, found)
        self._cache[principal.user_id] = (time.monotonic() + CACHE_SECONDS, found)
        return found

    async def _client_descriptions(self, http: httpx.AsyncClient, tokens: list[str],
                                   client: str, found: _Descriptions) -> None:
        clients = await self._first(http, tokens, f"/clients?clientId={quote(client)}")
        if not clients or not isinstance(clients[0], dict):
            return
        name = clients[0].get("name")
        if _readable(name) and str(name) != client:
            found.clients[client] = str(name)
        uuid = quote(str(clients[0].get("id", "")))
        for role in await self._first(http, tokens, f"/clients/{uuid}/roles") or []:
            if isinstance(role, dict) and _readable(role.get("description")):
                found.client_roles[f"{client}:{role['name']}"] = str(role["description"])

    async def _first(self, http: httpx.AsyncClient, tokens: list[str],
                     path: str) -> list[object] | None:
        """The first answer any of the tokens is allowed to read, else None."""
        for token in tokens:
            try:
                response = await http.get(self._admin + path, timeout=3.0,
                                          headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError:
                return None
            if response.status_code == 200:
                try:
                    body = response.json()
                except ValueError:
                    return None
                return body if isinstance(body, list) else None
        return None
