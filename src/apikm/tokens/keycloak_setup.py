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
   exchange has a client of its own: the sync's client stays read-only;
4. tokens narrowed to the key (see ``apikm.tokens.narrowing``): the exchange client gets "Full
   scope allowed" off; it must have no roles of its own and no default client scope with role
   scope mappings; its only direct scope mapping is ``realm-management:manage-users`` (Keycloak's
   admin API checks the *client's* scope before the service account may link owners; without
   the link permission, none); the realm's ``roles`` scope is one of its default scopes (it
   writes ``realm_access``, ``resource_access`` and ``aud``);
5. one client scope per realm role and per client role (clients ``realm-management`` and
   ``broker`` excepted), named ``<alias>.role.<role>``, whose only scope mapping is that role,
   and one per audience (``APIKM_TOKEN_AUDIENCE`` and every client with roles), named
   ``<alias>.aud.<audience>``, whose only content is an audience mapper; all attached to the
   exchange client as *optional* scopes; scopes of roles and clients that no longer exist are
   removed. Run it again after creating roles: a role without its scope cannot be carried.
The identity provider limits the token's lifetime to the assertion's
(``jwtAuthorizationGrantLimitAccessTokenExp``), which apikm ends no later than the key.
Keycloak must be able to fetch the JWKS URL (it is read when an assertion arrives).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from apikm.tokens import narrowing
from apikm.tokens.narrowing import (
    AUDIENCE_ATTRIBUTE,
    MAX_SCOPE_NAME,
    ROLE_ATTRIBUTE,
    role_scope_name,
)

PROVIDER_ID = "jwt-authorization-grant"
GRANT_ENABLED = "oauth2.jwt.authorization.grant.enabled"
GRANT_IDPS = "oauth2.jwt.authorization.grant.idp"
LIST_SEPARATOR = "##"  # Keycloak's separator for multi-valued client attributes
LINK_ROLE = "manage-users"
PAGE = 100
ROLES_SCOPE = "roles"  # Keycloak's client scope with the role and audience mappers


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
    audiences: tuple[str, ...] = ()  # APIKM_TOKEN_AUDIENCE: audience scopes besides clients'


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
        changes += _ensure_role_scopes(admin, client, options)
        changes += _ensure_narrow_client(admin, client, options.grant_link_permission)
        if options.grant_link_permission:
            changes += _ensure_link_permission(admin, client)
    return changes


def remove_setup(options: SetupOptions, token: str) -> list[str]:
    """Undo steps 1, 2 and 5 for this alias (the client's scope settings and the service
    account's role are left alone)."""
    changes: list[str] = []
    with _admin(options, token) as admin:
        for scope in _apikm_scopes(admin, options.alias).values():
            _check(admin.delete(f"/client-scopes/{scope['id']}"), "removing a client scope")
            changes.append(f"client scope {scope['name']}: removed")
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
            # the token expires with the assertion, which apikm ends no later than the key
            "jwtAuthorizationGrantLimitAccessTokenExp": "true",
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


# --- narrowed tokens ------------------------------------------------------------------------


