"""What apikm publishes so others can check its tokens: JWKS and a discovery document."""

from __future__ import annotations

from typing import Any

from apikm.tokens.exchange import TOKEN_EXCHANGE_GRANT
from apikm.tokens.signing import SigningKeys

JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
INTROSPECT_PATH = "/oauth/introspect"


def jwks_document(keys: SigningKeys) -> dict[str, Any]:
    return keys.jwks()


def discovery_document(issuer: str, signing_alg: str) -> dict[str, Any]:
    """Enough of OpenID Connect Discovery for JWT libraries that start from an issuer URL.

    apikm is no full OpenID provider (no authorization endpoint, no ID tokens): it issues
    access tokens by token exchange only, which is what ``grant_types_supported`` says.
    """
    return {
        "issuer": issuer,
        "jwks_uri": issuer + JWKS_PATH,
        "token_endpoint": issuer + TOKEN_PATH,
        "introspection_endpoint": issuer + INTROSPECT_PATH,
        "grant_types_supported": [TOKEN_EXCHANGE_GRANT],
        "token_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["none", "bearer"],
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [signing_alg],
        "token_endpoint_auth_signing_alg_values_supported": [signing_alg],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "azp", "scope",
                             "realm_access", "resource_access", "groups",
                             "preferred_username", "email", "key_id"],
    }
