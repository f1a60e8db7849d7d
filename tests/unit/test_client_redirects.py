"""The client's key must not follow a redirect to another host (e.g. a presigned URL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import requests

from apikm.client import APIKeyAuth

KEY = "apikm_" + "A" * 42
seen: list[dict[str, str]] = []


class Recorder(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/start":
            # same machine, other host name: another origin for the HTTP client
            port = self.server.server_address[1]
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{port}/file")
            self.end_headers()
            return
        seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("client", ["httpx", "requests"])
def test_default_auth_is_dropped_on_cross_origin_redirect(origin: str, client: str) -> None:
    seen.clear()
    if client == "httpx":
        response = httpx.get(f"{origin}/start", auth=APIKeyAuth(KEY), follow_redirects=True)
    else:
        response = requests.get(f"{origin}/start", auth=APIKeyAuth(KEY), timeout=10)
    assert response.status_code == 200 and len(seen) == 1
    assert KEY not in str(seen[0])


def test_default_auth_is_sent_as_bearer(origin: str) -> None:
    seen.clear()
    httpx.get(f"{origin}/file", auth=APIKeyAuth(KEY))
    assert seen[0]["authorization"] == f"Bearer {KEY}"
