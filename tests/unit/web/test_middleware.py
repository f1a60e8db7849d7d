from __future__ import annotations

import pytest
from starlette.types import Message, Receive, Scope, Send
from structlog.testing import capture_logs

from apikm.keys.format import generate_key
from apikm.logs import Redactor
from apikm.web.middleware import MAX_LOGGED_PATH, AccessLog, LimitBodySize, logged_path


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _request(path: str) -> list[dict[str, object]]:
    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(_message: Message) -> None:
        return None

    scope: Scope = {"type": "http", "method": "GET", "path": path, "headers": [],
                    "client": ("127.0.0.1", 5)}
    with capture_logs() as logs:
        await AccessLog(_ok)(scope, receive, send)
    return logs


async def test_access_log_caps_the_path() -> None:
    (entry,) = await _request("/" + "eyJ-" * 16000)
    path = entry["path"]
    assert isinstance(path, str) and len(path) <= MAX_LOGGED_PATH + 1
    assert entry["status"] == 204


@pytest.mark.parametrize("cut", range(150, 200, 7))
def test_a_cut_never_leaves_part_of_a_secret(cut: int) -> None:
    key = generate_key("apikm").full
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl"
    for secret in (key, jwt):
        path = "/k/" + "x" * (cut - 3) + "/" + secret + "/more"
        logged = Redactor("apikm").scrub(logged_path(path))  # what reaches the log
        assert secret[-12:] not in logged and secret[8:20] not in logged
        assert logged.endswith("…")


def test_short_paths_are_kept() -> None:
    assert logged_path("/v1/keys/abc") == "/v1/keys/abc"
    assert logged_path("/" + "a" * 300) == "/…"


async def _status(path: str, size: int, root_path: str = "") -> int:
    statuses: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"x" * size}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def reads(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await _ok(scope, receive, send)

    scope: Scope = {"type": "http", "method": "POST", "path": path, "root_path": root_path,
                    "headers": [(b"content-length", str(size).encode())]}
    await LimitBodySize(reads, 1024, path_limits={"/v1/leaks": 4096})(scope, receive, send)
    return statuses[0]


async def test_a_path_may_have_a_body_limit_of_its_own() -> None:
    assert await _status("/v1/keys", 2000) == 413
    assert await _status("/v1/leaks", 2000) == 204
    assert await _status("/apikm/v1/leaks", 2000, root_path="/apikm") == 204
    assert await _status("/v1/leaks", 5000) == 413
    assert await _status("/v1/leaks/x", 2000) == 413
