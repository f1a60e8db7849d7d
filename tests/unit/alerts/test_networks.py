"""The network of a client address: /24 for IPv4, /48 for IPv6."""

from __future__ import annotations

import pytest

from apikm.alerts.networks import canonical_address, network_of


@pytest.mark.parametrize(("address", "network"), [
    ("10.1.2.3", "10.1.2.0/24"),
    ("10.1.2.99", "10.1.2.0/24"),
    ("10.1.3.1", "10.1.3.0/24"),
    ("::ffff:10.1.2.3", "10.1.2.0/24"),  # an IPv4 peer seen on a dual-stack socket
    ("2001:db8:1:2::5", "2001:db8:1::/48"),
    ("2001:db8:1:ffff::1", "2001:db8:1::/48"),
    ("2001:db8:2::1", "2001:db8:2::/48"),
    ("::1", "::/48"),
])
def test_network_of(address: str, network: str) -> None:
    assert network_of(address) == network


@pytest.mark.parametrize("text", [None, "", "not an address", "10.1.2", "999.1.1.1",
                                  "10.1.2.0/24"])
def test_no_network_for_what_is_no_address(text: str | None) -> None:
    assert network_of(text) is None


def test_canonical_address() -> None:
    assert canonical_address("::ffff:10.1.2.3") == "10.1.2.3"
    assert canonical_address("2001:DB8::0:1") == "2001:db8::1"
    assert canonical_address("fe80::1%eth0") is None  # a zone means nothing elsewhere
    assert canonical_address("nonsense") is None
