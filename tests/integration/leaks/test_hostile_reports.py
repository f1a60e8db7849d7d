"""POST /v1/leaks against what an attacker or a broken scanner sends: bodies apikm cannot use
get a 4xx JSON error (never a 500), replays record nothing new, and a signature header that
cannot hold a signature is refused before the body is read."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.apikm_server import ApikmServer
from tests.support.github_signing import SigningKey
from tests.support.keys import new_key, user_client

pytestmark = pytest.mark.integration

Servers = tuple[ApikmServer, ApikmServer]
URL = "https://github.com/octo/demo/blob/0123abc/settings.env"


@pytest.fixture
def alice_and_admin(leak_servers: Servers, token: Callable[[str], str]) -> Iterator[
        tuple[httpx.Client, httpx.Client]]:
    first = leak_servers[0]
    with user_client(first.url, token("alice")) as alice, \
            user_client(first.url, token("admin")) as admin:
        yield alice, admin


def _post_signed(server: ApikmServer, key: SigningKey, body: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/leaks", content=body, headers=key.headers(body),
                      timeout=30)


def _leak_rows(admin: httpx.Client, key_id: str) -> list[dict[str, Any]]:
    events = admin.get("/v1/admin/audit", params={"key_id": key_id}).json()
    return [event for event in events if event["action"] == "leak_reported"]


def test_bodies_apikm_cannot_use_get_a_json_4xx_never_a_500(
        leak_servers: Servers, github_key: SigningKey,
        alice_and_admin: tuple[httpx.Client, httpx.Client]) -> None:
    first, _second = leak_servers
    alice, admin = alice_and_admin
    live = new_key(alice)
    nul_url = json.dumps([{"token": live["key"], "url": URL + "\u0000", "source": "content"}])
    bodies = {
        "empty": (b"", 400),
        "deep nesting": (b"[" * 100_000 + b"]" * 100_000, 400),
        "huge integer": (b'[{"token": ' + b"9" * 5000 + b"}]", 400),
        "not UTF-8": (b'[{"token": "\xff\xfe"}]', 400),
        "non-string token": (b'[{"token": ["apikm_x"]}]', 422),
        "lone surrogate": (b'[{"token": "apikm_\\ud800"}]', 422),
        "NUL in the url of a live key": (nul_url.encode(), 422),
        "10 001 tokens": (json.dumps([{"token": "x"}] * 10_001).encode(), 422),
    }
    for name, (body, status) in bodies.items():
        for answer in (_post_signed(first, github_key, body),
                       admin.post("/v1/leaks", content=body,
                                  headers={"Content-Type": "application/json"})):
            assert answer.status_code == status, (name, answer.status_code, answer.text[:300])
            assert answer.json()["error"] in ("bad_request", "invalid_request"), name
            assert live["key"] not in answer.text
    assert alice.get(f"/v1/keys/{live['id']}").json()["status"] == "active"

    # What is well formed is answered, whatever it holds: NUL or any script in a token,
    # 10 000 tokens at once.
    odd = [{"token": t} for t in ("apikm_\u0000", "ключ_🔑", "apikm_" + "é" * 42)]
    many = [{"token": f"t{n}"} for n in range(10_000 - len(odd))]
    answer = _post_signed(first, github_key, json.dumps(odd + many).encode())
    assert answer.status_code == 200, answer.text[:300]
    assert len(answer.json()) == 10_000
    assert {entry["label"] for entry in answer.json()} == {"false_positive"}
    assert "Traceback" not in first.log_text()


def test_a_replayed_report_revokes_nothing_more_and_records_nothing_new(
        leak_servers: Servers, github_key: SigningKey,
        alice_and_admin: tuple[httpx.Client, httpx.Client]) -> None:
    first, second = leak_servers
    alice, admin = alice_and_admin
    key = new_key(alice)
    body = json.dumps([{"token": key["key"], "type": "apikm_api_key", "url": URL,
                        "source": "content"}]).encode()

    answers = [_post_signed(server, github_key, body) for server in (first, second, first)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.json()[0]["label"] for a in answers} == {"true_positive"}
    assert len(_leak_rows(admin, key["id"])) == 1  # one row, so one mail to the owner
    # The same key found somewhere else is news.
    elsewhere = body.replace(URL.encode(), (URL + "#L9").encode())
    assert _post_signed(first, github_key, elsewhere).status_code == 200
    assert sorted(row["details"]["url"] for row in _leak_rows(admin, key["id"])) == [
        URL, URL + "#L9"]


def test_a_signature_header_that_holds_no_signature_is_refused_before_the_body(
        leak_servers: Servers, github_key: SigningKey) -> None:
    """Headers announcing a 100 kB body that never comes: the answer must not wait."""
    first, _second = leak_servers
    where = urlsplit(first.url)
    request = (f"POST /v1/leaks HTTP/1.1\r\nHost: {where.netloc}\r\n"
               "Content-Type: application/json\r\nContent-Length: 100000\r\n"
               f"Github-Public-Key-Identifier: {github_key.identifier}\r\n"
               "Github-Public-Key-Signature: not-a-signature\r\n\r\n").encode()
    started = time.monotonic()
    with socket.create_connection((where.hostname, where.port), timeout=5) as conn:
        conn.sendall(request)
        answer = ""
        while not answer.rstrip().endswith("}"):  # headers and JSON body may come apart
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk.decode(errors="replace")
    assert time.monotonic() - started < 3
    assert answer.startswith("HTTP/1.1 401"), answer
    assert '"invalid_signature"' in answer
