"""``GatewayProtocol``: the gateway path answered in uvicorn's protocol, without ASGI.

apikm runs in this process under uvicorn with the protocol ``apikm serve`` uses, behind an
ASGI wrapper that counts the requests reaching ASGI: a cached key must not reach it, and the
answers of both ways must be the same, byte for byte but the date. Raw sockets check what an
HTTP client library would hide: pipelining, HEAD, HTTP/1.0, ``Expect: 100-continue``, chunked
and oversized bodies.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from apikm.config import Settings
from apikm.devstack.keycloak import StackInfo
from apikm.keys.format import generate_key
from apikm.migrations import upgrade
from apikm.web.app import create_app
from apikm.web.gateway_protocol import GatewayProtocol
from tests.support.keys import create_key
from tests.support.ports import free_port, wait_http

pytestmark = pytest.mark.integration
KEEP_ALIVE = 1  # seconds an idle connection is kept


@dataclass
class CountingApp:
    """Counts the requests that reach ASGI; ``app`` is what ``GatewayProtocol`` looks for."""

    app: Callable[..., object]
    paths: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)  # type: ignore[misc]


@dataclass
class Served:
    url: str
    host: str
    port: int
    asgi: CountingApp


@pytest.fixture(scope="module")
def served(keycloak: StackInfo) -> Iterator[Served]:
    data_dir = Path(tempfile.mkdtemp(prefix="apikm-protocol-"))
    port = free_port()
    settings = Settings(host="127.0.0.1", port=port, data_dir=data_dir,  # type: ignore[call-arg]
                        database_url=f"sqlite+aiosqlite:///{data_dir / 'apikm.db'}",
                        keycloak_url=keycloak.base_url, keycloak_realm="demo",
                        max_body_bytes=4096)
    upgrade(settings.effective_database_url)
    asgi = CountingApp(create_app(settings))
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, http=GatewayProtocol,
                                           lifespan="on", log_config=None, access_log=False,
                                           timeout_keep_alive=KEEP_ALIVE))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz")
    yield Served(url, "127.0.0.1", port, asgi)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def key(served: Served, token: Callable[[str], str]) -> str:
    with httpx.Client(base_url=served.url, timeout=30,
                      headers={"Authorization": f"Bearer {token('alice')}"}) as alice:
        created, _ = create_key(alice, ["analyst"])
    return created


def exchange(served: Served, raw: bytes, answers: int = 1, head: bool = False
             ) -> list[tuple[int, dict[str, str], bytes]]:
    with socket.create_connection((served.host, served.port), timeout=10) as connection:
        connection.sendall(raw)
        return read_responses(connection, answers, head)


def read_responses(connection: socket.socket, count: int, head: bool = False
                   ) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` responses (status, lower-cased headers, body), read by content-length."""
    buffer, answers = b"", []
    while len(answers) < count:
        if b"\r\n\r\n" not in buffer:
            chunk = connection.recv(65536)
            assert chunk, f"connection closed after {len(answers)} answers"
            buffer += chunk
            continue
        top, _, rest = buffer.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        size = 0 if head else int(headers.get("content-length", "0"))
        while len(rest) < size:
            chunk = connection.recv(65536)
            assert chunk, "connection closed within a body"
            rest += chunk
        answers.append((int(lines[0].split()[1]), headers, rest[:size]))
        buffer = rest[size:]
    return answers


def auth_request(key: str, method: str = "GET", extra: str = "") -> bytes:
    return (f"{method} /v1/auth?role=analyst HTTP/1.1\r\nHost: t\r\nX-API-Key: {key}\r\n"
            f"{extra}\r\n").encode()


