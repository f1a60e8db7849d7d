"""RFC 7662 introspection of API keys (``POST /oauth/introspect``, ``token`` = the key).

Who may introspect: callers from ``APIKM_INTROSPECT_NETWORKS`` (default: loopback only) -- the
TCP peer must lie in them, and so must the client a trusted proxy names -- or any caller
presenting a valid Keycloak access token for apikm (audience ``APIKM_OIDC_AUDIENCE``) whose
roles include ``APIKM_INTROSPECT_ROLE`` (default ``apikm-introspect``; give it to a resource
server's service account). Everyone else gets 401, so the endpoint is no key-guessing oracle.

The answer is ``{"active": false}`` for any key that is not usable right now, whatever the
reason, as the RFC asks; active keys carry the owner's identity and effective roles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apikm.networks import address_in, parse_networks
from apikm.tokens.claims import split_roles
from apikm.verify.verifier import Verification


class IntrospectionNetworks:
    def __init__(self, cidrs: Sequence[str]) -> None:
        self._networks = parse_networks(cidrs)

    def allows(self, address: str) -> bool:
        return address_in(address, self._networks)


def introspection_body(result: Verification, issuer: str) -> dict[str, Any]:
    record = result.record
    if not result.valid or record is None:
        return {"active": False}
    realm_roles, client_roles = split_roles(record.effective_roles)
    body: dict[str, Any] = {
        "active": True,
        "token_type": "api_key",
        "iss": issuer,
        "sub": record.owner_id,
        "username": record.username,
        "exp": int(record.expires_at.timestamp()),
        "key_id": record.id,
        "key_name": record.name,
        "roles": sorted(record.effective_roles),
        "realm_access": {"roles": realm_roles},
        "resource_access": {client: {"roles": roles} for client, roles in client_roles.items()},
        "groups": list(record.owner_groups),
        "meta": record.meta,
        "attributes": record.owner_attributes,
    }
    if record.email:
        body["email"] = record.email
    return body
