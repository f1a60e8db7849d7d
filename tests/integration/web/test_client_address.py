"""The client's address behind a real nginx that sets only ``X-Real-IP``.

Such a proxy passes the client's own ``X-Forwarded-For`` through untouched. apikm is told
which header its proxy writes (``APIKM_CLIENT_IP_HEADER=x-real-ip``) and believes no other:
a client on 127.0.0.7 cannot pass for 10.9.9.5 (a key locked to 10.9.9.0/24) nor for
127.0.0.1 (the introspection network).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from apikm.devstack.keycloak import StackInfo
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.gateways import Gateway, client_from, nginx_gateway
from tests.support.keys import create_key, user_client

pytestmark = pytest.mark.integration

# The proxy sets X-Real-IP and leaves X-Forwarded-For as the client sent it.
REAL_IP_ONLY = """
    location = /real-ip/auth {
        proxy_pass http://apikm/v1/auth;
        proxy_set_header X-Real-IP $remote_addr;
    }
    location = /oauth/introspect {
        proxy_pass http://apikm;
        proxy_set_header X-Real-IP $remote_addr;
    }
"""


@pytest.fixture(scope="module")
def real_ip_apikm(keycloak: StackInfo) -> Iterator[ApikmServer]:
    with apikm_server(None, keycloak.base_url, client_ip_header="x-real-ip",
                      introspect_networks="127.0.0.1/32") as server:
        yield server


@pytest.fixture(scope="module")
def proxy(real_ip_apikm: ApikmServer) -> Iterator[Gateway]:
    with nginx_gateway(real_ip_apikm.url, "http://127.0.0.1:9", REAL_IP_ONLY) as gateway:
        yield gateway


def test_a_forwarded_for_sent_by_the_client_is_not_believed(
        real_ip_apikm: ApikmServer, proxy: Gateway, token: Callable[[str], str]) -> None:
    owner = user_client(real_ip_apikm.url, token("bob"))
    locked, _ = create_key(owner, ["analyst"], allowed_networks=["10.9.9.0/24"])
    mine, _ = create_key(owner, ["analyst"], allowed_networks=["127.0.0.7/32"])
    with client_from("127.0.0.7", proxy.url) as client:
        spoofed = client.get("/real-ip/auth", headers={"X-API-Key": locked,
                                                        "X-Forwarded-For": "10.9.9.5"})
        assert spoofed.status_code == 403, spoofed.text
        assert spoofed.json()["error"] == "IP_NOT_ALLOWED"
        honest = client.get("/real-ip/auth", headers={"X-API-Key": mine,
                                                       "X-Forwarded-For": "10.9.9.5"})
        assert honest.status_code == 200, honest.text


def test_introspection_is_not_granted_by_a_forwarded_header(
        real_ip_apikm: ApikmServer, proxy: Gateway) -> None:
    form = {"token": "apikm_nonsense"}
    with client_from("127.0.0.7", proxy.url) as client:
        spoofed = client.post("/oauth/introspect", data=form,
                              headers={"X-Forwarded-For": "127.0.0.1"})
        assert spoofed.status_code == 401, spoofed.text
    with client_from("127.0.0.1", proxy.url) as client:  # a caller in the network
        assert client.post("/oauth/introspect", data=form).json() == {"active": False}
    # Straight to apikm from outside the network: X-Real-IP is believed only from proxies.
    with client_from("127.0.0.7", real_ip_apikm.url) as client:
        direct = client.post("/oauth/introspect", data=form, headers={"X-Real-IP": "127.0.0.1"})
        assert direct.status_code == 401, direct.text
