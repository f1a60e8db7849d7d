"""ServiceToken against a real (tiny, local) token endpoint: caching, refusal, outage."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from apikm.identity.service_token import (
    ServiceToken,
    ServiceTokenRefused,
    ServiceTokenUnavailable,
)

calls: list[str] = []


class TokenEndpoint(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        form = self.rfile.read(int(self.headers["Content-Length"])).decode()
        calls.append(form)
        if "client_secret=right" not in form:
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps({"access_token": f"token-{len(calls)}", "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def token_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/token"
    server.shutdown()


def run(secret: str, url: str, rounds: int = 1) -> list[str]:
    async def go() -> list[str]:
        async with httpx.AsyncClient() as http:
            token = ServiceToken(http, url, "apikm", secret)
            results = []
            for _ in range(rounds):
                results += await asyncio.gather(*(token.get() for _ in range(5)))
            token.forget()
            results.append(await token.get())
            return results
    return asyncio.run(go())


def test_one_sign_in_for_concurrent_callers_until_forgotten(token_url: str) -> None:
    calls.clear()
    tokens = run("right", token_url, rounds=2)
    assert tokens[:10] == ["token-1"] * 10 and tokens[10] == "token-2"
    assert len(calls) == 2


def test_wrong_secret_is_refused(token_url: str) -> None:
    with pytest.raises(ServiceTokenRefused, match="apikm"):
        run("wrong", token_url)


def test_unreachable_endpoint() -> None:
    with pytest.raises(ServiceTokenUnavailable):
        run("right", "http://127.0.0.1:9/token")
