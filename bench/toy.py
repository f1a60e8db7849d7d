"""The "toy check" apikm is measured against: ``sha256(key)`` and a dict lookup on a bare
Starlette route, served by uvicorn like apikm. It knows one key, given in ``TOY_KEY``.

    TOY_KEY=... python -m uvicorn bench.toy:app --port 9100 --no-access-log
"""

from __future__ import annotations

import hashlib
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

KEYS = {hashlib.sha256(os.environ.get("TOY_KEY", "").encode()).hexdigest(): "alice"}


async def check(request: Request) -> Response:
    key = request.headers.get("x-api-key", "")
    user = KEYS.get(hashlib.sha256(key.encode()).hexdigest())
    if user is None:
        return Response(status_code=401)
    return Response(status_code=200, headers={"X-Auth-User": user})


app = Starlette(routes=[Route("/check", check, methods=["GET", "POST"])])
