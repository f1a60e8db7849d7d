"""Pure ASGI middleware (cheap on the hot path): body size limit and an access log.

The access log writes the path without the query string (keys may travel in ``?apikey=``),
and at most ``MAX_LOGGED_PATH`` characters of it: a path is whatever a client sent.
"""

from __future__ import annotations

import json
import string
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("apikm.access")

MAX_LOGGED_PATH = 200
# What a key or a JWT is made of: a cut inside such a run could leave part of a secret that
# the log redaction no longer recognises, so the run at the cut is dropped whole.
_TOKEN_CHARS = string.ascii_letters + string.digits + "_-."


def logged_path(path: str) -> str:
    if len(path) <= MAX_LOGGED_PATH:
        return path
    return path[:MAX_LOGGED_PATH].rstrip(_TOKEN_CHARS) + "…"


class BodyTooLarge(Exception):
    pass


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps({"error": "payload_too_large",
                       "message": f"request body exceeds {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class LimitBodySize:
    """413 for bodies over the limit, except on ``exempt_prefixes``: forward auth never reads
    the body, and a gateway may forward the Content-Length of an upload it protects."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt_prefixes: tuple[str, ...] = (),
                 path_limits: dict[str, int] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_prefixes = exempt_prefixes
        # Paths with a limit of their own (leak reports: GitHub sends many matches at once).
        self.path_limits = path_limits or {}

    def _limit(self, scope: Scope) -> int:
        if not self.path_limits:
            return self.max_bytes
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root):]
        return self.path_limits.get(path, self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await _send_413(send, limit)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _send_413(send, limit)


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            client = scope.get("client")
            log.info("request", method=scope["method"], path=logged_path(scope["path"]),
                     status=status,
                     ms=round((time.perf_counter() - started) * 1000, 2),
                     peer=client[0] if client else None)
