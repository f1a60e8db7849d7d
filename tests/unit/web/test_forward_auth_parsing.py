"""The pure parts of forward auth: credentials, required roles, header encoding."""

from __future__ import annotations

import base64

from apikm.config import Settings
from apikm.web.forward_auth import (
    ForwardAuthRules,
    credential_from_authorization,
    header_value,
    required_roles,
)


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_credentials_from_authorization() -> None:
    assert credential_from_authorization("Bearer  k1 ") == "k1"
    assert credential_from_authorization("bearer k1") == "k1"
    assert credential_from_authorization(_basic("user:k2")) == "k2"
    assert credential_from_authorization(_basic("k3:")) == "k3"  # curl -u KEY:
    assert credential_from_authorization(_basic("user:pa:ss")) == "pa:ss"
    assert credential_from_authorization("Basic not-base64!") is None
    assert credential_from_authorization("Basic " + base64.b64encode(b"\xff:\xfe").decode()) \
        is None
    assert credential_from_authorization("Digest abc") is None
    assert credential_from_authorization("Basic é") is None
    assert credential_from_authorization("Basic") is None


def test_basic_user_name_need_not_be_utf8() -> None:
    """Any user name is accepted, so one that is not UTF-8 must not hide the password."""
    for user in (b"\xff\xfe", b"caf\xe9", b"\x00"):
        encoded = base64.b64encode(user + b":apikm_key").decode()
        assert credential_from_authorization("Basic " + encoded) == "apikm_key"
    assert credential_from_authorization("Basic " + base64.b64encode(b"k:\xff").decode()) \
        is None  # a password that is not UTF-8 is not a key
    assert credential_from_authorization("Bearer") is None


def test_required_roles_union_of_query_and_header() -> None:
    query = (("role", "a"), ("role", " client:b "), ("role", ""), ("other", "x"))
    assert required_roles(query, {b"x-auth-require-roles": b"c, a,"}) == ("a", "c", "client:b")
    assert required_roles(query, {}) == ("a", "client:b")
    assert required_roles((), {}) == ()
    assert required_roles((("role", "r" * 256),), {}) is None
    assert required_roles(tuple(("role", f"r{i}") for i in range(101)), {}) is None
    many = ",".join(f"h{i}" for i in range(150)).encode()
    assert required_roles((), {b"x-auth-require-roles": many}) is None


def test_header_values_stay_latin1_safe() -> None:
    assert header_value("alice") == "alice"
    assert header_value("/staff/gis,/partners") == "/staff/gis,/partners"
    assert header_value("zoë") == "zo%C3%AB"
    assert header_value("50%") == "50%25"
    assert header_value("a\r\nX-Evil: 1") == "a%0D%0AX-Evil: 1"


def test_key_in_the_original_url_of_each_proxy() -> None:
    """nginx (X-Original-URI), ingress-nginx auth-url (X-Original-URL), Traefik and Caddy
    (X-Forwarded-Uri) each name the protected request differently."""
    rules = ForwardAuthRules(Settings(_env_file=None))  # type: ignore[call-arg]
    key = "apikm_" + "a" * 40
    for header in (b"x-original-uri", b"x-original-url", b"x-forwarded-uri"):
        headers = {header: f"https://data.example.org/dem.tif?x=1&apikey={key}".encode()}
        assert rules.find_key(headers, ()) == key, header
    assert rules.find_key({b"x-unrelated-uri": f"/?apikey={key}".encode()}, ()) is None


def test_attribute_headers_one_per_attribute_values_joined() -> None:
    from apikm.web.forward_auth import attribute_headers

    assert attribute_headers({"site": ["a,b", "c"], "Project": "s2 é"}) == [
        (b"x-auth-attr-project", b"s2 %C3%A9"), (b"x-auth-attr-site", b"a%2Cb,c")]
