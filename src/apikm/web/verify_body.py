"""The body of ``POST /v1/verify``, checked by hand: three fields, no model machinery."""

from __future__ import annotations

from typing import Any

import orjson

from apikm.networks import parse_address

MAX_REQUIRED_ROLES = 100


class BadVerifyRequest(ValueError):
    pass


def parse_verify_body(raw: bytes) -> tuple[str, list[str], str | None]:
    """(key, required roles, client_ip) or ``BadVerifyRequest`` saying what is wrong."""
    try:
        # orjson: a fifth of json's time; bad UTF-8, NaN, deep nesting and integers past
        # 64 bits are all refused as JSONDecodeError (a ValueError).
        body: Any = orjson.loads(raw)
    except ValueError:
        raise BadVerifyRequest("body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadVerifyRequest("body must be a JSON object")
    key = body.get("key")
    if not isinstance(key, str):
        raise BadVerifyRequest("'key' must be a string")
    roles = body.get("required_roles", [])
    if (not isinstance(roles, list) or len(roles) > MAX_REQUIRED_ROLES
            or not all(isinstance(r, str) and 0 < len(r) <= 255 for r in roles)):
        raise BadVerifyRequest(
            f"'required_roles' must be a list of at most {MAX_REQUIRED_ROLES} role names")
    client_ip = body.get("client_ip")
    if client_ip is not None:
        # No IPv6 zone suffix ("fe80::1%eth0"): it names an interface of the sender's host,
        # means nothing here, and would not fit the stored last-used address.
        if not isinstance(client_ip, str) or "%" in client_ip:
            raise BadVerifyRequest("'client_ip' must be an IP address string")
        address = parse_address(client_ip)
        if address is None:
            raise BadVerifyRequest("'client_ip' is not a valid IP address")
        client_ip = str(address)
    return key, roles, client_ip  # any length: the format check refuses a wrong one first
