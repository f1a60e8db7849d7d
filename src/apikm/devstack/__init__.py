"""Development stack: a real Keycloak with the demo realm, fetched and run by apikm itself."""

from apikm.devstack.keycloak import DEMO_REALM, KEYCLOAK_VERSION, StackInfo, down, status, up

__all__ = ["DEMO_REALM", "KEYCLOAK_VERSION", "StackInfo", "down", "status", "up"]
