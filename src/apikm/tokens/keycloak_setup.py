"""``apikm keycloak setup``: prepare an existing realm for the ``keycloak`` exchange mode.

Idempotent; every step reads first and changes only what differs:
1. an identity provider of type ``jwt-authorization-grant`` (alias ``APIKM_KEYCLOAK_IDP_ALIAS``)
   whose issuer is apikm's base URL and whose keys come from apikm's JWKS URL, pinned to
   apikm's signing algorithm;
2. on apikm's exchange client (``APIKM_EXCHANGE_CLIENT_ID``; created, confidential with a
   service account and no login flows, when missing and a secret is given): the JWT
   Authorization Grant enabled
   (``oauth2.jwt.authorization.grant.enabled``) and the alias added to the identity providers
   it may accept assertions from (``oauth2.jwt.authorization.grant.idp``, ``##``-separated);
3. unless refused, ``realm-management:manage-users`` for that client's service account, so
   apikm can link an owner to the identity provider on their first exchange. This is why the
   exchange has a client of its own: the sync's client stays read-only.
Keycloak must be able to fetch the JWKS URL (it is read when an assertion arrives).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

PROVIDER_ID = "jwt-authorization-grant"
GRANT_ENABLED = "oauth2.jwt.authorization.grant.enabled"
GRANT_IDPS = "oauth2.jwt.authorization.grant.idp"
LIST_SEPARATOR = "##"  # Keycloak's separator for multi-valued client attributes
LINK_ROLE = "manage-users"


class SetupError(Exception):
    """The realm cannot be prepared as asked; the message says what to fix."""


@dataclass(frozen=True)
class SetupOptions:
    keycloak_url: str
    realm: str
    alias: str
    issuer: str
    jwks_url: str
    client_id: str
    signing_alg: str
    grant_link_permission: bool = True
    client_secret: str | None = None  # creates the client when it does not exist


def admin_token(keycloak_url: str, username: str, password: str, realm: str = "master") -> str:
    """An admin access token by password grant through ``admin-cli``."""
    response = httpx.post(
        f"{keycloak_url}/realms/{realm}/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": "admin-cli", "username": username,
              "password": password},
        timeout=30, trust_env=False,
    )
    if response.status_code != 200:
        raise SetupError(f"Keycloak admin sign-in failed ({response.status_code}) in realm "
                         f"{realm!r}")
    return str(response.json()["access_token"])


def _admin(options: SetupOptions, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{options.keycloak_url}/admin/realms/{options.realm}",
                        headers={"Authorization": f"Bearer {token}"}, timeout=30,
                        trust_env=False)


def _check(response: httpx.Response, what: str) -> httpx.Response:
    if response.is_error:
        raise SetupError(f"{what}: Keycloak answered {response.status_code} {response.text[:300]}")
    return response


def setup_realm(options: SetupOptions, token: str) -> list[str]:
    """Apply the three steps; returns what changed (empty when everything was in place)."""
    with _admin(options, token) as admin:
        changes = _ensure_identity_provider(admin, options)
        changes += _ensure_client(admin, options)
        client = _find_client(admin, options.client_id)
        changes += _ensure_client_grant(admin, client, options.alias)
        if options.grant_link_permission:
            changes += _ensure_link_permission(admin, client)
    return changes


def remove_setup(options: SetupOptions, token: str) -> list[str]:
    """Undo steps 1 and 2 for this alias (the service account's role is left alone)."""
    changes: list[str] = []
    with _admin(options, token) as admin:
        client = _find_client(admin, options.client_id)
        idps = _split(client.get("attributes", {}).get(GRANT_IDPS))
        if options.alias in idps:
            idps.remove(options.alias)
            client["attributes"][GRANT_IDPS] = LIST_SEPARATOR.join(idps)
            _check(admin.put(f"/clients/{client['id']}", json=client), "updating the client")
            changes.append(f"client {options.client_id}: no longer accepts {options.alias}")
        response = admin.delete(f"/identity-provider/instances/{options.alias}")
        if response.status_code != 404:
            _check(response, "removing the identity provider")
            changes.append(f"identity provider {options.alias}: removed")
    return changes


def _identity_provider(options: SetupOptions) -> dict[str, Any]:
    return {
        "alias": options.alias,
        "displayName": "apikm",
        "providerId": PROVIDER_ID,
        "enabled": True,
        "config": {
            "issuer": options.issuer,
            "jwksUrl": options.jwks_url,
            "useJwksUrl": "true",
            "jwtAuthorizationGrantAssertionSignatureAlg": options.signing_alg,
        },
    }


def _ensure_identity_provider(admin: httpx.Client, options: SetupOptions) -> list[str]:
    wanted = _identity_provider(options)
    response = admin.get(f"/identity-provider/instances/{options.alias}")
    if response.status_code == 404:
        _check(admin.post("/identity-provider/instances", json=wanted),
               "creating the identity provider")
        return [f"identity provider {options.alias}: created (issuer {options.issuer})"]
    current = _check(response, "reading the identity provider").json()
    if current.get("providerId") != PROVIDER_ID:
        raise SetupError(f"alias {options.alias!r} is taken by a {current.get('providerId')} "
                         "identity provider; choose another APIKM_KEYCLOAK_IDP_ALIAS")
    config = current.get("config", {})
    if current.get("enabled") and all(config.get(k) == v for k, v in wanted["config"].items()):
        return []
    current["enabled"] = True
    current["config"] = {**config, **wanted["config"]}
    _check(admin.put(f"/identity-provider/instances/{options.alias}", json=current),
           "updating the identity provider")
    return [f"identity provider {options.alias}: updated (issuer {options.issuer})"]


def _ensure_client(admin: httpx.Client, options: SetupOptions) -> list[str]:
    found = _check(admin.get("/clients", params={"clientId": options.client_id}),
                   "looking up the client").json()
    if found or options.client_secret is None:
        return []
    _check(admin.post("/clients", json={
        "clientId": options.client_id, "name": "apikm token exchange",
        "description": "apikm obtains Keycloak tokens for key owners (JWT Authorization Grant)",
        "enabled": True, "protocol": "openid-connect", "publicClient": False,
        "clientAuthenticatorType": "client-secret", "secret": options.client_secret,
        "serviceAccountsEnabled": True, "standardFlowEnabled": False,
        "implicitFlowEnabled": False, "directAccessGrantsEnabled": False,
    }), "creating the client")
    return [f"client {options.client_id}: created"]


def _find_client(admin: httpx.Client, client_id: str) -> dict[str, Any]:
    found = _check(admin.get("/clients", params={"clientId": client_id}),
                   "looking up the client").json()
    if not found:
        raise SetupError(f"client {client_id!r} does not exist in the realm")
    client: dict[str, Any] = found[0]
    if client.get("publicClient"):
        raise SetupError(f"client {client_id!r} is public; the grant needs a confidential one")
    return client


def _split(value: object) -> list[str]:
    return [item for item in str(value or "").split(LIST_SEPARATOR) if item]


def _ensure_client_grant(admin: httpx.Client, client: dict[str, Any], alias: str) -> list[str]:
    attributes = client.setdefault("attributes", {})
    idps = _split(attributes.get(GRANT_IDPS))
    if attributes.get(GRANT_ENABLED) == "true" and alias in idps:
        return []
    attributes[GRANT_ENABLED] = "true"
    attributes[GRANT_IDPS] = LIST_SEPARATOR.join([*idps, alias] if alias not in idps else idps)
    _check(admin.put(f"/clients/{client['id']}", json=client), "updating the client")
    return [f"client {client['clientId']}: JWT Authorization Grant enabled for {alias}"]


def _ensure_link_permission(admin: httpx.Client, client: dict[str, Any]) -> list[str]:
    if not client.get("serviceAccountsEnabled"):
        raise SetupError(f"client {client['clientId']!r} has no service account; enable it, "
                         "or pass --no-link-permission and link owners yourself")
    account = _check(admin.get(f"/clients/{client['id']}/service-account-user"),
                     "reading the service account").json()
    management = _find_client_any(admin, "realm-management")
    mapped = _check(admin.get(f"/users/{account['id']}/role-mappings/clients/{management['id']}"),
                    "reading the service account's roles").json()
    if any(role.get("name") == LINK_ROLE for role in mapped):
        return []
    role = _check(admin.get(f"/clients/{management['id']}/roles/{LINK_ROLE}"),
                  "reading the manage-users role").json()
    _check(admin.post(f"/users/{account['id']}/role-mappings/clients/{management['id']}",
                      json=[role]), "granting manage-users")
    return [f"service account of {client['clientId']}: granted realm-management:{LINK_ROLE}"]


def _find_client_any(admin: httpx.Client, client_id: str) -> dict[str, Any]:
    found = _check(admin.get("/clients", params={"clientId": client_id}),
                   f"looking up {client_id}").json()
    if not found:
        raise SetupError(f"client {client_id!r} not found")
    return dict(found[0])
