"""A small resource server that trusts only Keycloak: it validates the bearer token's signature
against the realm's JWKS, its issuer, expiry and audience, and decides by the token's roles.

``GET`` needs the client role ``<audience>:read``, any other method ``<audience>:write``. The
answer names the roles it read from the token, so tests can compare them with the key's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from apikm.identity.principal import roles_from_claims
from tests.support.http_server import serve_in_thread


def _handler(issuer: str, audience: str, keys: KeySet) -> type[BaseHTTPRequestHandler]:
    class ResourceServer(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _claims(self) -> dict[str, Any] | None:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return None
            try:
                decoded = jwt.decode(token, keys, algorithms=["RS256", "ES256", "PS256"])
                jwt.JWTClaimsRegistry(iss={"essential": True, "value": issuer},
                                      exp={"essential": True}).validate(decoded.claims)
            except (JoseError, ValueError):
                return None
            return dict(decoded.claims)

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            claims = self._claims()
            if claims is None:
                self._send(401, {"error": "invalid_token"})
                return
            aud = claims.get("aud")
            audiences = [aud] if isinstance(aud, str) else list(aud or [])
            roles = sorted(roles_from_claims(claims))
            if audience not in audiences:
                self._send(401, {"error": "invalid_token", "aud": audiences, "roles": roles})
                return
            needed = f"{audience}:{'read' if self.command == 'GET' else 'write'}"
            status = 200 if needed in roles else 403
            self._send(status, {"needed": needed, "roles": roles, "sub": claims.get("sub"),
                                "azp": claims.get("azp")})

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    return ResourceServer


@contextmanager
def keycloak_resource_server(issuer: str, audience: str) -> Iterator[str]:
    """Yields the base URL of a resource server trusting the realm at ``issuer``."""
    certs = httpx.get(f"{issuer}/protocol/openid-connect/certs", timeout=30).json()
    # Keycloak also publishes encryption keys (RSA-OAEP); only signing keys verify tokens.
    keys = KeySet.import_key_set({"keys": [k for k in certs["keys"] if k.get("use") == "sig"]})
    with serve_in_thread(_handler(issuer, audience, keys)) as url:
        yield url
