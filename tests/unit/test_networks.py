from __future__ import annotations

import ipaddress

from apikm.networks import address_in, parse_address, parse_networks

NETWORKS = parse_networks(["10.0.0.0/8", "2001:db8::/32"])


def test_parse_address_unmaps_ipv4_and_refuses_garbage() -> None:
    assert parse_address("::ffff:10.1.2.3") == ipaddress.ip_address("10.1.2.3")
    assert parse_address(" 2001:db8::1 ") == ipaddress.ip_address("2001:db8::1")
    for bad in (None, "", "10.0.0.256", "host.example", "10.0.0.0/8"):
        assert parse_address(bad) is None


def test_address_in() -> None:
    assert address_in("10.9.9.9", NETWORKS) and address_in("::ffff:10.9.9.9", NETWORKS)
    assert address_in("2001:db8:5::1", NETWORKS)
    assert not address_in("11.0.0.1", NETWORKS) and not address_in(None, NETWORKS)
    assert not address_in("10.0.0.1", ())
