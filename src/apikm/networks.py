"""One way to ask "is this address in these networks?", for every check in apikm."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=65536)  # on every gated request: client addresses repeat
def parse_address(text: str | None) -> IPAddress | None:
    """The address, with "::ffff:10.1.2.3" read as 10.1.2.3 (dual-stack sockets report
    IPv4 peers that way); None for anything that is not an address."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def address_in(text: str | None, networks: Sequence[IPNetwork]) -> bool:
    address = parse_address(text)
    return address is not None and any(address in network for network in networks)
