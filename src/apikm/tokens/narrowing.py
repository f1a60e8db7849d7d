"""Keycloak tokens narrowed to a key: which client scopes carry its roles, and the check that
Keycloak issued no more than the key holds.

How Keycloak decides a token's roles (``TokenManager.getAccess``): for a client whose "Full
scope allowed" is off, the roles it may put in a token are the client's own roles, its direct
role scope mappings, and the role scope mappings of the client scopes applied to the request
(its default scopes, plus the optional ones named in ``scope``), composites expanded; the token
carries the user's effective roles intersected with that. ``apikm keycloak setup`` therefore
gives apikm's exchange client full scope off and one optional client scope per role, named
here, whose only scope mapping is that role; apikm asks for the scopes of the key's effective
roles and nothing else, and Keycloak issues the key's roles the owner still holds, no more.

The audience works the same way: the ``roles`` scope's audience resolver names every client
the key holds a role of, and one optional scope per audience apikm may add
(``APIKM_TOKEN_AUDIENCE`` and the clients with roles), with an audience mapper, adds the one
asked for (by default, the configured ones).

Belt and braces: apikm reads the token Keycloak returned and refuses to hand it out when it
carries any realm or client role outside the key's effective roles (a realm changed by hand,
a composite role whose parts the key lacks) or outlives the key.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from prometheus_client import Counter

from apikm.identity.principal import roles_from_claims

# Keycloak accepts client scope names made of these characters (RFC 6749 scope-token); every
# other character of a role name, and "%" itself, is percent-encoded: one role, one name.
_SCOPE_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"\\%')
MAX_SCOPE_NAME = 255  # Keycloak's column
ROLE_ATTRIBUTE = "apikm.role"  # on each role scope: the role it carries, as apikm writes it
AUDIENCE_ATTRIBUTE = "apikm.audience"  # on each audience scope: the audience it adds
# Clients whose roles no apikm token carries: Keycloak's own administration.
UNNARROWED_CLIENTS = frozenset({"realm-management", "broker"})
# The one role apikm's exchange client keeps in direct scope, so that its service account may
# link owners (Keycloak's admin API asks the client's scope, not its client scopes).
LINK_ROLE = "realm-management:manage-users"

TOKENS_REFUSED = Counter(
    "apikm_keycloak_tokens_refused_total",
    "Keycloak tokens apikm obtained and refused to hand out", ["reason"])


class ScopeRequestError(ValueError):
    """The caller's ``scope`` asks for something apikm decides itself."""


def role_scope_prefix(alias: str) -> str:
    return f"{alias}.role."


def audience_scope_prefix(alias: str) -> str:
    return f"{alias}.aud."


def role_scope_name(alias: str, role: str) -> str:
    """The client scope that carries ``role`` ("name" or "client_id:name") for this alias."""
    return role_scope_prefix(alias) + quote(role, safe=_SCOPE_SAFE)


def audience_scope_name(alias: str, audience: str) -> str:
    """The client scope that adds ``audience`` to a token's ``aud``."""
    return audience_scope_prefix(alias) + quote(audience, safe=_SCOPE_SAFE)


def inexpressible_roles(roles: Iterable[str], alias: str) -> list[str]:
    """Roles no client scope set up by apikm can carry: Keycloak could not issue them alone."""
    refused = []
    for role in roles:
        client, sep, _name = role.partition(":")
        if role == LINK_ROLE:
            continue  # in the client's direct scope: always reachable
        if (sep and client in UNNARROWED_CLIENTS) or \
                len(role_scope_name(alias, role)) > MAX_SCOPE_NAME:
            refused.append(role)
    return sorted(refused)


def requested_scope(alias: str, roles: Iterable[str], audiences: Iterable[str],
                    caller_scope: str | None) -> str:
    """``openid``, the caller's own scopes, one role scope per role of the key and one
    audience scope per audience wanted."""
    prefixes = (role_scope_prefix(alias), audience_scope_prefix(alias))
    asked = (caller_scope or "").split()
    if any(scope.startswith(prefixes) for scope in asked):
        raise ScopeRequestError(f"scopes starting with {prefixes[0]!r} or {prefixes[1]!r} are "
                                "chosen by apikm from the key; leave them out")
    names = ["openid", *asked,
             *sorted(role_scope_name(alias, r) for r in roles if r != LINK_ROLE),
             *sorted(audience_scope_name(alias, a) for a in audiences)]
    return " ".join(dict.fromkeys(names))


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT apikm just received from Keycloak's token endpoint itself (over
    its own connection, so there is nothing to verify); ``ValueError`` if it is no JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not a JWT") from exc
    if not isinstance(payload, dict):
        raise ValueError("not a JWT")
    return payload


def roles_beyond(claims: Mapping[str, Any], allowed: frozenset[str]) -> frozenset[str]:
    """Realm and client roles in the token that the key does not carry."""
    return roles_from_claims(claims) - allowed


def audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [str(a) for a in aud]
    return []
