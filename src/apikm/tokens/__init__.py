"""Tokens apikm issues for keys: signing keys, JWKS, exchange (RFC 8693), introspection."""
