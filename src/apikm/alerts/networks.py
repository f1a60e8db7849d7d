"""The network a client address belongs to, for "first use from a new network" alerts."""

from __future__ import annotations

import functools
import ipaddress

from apikm.networks import parse_address

IPV4_PREFIX = 24  # one site or provider block
IPV6_PREFIX = 48  # one site (RFC 6177: sites get a /48 or /56)


@functools.lru_cache(maxsize=65536)  # client addresses repeat
def network_of(address: str | None) -> str | None:
    """"10.1.2.0/24" for 10.1.2.3, "2001:db8:1::/48" for 2001:db8:1:2::5 (an IPv4-mapped
    IPv6 address counts as its IPv4 address); None for anything that is not an address."""
    parsed = parse_address(address)
    if parsed is None:
        return None
    prefix = IPV4_PREFIX if parsed.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network((parsed, prefix), strict=False))


def canonical_address(address: str | None) -> str | None:
    """The address as alerts show it ("::ffff:10.1.2.3" as 10.1.2.3), or None."""
    parsed = parse_address(address)
    if parsed is None or getattr(parsed, "scope_id", None):
        return None
    return str(parsed)
