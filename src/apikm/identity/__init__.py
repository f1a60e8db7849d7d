"""Keycloak: access-token validation, the owners' synced identity."""
