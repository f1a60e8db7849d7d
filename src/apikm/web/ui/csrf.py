"""CSRF protection for every state-changing UI request: a session-bound synchronizer token.

The token is random per session and lives inside the encrypted session cookie; pages put it
in a hidden ``csrf_token`` field, scripts send it as ``X-CSRF-Token``. A cross-site page can
make the browser send the cookie but cannot read the token, so it cannot forge a request.
``SameSite=Lax`` on the cookie is a second line, not the only one.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class CsrfRefused(Exception):
    """A state-changing request without the right token; answered with 403."""


async def submitted_token(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


def tokens_match(expected: str, submitted: str) -> bool:
    if not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())


async def check_csrf(request: Request, expected: str | None) -> None:
    """Raise CsrfRefused unless the request carries this session's token."""
    if expected is None or not tokens_match(expected, await submitted_token(request)):
        raise CsrfRefused
