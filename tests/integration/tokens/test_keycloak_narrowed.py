"""Keycloak exchange mode against the real Keycloak: genuine tokens with the key's roles only.

The realm is prepared by the project's own ``setup_realm`` (the code behind ``apikm keycloak
setup``) for a throwaway alias and exchange client, and cleaned up afterwards. Every token is
checked the way Keycloak itself and a resource server check it: userinfo, introspection, the
realm's JWKS.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from apikm.devstack.keycloak import StackInfo
from apikm.identity.principal import roles_from_claims
from apikm.tokens.keycloak_setup import SetupOptions, remove_setup, setup_realm
from apikm.tokens.narrowing import audiences, unverified_claims
from tests.integration.tokens.test_exchange import exchange
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.gateways import nginx_gateway
from tests.support.keycloak_resource_server import keycloak_resource_server
from tests.support.keycloak_tokens import admin_token, password_grant
from tests.support.keycloak_users import ThrowawayUser, realm_admin, set_enabled, throwaway_user
from tests.support.keys import create_key, user_client

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class KeycloakMode:
    server: ApikmServer
    options: SetupOptions
    client_id: str
    resource_server: tuple[str, str]  # a confidential client in every token's aud: id, secret


@contextmanager
def _confidential_client(keycloak: StackInfo, client_id: str) -> Iterator[str]:
    """A resource server's client (it introspects with its secret); removed afterwards."""
    secret = secrets.token_urlsafe(16)
    with realm_admin(keycloak.base_url) as admin:
        admin.post("/clients", json={
            "clientId": client_id, "enabled": True, "publicClient": False, "secret": secret,
            "standardFlowEnabled": False, "directAccessGrantsEnabled": False,
        }).raise_for_status()
    try:
        yield secret
    finally:
        with realm_admin(keycloak.base_url) as admin:
            for client in admin.get("/clients", params={"clientId": client_id}).json():
                admin.delete(f"/clients/{client['id']}")


@pytest.fixture(scope="module")
def narrowed(keycloak: StackInfo) -> Iterator[KeycloakMode]:
    suffix = secrets.token_hex(4)
    alias, client_id, rs_id = f"apikm-nt-{suffix}", f"apikm-nt-{suffix}", f"rs-{suffix}"
    secret = secrets.token_urlsafe(16)
    with _confidential_client(keycloak, rs_id) as rs_secret, apikm_server(
            None, keycloak.base_url, exchange_mode="keycloak", keycloak_idp_alias=alias,
            exchange_client_id=client_id, exchange_client_secret=secret,
            token_audience=rs_id) as server:
        options = SetupOptions(
            keycloak_url=keycloak.base_url, realm="demo", alias=alias, issuer=server.url,
            jwks_url=f"{server.url}/.well-known/jwks.json", client_id=client_id,
            signing_alg="ES256", client_secret=secret, audiences=(rs_id,))
        try:
            changes = setup_realm(options, admin_token(keycloak.base_url))
            assert any("full scope allowed turned off" in c for c in changes), changes
            assert any("apikm scopes added as optional" in c for c in changes), changes
            assert setup_realm(options, admin_token(keycloak.base_url)) == []  # idempotent
            yield KeycloakMode(server, options, client_id, (rs_id, rs_secret))
        finally:
            remove_setup(options, admin_token(keycloak.base_url))
            with realm_admin(keycloak.base_url) as admin:
                for client in admin.get("/clients", params={"clientId": client_id}).json():
                    admin.delete(f"/clients/{client['id']}")
                left = [s["name"] for s in admin.get("/client-scopes").json()
                        if s["name"].startswith(f"{alias}.")]
            assert left == []


def _grant_roles(keycloak: StackInfo, user_id: str, client_roles: dict[str, list[str]]) -> None:
    with realm_admin(keycloak.base_url) as admin:
        for client_id, names in client_roles.items():
            client = admin.get("/clients", params={"clientId": client_id}).json()[0]
            roles = [admin.get(f"/clients/{client['id']}/roles/{n}").raise_for_status().json()
                     for n in names]
            admin.post(f"/users/{user_id}/role-mappings/clients/{client['id']}",
                       json=roles).raise_for_status()


