"""``POST /v1/verify``'s body, checked by hand (orjson): whatever the bytes, a request is
either the three fields or ``BadVerifyRequest`` (a 400), never another exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apikm.web.verify_body import BadVerifyRequest, parse_verify_body

KEY = "apikm_" + "a" * 42


def test_the_three_fields() -> None:
    raw = json.dumps({"key": KEY, "required_roles": ["analyst"],
                      "client_ip": "::ffff:192.0.2.1"}).encode()
    assert parse_verify_body(raw) == (KEY, ["analyst"], "192.0.2.1")
    assert parse_verify_body(json.dumps({"key": KEY}).encode()) == (KEY, [], None)


@pytest.mark.parametrize("raw", [
    b"", b"null", b"[]", b'"key"', b"{", b'{"key": NaN}', b'{"key": 1}',
    b'{"key": "a\xff"}',  # not UTF-8
    b'{"key": "k", "required_roles": [' + b"9" * 400 + b"]}",  # past 64 bits
    b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than any parser recurses
    b'{"key": "k", "required_roles": "analyst"}',
    b'{"key": "k", "required_roles": [""]}',
    b'{"key": "k", "client_ip": "fe80::1%eth0"}',
    b'{"key": "k", "client_ip": "10.0.0.300"}',
])
def test_anything_else_is_a_bad_request(raw: bytes) -> None:
    with pytest.raises(BadVerifyRequest):
        parse_verify_body(raw)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_are_refused(raw: bytes) -> None:
    try:
        key, roles, client_ip = parse_verify_body(raw)
    except BadVerifyRequest:
        return
    assert isinstance(key, str) and all(isinstance(role, str) for role in roles)
    assert client_ip is None or isinstance(client_ip, str)
