"""Properties of client address resolution (Hypothesis): it never raises, an untrusted peer
is always answered with itself, and a trusted one with itself or an address it forwarded in
the one configured header (never the other)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from apikm.networks import parse_address
from apikm.web.clientip import CLIENT_IP_HEADERS, ClientAddressResolver

TRUSTED = ["127.0.0.0/8", "10.0.0.0/8", "::1/128", "fd00::/8"]
RESOLVERS = {name: ClientAddressResolver(TRUSTED, header=name) for name in CLIENT_IP_HEADERS}

addresses = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str),
                      st.sampled_from(["127.0.0.1", "10.1.2.3", "::1", "::ffff:127.0.0.1",
                                       "fd00::5", "198.51.100.7"]))
junk = st.one_of(st.text(max_size=30), st.sampled_from(["unknown", "fe80::1%eth0", "", " ",
                                                        "1.2.3.4:80", "[::1]"]))
hops = st.lists(st.one_of(addresses, junk), max_size=8)
header_bytes = st.one_of(
    hops.map(lambda items: ", ".join(items).encode("utf-8", "replace")),
    st.binary(max_size=120))
peers = st.one_of(addresses, junk)


def _scope(peer: str | None, headers: dict[bytes, bytes]) -> dict[str, Any]:
    return {"client": None if peer is None else (peer, 1234), "headers": list(headers.items())}


def _forwarded(value: bytes) -> set[str]:
    """Every address named anywhere in a header value, in canonical form."""
    found = set()
    for part in value.decode("latin-1").split(","):
        address = parse_address(part)
        if address is not None:
            found.add(str(address))
    return found


@given(st.one_of(st.none(), peers), st.dictionaries(
    st.sampled_from([b"x-forwarded-for", b"x-real-ip", b"forwarded", b"x-other"]),
    header_bytes, max_size=4), st.sampled_from(CLIENT_IP_HEADERS), st.booleans())
def test_resolution_never_raises_and_stays_within_what_it_was_told(
        peer: str | None, headers: dict[bytes, bytes], header: str, pass_dict: bool) -> None:
    resolver = RESOLVERS[header]
    resolved = resolver.resolve(_scope(peer, headers), headers if pass_dict else None)
    assert isinstance(resolved, str)
    if peer is None:
        assert resolved == ""
    elif not resolver.is_trusted(peer):
        assert resolved == peer  # headers mean nothing from an untrusted peer
    else:
        believed = _forwarded(headers.get(header.encode(), b""))
        assert resolved == peer or resolved in believed


@given(addresses.filter(lambda a: not RESOLVERS["x-forwarded-for"].is_trusted(a)),
       st.lists(addresses, max_size=5), st.lists(addresses, max_size=3))
def test_the_client_is_the_rightmost_untrusted_hop(
        client: str, spoofed: list[str], proxies: list[str]) -> None:
    """Whatever the client wrote to the left, the first untrusted address from the right is
    the answer, as long as every hop to its right is a trusted proxy."""
    resolver = RESOLVERS["x-forwarded-for"]
    chain = [*spoofed, client, *(p for p in proxies if resolver.is_trusted(p))]
    headers = {b"x-forwarded-for": ", ".join(chain).encode(), b"x-real-ip": b"127.0.0.1"}
    assert resolver.resolve(_scope("127.0.0.1", headers)) == str(parse_address(client))


@given(peers, header_bytes)
def test_the_other_header_is_never_believed(peer: str, value: bytes) -> None:
    for header, other in (("x-forwarded-for", b"x-real-ip"), ("x-real-ip", b"x-forwarded-for")):
        resolver = RESOLVERS[header]
        assert resolver.resolve(_scope(peer, {other: value})) == peer
