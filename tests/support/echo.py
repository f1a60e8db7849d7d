"""A small real upstream service: answers every request with what it received, as JSON.

Stands for the service behind a gateway. ``/once/...`` answers 401 to the first ``Authorization``
value it sees and accepts any other (to test clients that refresh a token and retry).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

from tests.support.http_server import serve_in_thread


class _Echo(BaseHTTPRequestHandler):
    seen: set[str]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        authorization = self.headers.get("Authorization", "")
        status = 200
        if self.path.startswith("/once/"):
            self.seen.add(authorization)
            status = 401 if self.seen == {authorization} else 200
        body = json.dumps({"method": self.command, "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def echo_server() -> Iterator[str]:
    """Yields the base URL of a running echo service on loopback."""
    handler = type("Echo", (_Echo,), {"seen": set()})
    with serve_in_thread(handler) as url:
        yield url
