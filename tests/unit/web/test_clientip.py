from __future__ import annotations

from typing import Any

from apikm.web.clientip import ClientAddressResolver

RESOLVER = ClientAddressResolver(["127.0.0.1/32", "10.0.0.0/8"])


def scope(peer: str, **headers: str) -> dict[str, Any]:
    return {"client": (peer, 1234),
            "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}


def test_untrusted_peer_headers_are_ignored() -> None:
    assert RESOLVER.resolve(scope("203.0.113.9", x_forwarded_for="1.2.3.4")) == "203.0.113.9"


def test_trusted_proxy_forwarded_for_rightmost_untrusted_hop() -> None:
    forwarded = "6.6.6.6, 198.51.100.7, 10.1.1.1"  # client could have written the first entry
    assert RESOLVER.resolve(scope("127.0.0.1", x_forwarded_for=forwarded)) == "198.51.100.7"


def test_trusted_proxy_real_ip_and_fallbacks() -> None:
    assert RESOLVER.resolve(scope("127.0.0.1", x_real_ip="198.51.100.8")) == "198.51.100.8"
    assert RESOLVER.resolve(scope("127.0.0.1")) == "127.0.0.1"
    assert RESOLVER.resolve(scope("127.0.0.1", x_forwarded_for="not-an-ip")) == "127.0.0.1"


def test_no_client_in_scope() -> None:
    assert RESOLVER.resolve({"client": None, "headers": []}) == ""


def test_real_ip_cannot_override_a_fully_trusted_forwarded_chain() -> None:
    # every hop is a trusted proxy: the chain's first entry is the client, not X-Real-IP
    resolved = RESOLVER.resolve(scope("127.0.0.1", x_forwarded_for="10.0.0.5, 10.0.0.6",
                                      x_real_ip="198.51.100.99"))
    assert resolved == "10.0.0.5"


def test_ipv4_mapped_peer_is_recognised_as_trusted() -> None:
    resolved = RESOLVER.resolve(scope("::ffff:127.0.0.1", x_forwarded_for="198.51.100.3"))
    assert resolved == "198.51.100.3"