@pytest.fixture(scope="module")
def owner(keycloak: StackInfo) -> Iterator[ThrowawayUser]:
    """Realm roles analyst, editor, apikm-admin (and the realm's default roles); client roles
    geoserver:read and geoserver:write."""
    with throwaway_user(keycloak.base_url, ("analyst", "editor", "apikm-admin")) as user:
        _grant_roles(keycloak, user.id, {"geoserver": ["read", "write"]})
        yield user


def _client(narrowed: KeycloakMode, keycloak: StackInfo, user: ThrowawayUser) -> httpx.Client:
    bearer = password_grant(keycloak.issuer, user.username, user.password)["access_token"]
    return user_client(narrowed.server.url, str(bearer))


def _token(narrowed: KeycloakMode, key: str, **extra: str) -> str:
    response = exchange(narrowed.server.url, key, **extra)
    assert response.status_code == 200, response.text + narrowed.server.log_text()[-3000:]
    return str(response.json()["access_token"])


def _validated_by_keycloak(keycloak: StackInfo, narrowed: KeycloakMode, token: str
                           ) -> dict[str, Any]:
    """Signature (realm JWKS), issuer and expiry; then Keycloak's userinfo and introspection
    must accept it too. Returns the verified claims."""
    certs = httpx.get(f"{keycloak.issuer}/protocol/openid-connect/certs").json()
    keys = KeySet.import_key_set({"keys": [k for k in certs["keys"] if k.get("use") == "sig"]})
    decoded = jwt.decode(token, keys, algorithms=["RS256", "ES256", "PS256"])
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": keycloak.issuer},
                          exp={"essential": True}).validate(decoded.claims)
    userinfo = httpx.get(f"{keycloak.issuer}/protocol/openid-connect/userinfo",
                         headers={"Authorization": f"Bearer {token}"})
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.json()["sub"] == decoded.claims["sub"]
    # Keycloak answers introspection only to a client in the token's audience.
    introspected = httpx.post(f"{keycloak.issuer}/protocol/openid-connect/token/introspect",
                              data={"token": token}, auth=narrowed.resource_server).json()
    assert introspected["active"] is True, introspected
    # What Keycloak itself says the token carries is what the token says.
    assert roles_from_claims(introspected) == roles_from_claims(decoded.claims)
    return dict(decoded.claims)


def test_each_token_carries_exactly_the_keys_roles(
        narrowed: KeycloakMode, keycloak: StackInfo, owner: ThrowawayUser) -> None:
    client = _client(narrowed, keycloak, owner)
    held = client.get("/v1/me").json()["roles"]
    assert {"analyst", "editor", "apikm-admin", "geoserver:read", "geoserver:write",
            "default-roles-demo"} <= set(held)
    for grant in ([], ["analyst"], ["geoserver:read"], held):
        key, _ = create_key(client, grant)
        claims = _validated_by_keycloak(keycloak, narrowed, _token(narrowed, key))
        assert claims["sub"] == owner.id and claims["azp"] == narrowed.client_id
        assert narrowed.resource_server[0] in audiences(claims)  # APIKM_TOKEN_AUDIENCE
        assert roles_from_claims(claims) == set(grant), grant
        realm_roles = sorted(r for r in grant if ":" not in r)
        assert claims.get("realm_access", {}).get("roles", []) == realm_roles or \
            sorted(claims["realm_access"]["roles"]) == realm_roles
        if grant == ["analyst"]:
            assert claims["realm_access"] == {"roles": ["analyst"]}
            assert not claims.get("resource_access")
        if grant == ["geoserver:read"]:
            assert claims["resource_access"] == {"geoserver": {"roles": ["read"]}}
            assert not claims.get("realm_access")
            # Keycloak's audience resolver: the key's clients; plus the configured audience
            assert sorted(audiences(claims)) == sorted(["geoserver", narrowed.resource_server[0]])
        if not grant:  # not even the realm's default roles
            assert not claims.get("realm_access") and not claims.get("resource_access")


