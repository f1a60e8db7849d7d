"""Everything token-related the web layer needs, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.config import Settings
from apikm.encryption import encryption_keys
from apikm.tokens.exchange import ApikmMinter, KeycloakMinter, Minter, TokenExchange
from apikm.tokens.introspect import IntrospectionNetworks
from apikm.tokens.keycloak_grant import KeycloakGrant
from apikm.tokens.signing import SigningKeys
from apikm.tokens.upstream import UpstreamTokens
from apikm.verify.verifier import Verifier


@dataclass
class TokenServices:
    issuer: str
    keys: SigningKeys
    minter: Minter
    exchange: TokenExchange
    upstream: UpstreamTokens
    introspectors: IntrospectionNetworks


def signing_keys(settings: Settings, engine: AsyncEngine) -> SigningKeys:
    """The shared key set; ``start()`` it before signing. PEM files of an older
    installation under ``APIKM_DATA_DIR/signing-keys`` are imported into an empty table."""
    return SigningKeys(engine, encryption_keys(settings), settings.signing_alg,
                       legacy_dir=settings.data_dir / "signing-keys")


def build_token_services(settings: Settings, verifier: Verifier, http: httpx.AsyncClient,
                         engine: AsyncEngine) -> TokenServices:
    keys = signing_keys(settings, engine)
    minter: Minter
    if settings.exchange_mode == "keycloak":
        minter = KeycloakMinter(KeycloakGrant(settings, http, keys), settings)
    else:
        minter = ApikmMinter(settings, keys)
    return TokenServices(
        issuer=settings.base_url,
        keys=keys,
        minter=minter,
        exchange=TokenExchange(verifier, minter),
        upstream=UpstreamTokens(minter),
        introspectors=IntrospectionNetworks(settings.introspect_networks),
    )
