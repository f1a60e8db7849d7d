from __future__ import annotations

from typing import Any

import pytest

from apikm.web.clientip import MAX_FORWARDED_HOPS, ClientAddressResolver

RESOLVER = ClientAddressResolver(["127.0.0.1/32", "10.0.0.0/8"])
REAL_IP = ClientAddressResolver(["127.0.0.1/32", "10.0.0.0/8"], header="x-real-ip")


def scope(peer: str, **headers: str) -> dict[str, Any]:
    return {"client": (peer, 1234),
            "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}


def test_untrusted_peer_headers_are_ignored() -> None:
    assert RESOLVER.resolve(scope("203.0.113.9", x_forwarded_for="1.2.3.4")) == "203.0.113.9"
    assert REAL_IP.resolve(scope("203.0.113.9", x_real_ip="1.2.3.4")) == "203.0.113.9"


def test_trusted_proxy_forwarded_for_rightmost_untrusted_hop() -> None:
    forwarded = "6.6.6.6, 198.51.100.7, 10.1.1.1"  # client could have written the first entry
    assert RESOLVER.resolve(scope("127.0.0.1", x_forwarded_for=forwarded)) == "198.51.100.7"


def test_only_the_configured_header_is_believed() -> None:
    # A proxy that sets X-Real-IP only passes the client's own X-Forwarded-For through: with
    # APIKM_CLIENT_IP_HEADER=x-real-ip that header means nothing, whatever it claims.
    spoofed = scope("127.0.0.1", x_forwarded_for="10.9.9.5", x_real_ip="198.51.100.8")
    assert REAL_IP.resolve(spoofed) == "198.51.100.8"
    assert REAL_IP.resolve(scope("127.0.0.1", x_forwarded_for="127.0.0.1")) == "127.0.0.1"
    # ... and the other way round: X-Real-IP is not a fallback for X-Forwarded-For.
    assert RESOLVER.resolve(scope("127.0.0.1", x_real_ip="198.51.100.8")) == "127.0.0.1"


def test_fallbacks_to_the_peer() -> None:
    assert RESOLVER.resolve(scope("127.0.0.1")) == "127.0.0.1"
    assert RESOLVER.resolve(scope("127.0.0.1", x_forwarded_for="not-an-ip")) == "127.0.0.1"
    assert REAL_IP.resolve(scope("127.0.0.1", x_real_ip="not-an-ip")) == "127.0.0.1"
    assert REAL_IP.resolve(scope("127.0.0.1", x_real_ip="1.2.3.4, 5.6.7.8")) == "127.0.0.1"


def test_an_unreadable_hop_ends_the_walk_at_the_proxy_that_wrote_it() -> None:
    forwarded = "198.51.100.1, unknown, 10.0.0.6"
    assert RESOLVER.resolve(scope("127.0.0.1", x_forwarded_for=forwarded)) == "10.0.0.6"


def test_no_client_in_scope() -> None:
    assert RESOLVER.resolve({"client": None, "headers": []}) == ""


def test_a_fully_trusted_chain_is_believed_to_its_start() -> None:
    # each hop was written by the trusted proxy to its right, so the first entry is the
    # client (an internal one: it is in a trusted network itself)
    resolved = RESOLVER.resolve(scope("127.0.0.1", x_forwarded_for="10.0.0.5, 10.0.0.6",
                                      x_real_ip="198.51.100.99"))
    assert resolved == "10.0.0.5"


def test_ipv4_mapped_addresses() -> None:
    resolved = RESOLVER.resolve(scope("::ffff:127.0.0.1", x_forwarded_for="198.51.100.3"))
    assert resolved == "198.51.100.3"
    mapped = RESOLVER.resolve(scope("127.0.0.1", x_forwarded_for="::ffff:198.51.100.4"))
    assert mapped == "198.51.100.4"


def test_the_walk_is_bounded() -> None:
    hops = ", ".join(["198.51.100.1"] + ["10.0.0.1"] * (MAX_FORWARDED_HOPS + 5))
    assert RESOLVER.resolve(scope("127.0.0.1", x_forwarded_for=hops)) == "10.0.0.1"


def test_headers_given_by_the_caller_are_used() -> None:
    headers = {b"x-forwarded-for": b"198.51.100.5"}
    assert RESOLVER.resolve(scope("127.0.0.1"), headers) == "198.51.100.5"


@pytest.mark.parametrize("header", ["x-forwarded-for", "X-Real-IP"])
def test_header_names_are_case_insensitive(header: str) -> None:
    resolver = ClientAddressResolver(["127.0.0.1/32"], header=header)
    value = "198.51.100.6"
    assert resolver.resolve(scope("127.0.0.1", **{header.lower().replace("-", "_"): value})) \
        == value


def test_is_trusted() -> None:
    assert RESOLVER.is_trusted("10.1.2.3") and RESOLVER.is_trusted("::ffff:127.0.0.1")
    assert not RESOLVER.is_trusted("198.51.100.1") and not RESOLVER.is_trusted("")


def test_zones_and_overlong_entries_are_unreadable() -> None:
    for hop in ("fe80::1%eth0", "fe80::1%" + "a" * 300, "1" * 100):
        forwarded = f"198.51.100.1, {hop}"
        assert RESOLVER.resolve(scope("127.0.0.1", x_forwarded_for=forwarded)) == "127.0.0.1"
        assert REAL_IP.resolve(scope("127.0.0.1", x_real_ip=hop)) == "127.0.0.1"
