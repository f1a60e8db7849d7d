"""The real parts every gateway test needs: Keycloak, apikm, an echo upstream, keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from apikm.devstack import keycloak as devstack
from tests.support.apikm_server import apikm_server
from tests.support.echo import echo_server
from tests.support.gateway_checks import Setting
from tests.support.gateways import Gateway
from tests.support.keycloak_tokens import access_token
from tests.support.keys import create_key, user_client

FAILURE_LIMIT = "5/minute"

GatewayFactory = Callable[[str, str], AbstractContextManager[Gateway]]


@contextmanager
def gateway_setting(start_gateway: GatewayFactory,
                    failure_limit: str = FAILURE_LIMIT) -> Iterator[Setting]:
    keycloak = devstack.up()
    with apikm_server(None, keycloak.base_url, rate_limit=failure_limit) as apikm, \
            echo_server() as upstream, start_gateway(apikm.url, upstream) as gateway:
        alice = user_client(apikm.url, access_token(keycloak.issuer, "alice"))
        bob = user_client(apikm.url, access_token(keycloak.issuer, "bob"))
        alice_key, _ = create_key(alice, ["analyst", "geoserver:read"])
        bob_key, _ = create_key(bob, ["analyst"])
        revoked_key, revoked = create_key(bob, ["analyst"])
        bob.delete(f"/v1/keys/{revoked['id']}").raise_for_status()
        yield Setting(apikm, gateway, alice_key, bob_key, revoked_key)
