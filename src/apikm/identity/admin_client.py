"""Keycloak admin REST client for the sync, acting as the ``apikm`` client's service account.

Least privilege: the service account needs exactly these roles of the realm's
``realm-management`` client (``check_permissions`` proves each one at start and names the
missing ones):

- ``view-users``: the user (enabled flag), their effective realm roles and their groups;
- ``view-clients``: their effective roles of a client (Keycloak checks client visibility on
  that endpoint; ``query-clients`` is not enough). It also lets the account read client
  settings; with fine-grained admin permissions (v2) it can be narrowed to a "view"
  permission on just the clients whose roles keys carry;
- ``view-events``: admin events and user events, the sync's fast path.

A user's client roles are read only for the clients named in their keys' grants: those are
the only client roles that can reach a key's answer, and it keeps the calls per user small.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from apikm.identity.service_token import (
    ServiceToken,
    ServiceTokenRefused,
    ServiceTokenUnavailable,
)
from apikm.identity.sync_rules import (
    KeycloakUser,
    MalformedAnswer,
    names_in,
    user_from_answers,
)

REQUIRED_ROLES = ("view-users", "view-clients", "view-events")
CLIENT_MAP_TTL_S = 300.0


class KeycloakError(Exception):
    """Keycloak could not answer as needed; the message is safe to log and show."""


class KeycloakUnavailable(KeycloakError):
    """Network failure, timeout or a 5xx: worth retrying later."""


class KeycloakBadAnswer(KeycloakError):
    """A 200 answer that is not the JSON Keycloak documents: that one read failed; the sync
    counts it and goes on with the other users."""


class KeycloakRefused(KeycloakError):
    """Keycloak refused the service account (bad secret, missing roles): needs an operator."""


class MissingPermissions(KeycloakRefused):
    def __init__(self, realm: str, missing: Sequence[str]) -> None:
        self.missing = tuple(missing)
        super().__init__(
            f"the apikm service account lacks these roles of client 'realm-management' in "
            f"realm '{realm}': {', '.join(self.missing)}. Assign them (Clients -> apikm -> "
            f"Service account roles) so the sync can read users and events."
        )


@dataclass(frozen=True)
class AdminCredentials:
    base_url: str
    realm: str
    client_id: str
    client_secret: str


class KeycloakAdmin:
    def __init__(self, credentials: AdminCredentials, http: httpx.AsyncClient | None = None,
                 timeout: float = 10.0, max_connections: int = 8,
                 attributes: Sequence[str] = ()) -> None:
        self._creds = credentials
        self._attributes = tuple(attributes)  # user attributes to keep (APIKM_OAUTH2_ATTRIBUTES)
        # Its own small pool unless given one: httpcore checks every pooled connection on
        # each request, so a pool no larger than the sync's concurrency is markedly faster.
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            headers={"User-Agent": "apikm-sync"},
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections))
        self._timeout = timeout
        realm = quote(credentials.realm, safe="")
        self._token_url = f"{credentials.base_url}/realms/{realm}/protocol/openid-connect/token"
        self._api = f"{credentials.base_url}/admin/realms/{realm}"
        self._service_token = ServiceToken(self._http, self._token_url,
                                           credentials.client_id, credentials.client_secret,
                                           timeout)
        self._clients: dict[str, str] = {}  # clientId -> internal id
        self._clients_fetched = 0.0
        self._clients_lock = asyncio.Lock()

    @property
    def realm(self) -> str:
        return self._creds.realm

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # --- service-account token -----------------------------------------------------------
    async def _access_token(self) -> str:
        try:
            return await self._service_token.get()
        except ServiceTokenUnavailable as exc:
            raise KeycloakUnavailable(str(exc)) from None
        except ServiceTokenRefused as exc:
            raise KeycloakRefused(f"{exc}; check APIKM_OIDC_CLIENT_ID, APIKM_OIDC_CLIENT_SECRET "
                                  "and that its service account is enabled") from None

    async def _get(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        """GET on the admin API; one retry with a fresh token after a 401."""
        for attempt in (1, 2):
            token = await self._access_token()
            try:
                response = await self._http.get(
                    f"{self._api}{path}", params=params, timeout=self._timeout,
                    headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError as exc:
                raise KeycloakUnavailable(f"Keycloak admin API unreachable: {exc!r}") from None
            if response.status_code == 401 and attempt == 1:
                self._service_token.forget()  # revoked or expired early: get a new one
                continue
            if response.status_code >= 500:
                raise KeycloakUnavailable(f"GET {path.split('?')[0]}: HTTP "
                                          f"{response.status_code}")
            return response
        return response

    async def _get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        response = await self._get(path, params)
        _check(response, f"GET {path}")
        return _json(response, f"GET {path}")

    # --- start-up check ------------------------------------------------------------------
    async def check_permissions(self) -> None:
        """Prove every needed realm-management role with a harmless read; name what fails."""
        probes = {
            "view-users": "/users?max=1&briefRepresentation=true",
            "view-clients": "/clients?max=1&first=0",
            "view-events": "/admin-events?max=1",
        }
        missing = []
        for role, path in probes.items():
            response = await self._get(path)
            if response.status_code == 403:
                missing.append(role)
            elif role == "view-clients" and response.status_code == 200 \
                    and not _json(response, f"GET {path}"):
                missing.append(role)  # query-clients alone lists nothing
            elif response.status_code != 200:
                raise KeycloakError(f"permission check GET {path}: HTTP {response.status_code}")
        if missing:
            raise MissingPermissions(self._creds.realm, missing)

    # --- users ---------------------------------------------------------------------------
    async def user(self, user_id: str, clients: Iterable[str] = ()) -> KeycloakUser | None:
        """The user's current state, or None when Keycloak says the user does not exist."""
        uid = quote(user_id, safe="")
        client_ids = await self._client_ids(sorted(set(clients)))
        # All reads at once: one round trip of latency per user, not two.
        rep, realm_roles, groups, *client_roles = await asyncio.gather(
            self._json_or_gone(f"/users/{uid}"), self.realm_roles(uid), self.groups(uid),
            *(self.client_roles(uid, internal) for internal in client_ids.values()))
        if rep is None:
            return None
        if realm_roles is None or groups is None or any(r is None for r in client_roles):
            raise KeycloakError("user deleted while being read")  # the retry will see it
        by_client = {client_id: found or []
                     for client_id, found in zip(client_ids, client_roles, strict=True)}
        try:
            return user_from_answers(user_id, rep, realm_roles, groups, by_client,
                                     self._attributes)
        except MalformedAnswer as exc:
            raise KeycloakBadAnswer(str(exc)) from None

    async def realm_roles(self, uid: str) -> list[str] | None:
        rows = await self._json_or_gone(f"/users/{uid}/role-mappings/realm/composite",
                                        {"briefRepresentation": "true"})
        return None if rows is None else _names(rows, "name", "realm role mappings")

    async def client_roles(self, uid: str, client_internal_id: str) -> list[str] | None:
        path = f"/users/{uid}/role-mappings/clients/{client_internal_id}/composite"
        response = await self._get(path, {"briefRepresentation": "true"})
        if response.status_code == 404 and _is_user_not_found(response):
            return None
        if response.status_code == 404:
            self.forget_clients()  # the client was deleted since we listed clients
            return []
        _check(response, "GET client role mappings")
        return _names(_json(response, "client role mappings"), "name", "client role mappings")

    async def groups(self, uid: str, page: int = 500) -> list[str] | None:
        paths: list[str] = []
        while True:
            rows = await self._json_or_gone(f"/users/{uid}/groups", {
                "first": len(paths), "max": page, "briefRepresentation": "true"})
            if rows is None:
                return None
            paths.extend(_names(rows, "path", "groups"))
            if len(rows) < page:
                return paths

    async def _json_or_gone(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """The JSON body, or None when Keycloak answers that the user does not exist."""
        response = await self._get(path, params)
        if response.status_code == 404 and _is_user_not_found(response):
            return None
        _check(response, f"GET {path.split('/')[1]}/...")
        return _json(response, f"GET {path.split('/')[1]}/...")

    # --- clients -------------------------------------------------------------------------
    async def _client_ids(self, client_ids: Sequence[str]) -> dict[str, str]:
        """clientId -> internal id for the clients that exist (deleted ones drop out)."""
        if not client_ids:
            return {}
        stale = time.monotonic() - self._clients_fetched > CLIENT_MAP_TTL_S
        if stale or any(c not in self._clients for c in client_ids):
            await self._refresh_clients(min_age=0.0 if stale else 5.0)
        return {c: self._clients[c] for c in client_ids if c in self._clients}

    async def _refresh_clients(self, min_age: float) -> None:
        async with self._clients_lock:
            if time.monotonic() - self._clients_fetched < min_age:
                return  # another task just refreshed it
            found: dict[str, str] = {}
            page = 200
            while True:
                rows = await self._get_json("/clients", {"first": len(found), "max": page,
                                                          "briefRepresentation": "true"})
                found.update(zip(_names(rows, "clientId", "clients"), _names(rows, "id", "clients"),
                                 strict=True))
                if len(rows) < page:
                    break
            self._clients, self._clients_fetched = found, time.monotonic()

    def forget_clients(self) -> None:
        """Client list changed in Keycloak (an admin event said so)."""
        self._clients_fetched = 0.0

    # --- events --------------------------------------------------------------------------
    async def admin_events(self, date_from_ms: int, first: int, max_results: int
                           ) -> list[dict[str, Any]]:
        """Admin events of the realm from ``date_from_ms`` (inclusive), oldest first."""
        return _objects(await self._get_json("/admin-events", {
            "dateFrom": date_from_ms, "first": first, "max": max_results, "direction": "asc"}),
            "admin events")

    async def user_events(self, types: Sequence[str], date_from_ms: int, first: int,
                          max_results: int) -> list[dict[str, Any]]:
        params: list[tuple[str, str | int | float | bool | None]] = [("type", t) for t in types]
        params += [("dateFrom", date_from_ms), ("first", first), ("max", max_results),
                   ("direction", "asc")]
        response = await self._get("/events", httpx.QueryParams(params))
        _check(response, "GET /events")
        return _objects(_json(response, "GET /events"), "user events")


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code == 403:
        raise KeycloakRefused(f"{what}: forbidden; the service account needs the "
                              f"realm-management roles {', '.join(REQUIRED_ROLES)}")
    if response.status_code != 200:
        raise KeycloakError(f"{what}: HTTP {response.status_code}")


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:  # not JSON, or not UTF-8
        raise KeycloakBadAnswer(f"{what}: the answer is not JSON") from None


def _names(rows: object, field: str, what: str) -> list[str]:
    try:
        return names_in(rows, field, what)
    except MalformedAnswer as exc:
        raise KeycloakBadAnswer(str(exc)) from None


def _objects(rows: object, what: str) -> list[dict[str, Any]]:
    """A JSON list of events; entries that are not objects are skipped (never read)."""
    if not isinstance(rows, list):
        raise KeycloakBadAnswer(f"{what}: not a JSON list")
    return [row for row in rows if isinstance(row, dict)]


def _is_user_not_found(response: httpx.Response) -> bool:
    """A 404 for the user, not for a mistyped realm or path: only then is the user gone."""
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error", "") if isinstance(body, dict) else ""
    return isinstance(error, str) and error.lower().startswith("user not found")
