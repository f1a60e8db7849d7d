"""apikm: personal API keys for Keycloak users."""

__version__ = "0.1.0"