def verify_request(body: bytes, extra: str = "") -> bytes:
    return (f"POST /v1/verify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def without_date(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name != "date"}


def test_a_key_never_reaches_asgi_and_both_ways_answer_alike(
        served: Served, token: Callable[[str], str]) -> None:
    """On SQLite even a key's first use (read on the spot) is answered in the protocol; the
    ASGI way (a %-encoded path takes it) gives the same answer."""
    with httpx.Client(base_url=served.url, timeout=30,
                      headers={"Authorization": f"Bearer {token('alice')}"}) as alice:
        fresh, _ = create_key(alice, ["analyst"])
    before = len(served.asgi.paths)
    answers = exchange(served, auth_request(fresh) * 5, answers=5)  # first use, then cached
    assert len(served.asgi.paths) == before  # all answered in the protocol
    asgi = exchange(served, auth_request(fresh).replace(b"/v1/auth", b"/v1/%61uth"))[0]
    assert served.asgi.paths[before:] == ["/v1/auth"]
    for answer in answers:
        assert answer[0] == asgi[0] == 200
        assert without_date(answer[1]) == without_date(asgi[1])
        assert answer[1]["x-auth-user"] == "alice" and "date" in answer[1]


def test_an_unknown_key_is_refused_through_asgi(served: Served) -> None:
    """A refusal is counted (the ASGI way), after one read on the spot shared by both."""
    unknown = generate_key("apikm").full
    before = len(served.asgi.paths)
    refused = exchange(served, auth_request(unknown))[0]
    assert served.asgi.paths[before:] == ["/v1/auth"]
    assert refused[0] == 401 and refused[1]["x-auth-error"] == "not_found"


def test_verify_answers_alike_both_ways(served: Served, key: str) -> None:
    body = json.dumps({"key": key, "required_roles": ["analyst"]}).encode()
    slow = exchange(served, verify_request(body, "Expect: 100-continue\r\n"), answers=2)
    assert slow[0][0] == 100  # Expect: 100-continue goes through ASGI, which sends it
    before = len(served.asgi.paths)
    fast = exchange(served, verify_request(body))[0]
    assert len(served.asgi.paths) == before
    assert fast[0] == slow[1][0] == 200 and fast[2] == slow[1][2]
    assert without_date(fast[1]) == without_date(slow[1][1])
    assert json.loads(fast[2])["code"] == "VALID"


def test_pipelined_requests_are_answered_in_order(served: Served, key: str) -> None:
    body = json.dumps({"key": key}).encode()
    raw = (auth_request(key) + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
           + verify_request(body) + auth_request("") + auth_request(key))
    answers = exchange(served, raw, answers=5)
    assert [status for status, _, _ in answers] == [200, 200, 200, 401, 200]
    assert json.loads(answers[2][2])["code"] == "VALID"
    assert answers[3][1]["x-auth-error"] == "missing_key"


def test_head_answers_without_a_body_and_the_connection_goes_on(served: Served) -> None:
    with socket.create_connection((served.host, served.port), timeout=10) as connection:
        connection.sendall(auth_request("apikm_nothing", "HEAD"))
        (status, headers, _), = read_responses(connection, 1, head=True)
        assert status == 401 and int(headers["content-length"]) > 0
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        (status, _, body), = read_responses(connection, 1)
        assert status == 200 and body.startswith(b"{")  # no stray HEAD body before it


def test_http_1_0_and_connection_close_are_closed(served: Served, key: str) -> None:
    for raw in (auth_request(key).replace(b"HTTP/1.1", b"HTTP/1.0"),
                auth_request(key, extra="Connection: close\r\n")):
        with socket.create_connection((served.host, served.port), timeout=10) as connection:
            connection.sendall(raw)
            (status, headers, _), = read_responses(connection, 1)
            assert status == 200 and headers["connection"] == "close"
            assert connection.recv(10) == b""  # closed by the server


def test_auth_answers_on_its_headers_and_skips_an_unread_body(served: Served,
                                                               key: str) -> None:
    raw = auth_request(key, "PUT", "Content-Length: 5\r\n") + b"hello" + auth_request(key)
    assert [status for status, _, _ in exchange(served, raw, answers=2)] == [200, 200]


def test_chunked_and_oversized_verify_bodies(served: Served, key: str) -> None:
    body = json.dumps({"key": key}).encode()
    chunked = (b"POST /v1/verify HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                          for part in (body[:10], body[10:])) + b"0\r\n\r\n")
    too_big = verify_request(b"{" + b" " * 5000 + b"}")
    answers = exchange(served, chunked + too_big + verify_request(b"[1]"), answers=3)
    assert answers[0][0] == 200 and json.loads(answers[0][2])["code"] == "VALID"
    assert answers[1][0] == 413 and json.loads(answers[1][2])["error"] == "payload_too_large"
    assert answers[2][0] == 400 and json.loads(answers[2][2])["error"] == "invalid_request"


def test_other_paths_and_encoded_paths_go_through_asgi(served: Served, key: str) -> None:
    before = len(served.asgi.paths)
    answers = exchange(served, auth_request(key).replace(b"/v1/auth", b"/v1/%61uth")
                       + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", answers=2)
    assert [status for status, _, _ in answers] == [200, 200]
    assert served.asgi.paths[before:] == ["/v1/auth", "/healthz"]


def test_an_idle_connection_is_closed_a_busy_one_kept(served: Served, key: str) -> None:
    with socket.create_connection((served.host, served.port), timeout=10) as busy, \
            socket.create_connection((served.host, served.port), timeout=10) as idle:
        idle.sendall(auth_request(key))
        assert read_responses(idle, 1)[0][0] == 200
        started = time.monotonic()
        while time.monotonic() - started < 2.5 * KEEP_ALIVE:  # one request every 0.3 s
            busy.sendall(auth_request(key))
            assert read_responses(busy, 1)[0][0] == 200
            time.sleep(0.3)
        assert idle.recv(10) == b""  # closed after KEEP_ALIVE seconds without a request
        busy.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")  # kept: still answers
        assert read_responses(busy, 1)[0][0] == 200
