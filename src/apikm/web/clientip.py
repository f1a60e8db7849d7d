"""The client's address: the TCP peer, or what a trusted proxy says in one configured header.

Only the header named by ``APIKM_CLIENT_IP_HEADER`` is believed, and only when the TCP peer
is one of ``APIKM_TRUSTED_PROXIES``. A proxy that sets ``X-Real-IP`` usually passes the
client's own ``X-Forwarded-For`` through untouched (and the other way round), so believing
whichever header is present lets a client name any address it likes.

``X-Forwarded-For`` is a chain: each proxy appends the address that connected to it. The
rightmost entry was written by our peer, a trusted proxy, so it is the truth; an entry further
left is the truth only when the entry to its right is itself a trusted proxy (which wrote it).
So the chain is walked from the right and stops at the first address that is not a trusted
proxy: that is the client. When every entry is a trusted proxy, the first entry is the
client, an internal one. Anything else (``X-Real-IP``) holds one address.

Who may speak for others (a gateway's ``client_ip`` in ``/v1/verify``) is decided with
``is_trusted`` on the TCP peer, never on a resolved address.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from starlette.types import Scope

from apikm.networks import address_in, parse_address, parse_networks

FORWARDED_FOR = "x-forwarded-for"
REAL_IP = "x-real-ip"
CLIENT_IP_HEADERS = (FORWARDED_FOR, REAL_IP)
# More hops than any real proxy chain; bounds the work a long header can cause.
MAX_FORWARDED_HOPS = 32


class ClientAddressResolver:
    def __init__(self, trusted_proxies: Sequence[str], header: str = FORWARDED_FOR) -> None:
        header = header.strip().lower()
        if header not in CLIENT_IP_HEADERS:
            raise ValueError(f"client address header must be one of {CLIENT_IP_HEADERS}")
        self._trusted = parse_networks(trusted_proxies)
        self._header = header.encode("ascii")
        self._chain = header == FORWARDED_FOR
        # Parsing addresses dominated the verify route's own cost; peers repeat, so remember.
        self.is_trusted = functools.lru_cache(maxsize=4096)(self._is_trusted)

    def _is_trusted(self, address: str) -> bool:
        return address_in(address, self._trusted)

    def resolve(self, scope: Scope, headers: dict[bytes, bytes] | None = None) -> str:
        """The client's address; ``headers``: the request's headers as a dict, when the
        caller has built it already."""
        client = scope.get("client")
        peer: str = client[0] if client else ""
        if not self.is_trusted(peer):
            return peer
        if headers is None:
            headers = dict(scope["headers"])
        raw = headers.get(self._header)
        if not raw:
            return peer
        value = raw.decode("latin-1")
        if not self._chain:
            return _address(value) or peer
        believed = peer  # the last address known to be a trusted proxy's
        for hop in reversed(value.rsplit(",", MAX_FORWARDED_HOPS)):
            if not hop.strip():
                continue
            address = _address(hop)
            if address is None:  # the proxy that wrote it did not say who its client was
                return believed
            if not self.is_trusted(address):
                return address
            believed = address
        return believed


def _address(text: str) -> str | None:
    """The address in canonical form ("::ffff:1.2.3.4" read as 1.2.3.4), or None; an IPv6
    zone ("fe80::1%eth0") means nothing on another host and is refused."""
    text = text.strip()
    if len(text) > _LONGEST_ADDRESS or "%" in text:
        return None
    return _canonical(text)


_LONGEST_ADDRESS = len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")


@functools.lru_cache(maxsize=4096)  # keys are short: see _address
def _canonical(text: str) -> str | None:
    address = parse_address(text)
    return None if address is None else str(address)
