"""``POST /v1/verify``: a bare Starlette endpoint, the hot path.

No dependency injection or model validation machinery here: the body has three fields,
checked by hand, and the work is done by ``Verifier``.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from apikm.verify.codes import Code
from apikm.web.context import AppContext
from apikm.web.errors import error_response

MAX_REQUIRED_ROLES = 100


class BadVerifyRequest(ValueError):
    pass


def parse_verify_body(raw: bytes) -> tuple[str, list[str], str | None]:
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
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
        if not isinstance(client_ip, str):
            raise BadVerifyRequest("'client_ip' must be an IP address string")
        try:
            client_ip = str(ipaddress.ip_address(client_ip.strip()))
        except ValueError:
            raise BadVerifyRequest("'client_ip' is not a valid IP address") from None
    return key, roles, client_ip  # any length: parse_key refuses a wrong one before hashing


async def verify_endpoint(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    try:
        key, required_roles, client_ip = parse_verify_body(await request.body())
    except BadVerifyRequest as exc:
        return error_response(400, "invalid_request", str(exc))
    caller = ctx.addresses.resolve(request.scope)
    # A trusted gateway speaks for its clients: their address is checked against the key's
    # networks and counted by the failure limiter. Anyone else is judged by their own
    # address, whatever client_ip they claim.
    if not (client_ip and ctx.addresses.is_trusted(caller)):
        client_ip = caller
    result = await ctx.verifier.verify(
        key, client_ip=client_ip, limiter_id=client_ip, required_roles=required_roles
    )
    headers = ({"Retry-After": str(result.retry_after)}
               if result.code is Code.RATE_LIMITED and result.retry_after else None)
    return JSONResponse(result.to_json(), headers=headers)