def test_audience_and_scope_requests(narrowed: KeycloakMode, keycloak: StackInfo,
                                     owner: ThrowawayUser) -> None:
    key, _ = create_key(_client(narrowed, keycloak, owner), ["geoserver:read"])
    # asked for: that audience (and the key's clients, which Keycloak always names)
    assert unverified_claims(_token(narrowed, key, audience="geoserver"))["aud"] == "geoserver"
    rs_only, _ = create_key(_client(narrowed, keycloak, owner), ["analyst"])
    assert unverified_claims(_token(narrowed, rs_only, audience=narrowed.resource_server[0]))[
        "aud"] == narrowed.resource_server[0]
    other = exchange(narrowed.server.url, key, audience="stac")
    assert other.status_code == 400 and other.json()["error"] == "invalid_target"
    assert "geoserver" in other.json()["error_description"]
    alias = narrowed.options.alias
    sneaky = exchange(narrowed.server.url, key, scope=f"profile {alias}.role.editor")
    assert sneaky.status_code == 400 and sneaky.json()["error"] == "invalid_scope"
    # A scope the client offers but that maps no role is the caller's to ask for.
    assert "email" in unverified_claims(_token(narrowed, key, scope="email"))["scope"]


def test_token_never_outlives_the_key(narrowed: KeycloakMode, keycloak: StackInfo,
                                      owner: ThrowawayUser) -> None:
    ends = datetime.now(UTC) + timedelta(seconds=40)
    key, _ = create_key(_client(narrowed, keycloak, owner), ["analyst"],
                        expires_at=ends.isoformat())
    response = exchange(narrowed.server.url, key)
    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] <= 40
    assert unverified_claims(response.json()["access_token"])["exp"] <= ends.timestamp()


def test_composite_role_the_key_only_partly_holds_is_refused(
        narrowed: KeycloakMode, keycloak: StackInfo) -> None:
    """data-manager contains editor and geoserver:write: Keycloak cannot issue it alone."""
    with throwaway_user(keycloak.base_url, ("data-manager",)) as user:
        client = _client(narrowed, keycloak, user)
        partial, _ = create_key(client, ["data-manager"])
        refused = exchange(narrowed.server.url, partial)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_scope"
        assert "composite" in refused.json()["error_description"]
        whole, _ = create_key(client, ["data-manager", "editor", "geoserver:write"])
        claims = unverified_claims(_token(narrowed, whole))
        assert roles_from_claims(claims) == {"data-manager", "editor", "geoserver:write"}


def test_removed_role_leaves_the_next_token_and_disabled_owner_gets_none(
        narrowed: KeycloakMode, keycloak: StackInfo) -> None:
    with throwaway_user(keycloak.base_url, ("analyst", "editor")) as user:
        key, _ = create_key(_client(narrowed, keycloak, user), ["analyst", "editor"])
        assert roles_from_claims(unverified_claims(_token(narrowed, key))) == {
            "analyst", "editor"}
        with realm_admin(keycloak.base_url) as admin:
            editor = admin.get("/roles/editor").json()
            admin.request("DELETE", f"/users/{user.id}/role-mappings/realm",
                          json=[editor]).raise_for_status()
        # At once: Keycloak intersects with what the owner holds now, whatever apikm synced.
        assert roles_from_claims(unverified_claims(_token(narrowed, key))) == {"analyst"}
        set_enabled(keycloak.base_url, user.id, False)
        refused = exchange(narrowed.server.url, key)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
        assert "access_token" not in refused.json()


def test_forward_auth_hands_upstream_the_same_narrow_token(
        narrowed: KeycloakMode, keycloak: StackInfo, owner: ThrowawayUser) -> None:
    """nginx + apikm forward auth (jwt=1) in front of a service that trusts only Keycloak:
    the key with geoserver:read reads and is refused writing, although its owner may write."""
    client = _client(narrowed, keycloak, owner)
    reader, _ = create_key(client, ["geoserver:read"])
    writer, _ = create_key(client, ["geoserver:read", "geoserver:write"])
    with keycloak_resource_server(keycloak.issuer, "geoserver") as service, \
            nginx_gateway(narrowed.server.url, service) as gateway:
        read = httpx.get(f"{gateway.url}/maps/layer", headers={"X-API-Key": reader})
        assert read.status_code == 200, read.text + gateway.log_text()[-2000:]
        assert read.json()["roles"] == ["geoserver:read"]
        assert read.json()["azp"] == narrowed.client_id
        write = httpx.post(f"{gateway.url}/maps/layer", headers={"X-API-Key": reader})
        assert write.status_code == 403 and write.json()["roles"] == ["geoserver:read"]
        allowed = httpx.post(f"{gateway.url}/maps/layer", headers={"X-API-Key": writer})
        assert allowed.status_code == 200, allowed.text
        # forward auth's upstream token is the exchange's: the key's roles, nothing more
        auth = httpx.get(f"{narrowed.server.url}/v1/auth", params={"jwt": "1"},
                         headers={"X-API-Key": reader})
        assert auth.status_code == 200
        assert auth.headers["x-auth-roles"] == "geoserver:read"
        upstream = auth.headers["authorization"].removeprefix("Bearer ")
        assert roles_from_claims(_validated_by_keycloak(keycloak, narrowed, upstream)) == {
            "geoserver:read"}


