"""The client's address, believing ``X-Forwarded-For`` / ``X-Real-IP`` only from trusted proxies."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from starlette.types import Scope

from apikm.networks import address_in, parse_address, parse_networks


class ClientAddressResolver:
    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self._trusted = parse_networks(trusted_proxies)
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
        forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1")
        # Walk right to left: the rightmost address not added by one of our proxies is the
        # client; anything left of it could have been written by the client itself.
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return hop if _is_ip(hop) else peer
        if hops:  # every hop is one of our proxies: the first one is where it started
            return hops[0] if _is_ip(hops[0]) else peer
        real_ip = headers.get(b"x-real-ip", b"").decode("latin-1").strip()
        return real_ip if _is_ip(real_ip) else peer


def _is_ip(text: str) -> bool:
    return parse_address(text) is not None