def _paged(admin: httpx.Client, path: str, what: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = _check(admin.get(path, params={"first": len(items), "max": PAGE}), what).json()
        items += page
        if len(page) < PAGE:
            return items


def _mapped_roles(mappings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A MappingsRepresentation as {"role" | "client_id:role": role representation}."""
    roles = {str(r["name"]): r for r in mappings.get("realmMappings") or []}
    for client_id, client in (mappings.get("clientMappings") or {}).items():
        roles.update({f"{client_id}:{r['name']}": r for r in client.get("mappings") or []})
    return roles


@dataclass(frozen=True)
class _Wanted:
    """One client scope apikm keeps: a role's (one scope mapping) or an audience's (one
    audience mapper)."""
    attribute: str  # ROLE_ATTRIBUTE or AUDIENCE_ATTRIBUTE
    value: str  # the role ("name" | "client_id:name") or the audience
    role: dict[str, Any] | None = None
    role_client: str | None = None  # the role's client (uuid), None for a realm role


def _grantable_roles(admin: httpx.Client, exchange_client: dict[str, Any]
                     ) -> dict[str, tuple[dict[str, Any], str | None]]:
    """{"role" | "client_id:role": (role representation, client uuid or None)}."""
    roles: dict[str, tuple[dict[str, Any], str | None]] = {
        str(r["name"]): (r, None) for r in _paged(admin, "/roles", "reading realm roles")}
    for client in _paged(admin, "/clients", "reading clients"):
        if client["id"] == exchange_client["id"] or \
                client["clientId"] in narrowing.UNNARROWED_CLIENTS:
            continue
        for role in _paged(admin, f"/clients/{client['id']}/roles", "reading client roles"):
            roles[f"{client['clientId']}:{role['name']}"] = (role, str(client["id"]))
    return roles


def _apikm_scopes(admin: httpx.Client, alias: str) -> dict[str, dict[str, Any]]:
    """apikm's role and audience scopes for this alias, by name."""
    prefixes = (narrowing.role_scope_prefix(alias), narrowing.audience_scope_prefix(alias))
    scopes = _check(admin.get("/client-scopes"), "reading client scopes").json()
    return {s["name"]: s for s in scopes if str(s.get("name", "")).startswith(prefixes)
            and {ROLE_ATTRIBUTE, AUDIENCE_ATTRIBUTE} & set(s.get("attributes") or {})}


def _add_scope_mapping(admin: httpx.Client, path: str, role: dict[str, Any],
                       client_uuid: str | None) -> None:
    target = f"{path}/scope-mappings/" + (f"clients/{client_uuid}" if client_uuid else "realm")
    _check(admin.post(target, json=[role]), "adding a role scope mapping")


def _remove_scope_mappings(admin: httpx.Client, path: str, mappings: dict[str, Any],
                           keep: set[str]) -> list[str]:
    removed = []
    realm = [r for r in mappings.get("realmMappings") or [] if r["name"] not in keep]
    if realm:
        _check(admin.request("DELETE", f"{path}/scope-mappings/realm", json=realm),
               "removing role scope mappings")
        removed += [r["name"] for r in realm]
    for client_id, client in (mappings.get("clientMappings") or {}).items():
        roles = [r for r in client.get("mappings") or []
                 if f"{client_id}:{r['name']}" not in keep]
        if roles:
            _check(admin.request("DELETE", f"{path}/scope-mappings/clients/{client['id']}",
                                 json=roles), "removing role scope mappings")
            removed += [f"{client_id}:{r['name']}" for r in roles]
    return sorted(removed)


def _audience_mapper(audience: str) -> dict[str, Any]:
    return {"name": "audience", "protocol": "openid-connect",
            "protocolMapper": "oidc-audience-mapper",
            "config": {"included.custom.audience": audience, "access.token.claim": "true",
                       "introspection.token.claim": "true", "id.token.claim": "false"}}


def _scope_is_right(admin: httpx.Client, scope: dict[str, Any], wanted: _Wanted) -> bool:
    attributes = scope.get("attributes") or {}
    if attributes.get(wanted.attribute) != wanted.value or \
            attributes.get("include.in.token.scope") != "true":
        return False
    path = f"/client-scopes/{scope['id']}"
    mapped = set(_mapped_roles(_check(admin.get(f"{path}/scope-mappings"),
                                      "reading a scope's roles").json()))
    mappers = [(m.get("protocolMapper"), (m.get("config") or {}).get("included.custom.audience"))
               for m in scope.get("protocolMappers") or []]
    if wanted.attribute == ROLE_ATTRIBUTE:
        return mapped == {wanted.value} and not mappers
    return not mapped and mappers == [("oidc-audience-mapper", wanted.value)]


def _create_scope(admin: httpx.Client, name: str, wanted: _Wanted) -> str:
    what = "tokens for API keys that carry" if wanted.attribute == ROLE_ATTRIBUTE else \
        "adds to the audience of API key tokens:"
    rep: dict[str, Any] = {
        "name": name, "protocol": "openid-connect",
        "description": f"apikm: {what} {wanted.value}",
        # Named in the token's scope claim: Keycloak's introspection rebuilds the token's
        # roles from the scopes it names, and a reader sees why the token carries them.
        "attributes": {"include.in.token.scope": "true", "display.on.consent.screen": "false",
                       wanted.attribute: wanted.value},
    }
    if wanted.attribute == AUDIENCE_ATTRIBUTE:
        rep["protocolMappers"] = [_audience_mapper(wanted.value)]
    response = _check(admin.post("/client-scopes", json=rep), f"creating client scope {name}")
    scope_id = response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    if wanted.role is not None:
        _add_scope_mapping(admin, f"/client-scopes/{scope_id}", wanted.role, wanted.role_client)
    return scope_id


def _ensure_role_scopes(admin: httpx.Client, client: dict[str, Any],
                        options: SetupOptions) -> list[str]:
    """Step 5: one optional client scope per grantable role, mapping that role only, and one
    per audience apikm may add, with an audience mapper only."""
    changes: list[str] = []
    wanted: dict[str, _Wanted] = {}
    roles = _grantable_roles(admin, client)
    audiences = {*options.audiences, *(r.partition(":")[0] for r in roles if ":" in r)}
    for role, (rep, client_uuid) in roles.items():
        wanted[role_scope_name(options.alias, role)] = _Wanted(ROLE_ATTRIBUTE, role, rep,
                                                               client_uuid)
    for audience in audiences:
        wanted[narrowing.audience_scope_name(options.alias, audience)] = _Wanted(
            AUDIENCE_ATTRIBUTE, audience)
    for name in [n for n in wanted if len(n) > MAX_SCOPE_NAME]:
        changes.append(f"{wanted.pop(name).value}: name too long for a client scope; keys "
                       "with it get no Keycloak token")
    existing = _apikm_scopes(admin, options.alias)
    taken = {s["name"] for s in _check(admin.get("/client-scopes"),
                                       "reading client scopes").json()}
    created = 0
    for name, want in sorted(wanted.items()):
        scope = existing.get(name)
        if scope is not None and not _scope_is_right(admin, scope, want):
            _check(admin.delete(f"/client-scopes/{scope['id']}"), "removing a client scope")
            changes.append(f"client scope {name}: recreated (it carried something else)")
        elif scope is not None:
            continue
        elif name in taken:
            raise SetupError(f"client scope {name!r} exists but was not made by apikm; "
                             "remove it or choose another APIKM_KEYCLOAK_IDP_ALIAS")
        else:
            created += 1
        existing[name] = {"id": _create_scope(admin, name, want), "name": name}
    if created:
        changes.append(f"client scopes: created {created} ({options.alias}.role.* for roles, "
                       f"{options.alias}.aud.* for audiences)")
    for name, scope in sorted(existing.items()):
        if name not in wanted:
            _check(admin.delete(f"/client-scopes/{scope['id']}"), "removing a client scope")
            changes.append(f"client scope {name}: removed (its role or client is gone)")
            del existing[name]
    changes += _attach_optional(admin, client, {s["id"] for s in existing.values()})
    return changes


def _attach_optional(admin: httpx.Client, client: dict[str, Any], scope_ids: set[str]
                     ) -> list[str]:
    base = f"/clients/{client['id']}"
    default = {s["id"] for s in _check(admin.get(f"{base}/default-client-scopes"),
                                       "reading default scopes").json()}
    optional = {s["id"] for s in _check(admin.get(f"{base}/optional-client-scopes"),
                                        "reading optional scopes").json()}
    for scope_id in scope_ids & default:  # a default role scope would be in every token
        _check(admin.delete(f"{base}/default-client-scopes/{scope_id}"),
               "removing a default scope")
    missing = scope_ids - optional
    for scope_id in sorted(missing):
        _check(admin.put(f"{base}/optional-client-scopes/{scope_id}"),
               "adding an optional scope")
    changes = []
    if scope_ids & default:
        changes.append(f"client {client['clientId']}: {len(scope_ids & default)} apikm scopes "
                       "no longer default")
    if missing:
        changes.append(f"client {client['clientId']}: {len(missing)} apikm scopes added as "
                       "optional scopes")
    return changes


def _ensure_narrow_client(admin: httpx.Client, client: dict[str, Any], link: bool
                          ) -> list[str]:
    """Step 4: nothing but the requested role scopes may bring roles into its tokens."""
    changes: list[str] = []
    base = f"/clients/{client['id']}"
    name = client["clientId"]
    own = _check(admin.get(f"{base}/roles"), "reading the client's roles").json()
    if own:
        raise SetupError(f"client {name!r} has roles of its own ("
                         + ", ".join(sorted(r["name"] for r in own)) + "); Keycloak keeps a "
                         "client's own roles in reach of every token it issues: use a client "
                         "without roles as APIKM_EXCHANGE_CLIENT_ID")
    if client.get("fullScopeAllowed", True):
        client["fullScopeAllowed"] = False
        _check(admin.put(base, json=client), "updating the client")
        changes.append(f"client {name}: full scope allowed turned off")
    mappings = _check(admin.get(f"{base}/scope-mappings"), "reading the client's scope").json()
    keep = {narrowing.LINK_ROLE} if link else set()
    removed = _remove_scope_mappings(admin, base, mappings, keep)
    if removed:
        changes.append(f"client {name}: direct role scope mappings removed: "
                       + ", ".join(removed))
    if link and narrowing.LINK_ROLE not in _mapped_roles(mappings):
        management = _find_client_any(admin, "realm-management")
        role = _check(admin.get(f"/clients/{management['id']}/roles/{LINK_ROLE}"),
                      "reading the manage-users role").json()
        _add_scope_mapping(admin, base, role, management["id"])
        changes.append(f"client {name}: {narrowing.LINK_ROLE} in its scope (its service account "
                       "links owners; tokens of owners who hold it carry it)")
    scopes = {s["name"]: s for s in _check(admin.get("/client-scopes"),
                                           "reading client scopes").json()}
    default = _check(admin.get(f"{base}/default-client-scopes"), "reading default scopes").json()
    for scope in default:
        path = f"/client-scopes/{scope['id']}/scope-mappings"
        mapped = _mapped_roles(_check(admin.get(path), "reading a default scope").json())
        if mapped:
            raise SetupError(f"client scope {scope['name']!r}, a default scope of {name!r}, "
                             "maps roles (" + ", ".join(sorted(mapped)) + ") that would be in "
                             "every token: remove it from the client's default scopes, or make "
                             "it optional")
    if ROLES_SCOPE not in {s["name"] for s in default}:
        if ROLES_SCOPE not in scopes:
            raise SetupError(f"the realm has no {ROLES_SCOPE!r} client scope (realm_access, "
                             "resource_access and aud mappers)")
        _check(admin.put(f"{base}/default-client-scopes/{scopes[ROLES_SCOPE]['id']}"),
               "adding the roles scope")
        changes.append(f"client {name}: default scope {ROLES_SCOPE} added")
    return changes