def test_python_exchange_auth_gets_the_narrow_token(
        narrowed: KeycloakMode, keycloak: StackInfo, owner: ThrowawayUser) -> None:
    from apikm.client import TokenExchangeAuth

    key, _ = create_key(_client(narrowed, keycloak, owner), ["geoserver:read"])
    auth = TokenExchangeAuth(narrowed.server.url, key)
    with keycloak_resource_server(keycloak.issuer, "geoserver") as service:
        assert httpx.get(f"{service}/x", auth=auth).status_code == 200
        refused = httpx.post(f"{service}/x", auth=auth)
        assert refused.status_code == 403 and refused.json()["roles"] == ["geoserver:read"]


def test_a_realm_made_to_issue_wider_tokens_gets_them_refused(
        narrowed: KeycloakMode, keycloak: StackInfo, owner: ThrowawayUser) -> None:
    """Full scope turned back on by hand: Keycloak now issues every role of the owner; apikm
    refuses to hand such a token out, counts it and logs why; setup repairs the client."""
    key, _ = create_key(_client(narrowed, keycloak, owner), ["analyst"])
    with realm_admin(keycloak.base_url) as admin:
        found = admin.get("/clients", params={"clientId": narrowed.client_id}).json()[0]
        found["fullScopeAllowed"] = True
        admin.put(f"/clients/{found['id']}", json=found).raise_for_status()
    try:
        refused = exchange(narrowed.server.url, key)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_scope"
        assert "access_token" not in refused.json()
        forward = httpx.get(f"{narrowed.server.url}/v1/auth", params={"jwt": "1"},
                            headers={"X-API-Key": key})
        assert forward.status_code == 403 and "authorization" not in forward.headers
        assert forward.json()["error"] == "jwt_refused"
        metrics = httpx.get(f"{narrowed.server.url}/metrics").text
        assert 'apikm_keycloak_tokens_refused_total{reason="wider_roles"}' in metrics
        log = narrowed.server.log_text()
        assert "wider than its key" in log and "editor" in log
        assert "eyJ" not in log.split("wider than its key")[1][:2000]  # no token logged
    finally:
        changes = setup_realm(narrowed.options, admin_token(keycloak.base_url))
    assert f"client {narrowed.client_id}: full scope allowed turned off" in changes
    assert roles_from_claims(unverified_claims(_token(narrowed, key))) == {"analyst"}


def test_a_role_created_after_setup_needs_setup_again(
        narrowed: KeycloakMode, keycloak: StackInfo) -> None:
    """Until setup runs again, a key with the new role gets a clear error, never a token;
    setup adds the role's scope, and removes it once the role is gone."""
    role = f"nt-{secrets.token_hex(3)}"
    with realm_admin(keycloak.base_url) as admin:
        admin.post("/roles", json={"name": role}).raise_for_status()
    try:
        with throwaway_user(keycloak.base_url, ("analyst", role)) as user:
            key, _ = create_key(_client(narrowed, keycloak, user), ["analyst", role])
            refused = exchange(narrowed.server.url, key)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"] == "invalid_scope"
            assert "apikm keycloak setup" in refused.json()["error_description"]
            changes = setup_realm(narrowed.options, admin_token(keycloak.base_url))
            assert any("created 1 " in c for c in changes), changes
            assert roles_from_claims(unverified_claims(_token(narrowed, key))) == {
                "analyst", role}
    finally:
        with realm_admin(keycloak.base_url) as admin:
            admin.delete(f"/roles/{role}")
    changes = setup_realm(narrowed.options, admin_token(keycloak.base_url))
    assert f"client scope {narrowed.options.alias}.role.{role}: removed (its role or client " \
        "is gone)" in changes
