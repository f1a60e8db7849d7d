"""POST /v1/leaks against real servers: reports signed with an ECDSA key as GitHub signs
them, and reports by an admin's Keycloak token. On PostgreSQL the report goes to replica A
and the key is checked on replica B."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from apikm.keys.format import generate_key
from tests.support.apikm_server import ApikmServer
from tests.support.github_signing import SigningKey
from tests.support.keys import new_key, user_client, verify_key

pytestmark = pytest.mark.integration

Servers = tuple[ApikmServer, ApikmServer]
URL = "https://github.com/octo/demo/blob/0123abc/config/settings.env"


@pytest.fixture
def clients(leak_servers: Servers, token: Callable[[str], str]) -> Iterator[
        Callable[[str, ApikmServer], httpx.Client]]:
    made: list[httpx.Client] = []

    def make(username: str, server: ApikmServer) -> httpx.Client:
        client = user_client(server.url, token(username))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _items(*tokens: str, url: str = URL) -> list[dict[str, str]]:
    return [{"token": t, "type": "apikm_api_key", "url": url, "source": "content"}
            for t in tokens]


def _signed(server: ApikmServer, key: SigningKey, items: list[dict[str, str]],
            identifier: str | None = None) -> httpx.Response:
    body = json.dumps(items, separators=(",", ":")).encode()
    headers = key.headers(body)
    if identifier is not None:
        headers["Github-Public-Key-Identifier"] = identifier
    return httpx.post(f"{server.url}/v1/leaks", content=body, headers=headers, timeout=30)


def _wrong_checksum(key: str) -> str:
    return key[:-1] + ("A" if key[-1] != "A" else "B")


def _audit(admin: httpx.Client, key_id: str, action: str) -> list[dict[str, Any]]:
    events = admin.get("/v1/admin/audit", params={"key_id": key_id}).json()
    return [event for event in events if event["action"] == action]


def _refused_within(server: ApikmServer, key: str, seconds: float) -> float:
    started = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while True:
            code = verify_key(client, key)["code"]
            elapsed = time.monotonic() - started
            if code == "REVOKED":
                return elapsed
            assert code == "VALID" and elapsed < seconds, f"{code} after {elapsed:.2f}s"
            time.sleep(0.02)


def test_signed_report_revokes_live_keys_and_labels_every_token(
        leak_servers: Servers, github_key: SigningKey,
        clients: Callable[[str, ApikmServer], httpx.Client]) -> None:
    first, second = leak_servers
    alice, admin = clients("alice", first), clients("admin", first)
    live, earlier, bystander = new_key(alice), new_key(alice), new_key(alice)
    assert alice.delete(f"/v1/keys/{earlier['id']}").status_code == 200
    with httpx.Client(base_url=second.url, timeout=10) as on_second:  # cached on B
        assert verify_key(on_second, live["key"])["code"] == "VALID"
    reported = {
        "live": live["key"],
        "revoked": earlier["key"],
        "wrong checksum": _wrong_checksum(bystander["key"]),
        "unknown": generate_key("apikm").full,
        "foreign prefix": generate_key("ghp").full,
        "random": secrets.token_urlsafe(30),
    }
    items = [*_items(*reported.values()), *_items(live["key"], url=URL + "#L2")]

    answer = _signed(first, github_key, items)

    assert answer.status_code == 200, answer.text
    entries = answer.json()
    assert [e["label"] for e in entries] == ["true_positive", "true_positive",
                                             "false_positive", "false_positive",
                                             "false_positive", "false_positive",
                                             "true_positive"]
    assert [e["token_hash"] for e in entries] == [
        hashlib.sha256(item["token"].encode()).hexdigest() for item in items]
    assert {e["token_type"] for e in entries} == {"apikm_api_key"}
    assert all(set(e) == {"token_hash", "token_type", "label"} for e in entries)
    assert _refused_within(second, live["key"], 1.0) < 1.0
    with httpx.Client(base_url=second.url, timeout=10) as on_second:
        assert verify_key(on_second, bystander["key"])["code"] == "VALID"

    revokes = _audit(admin, live["id"], "revoke")
    assert [(e["actor_name"], e["actor_id"], e["details"]) for e in revokes] == [
        ("github secret scanning", f"github:{github_key.identifier}", {"reason": "leaked"})]
    assert alice.get(f"/v1/keys/{live['id']}").json()["revoked_reason"] == "leaked"
    reports = _audit(admin, live["id"], "leak_reported")
    assert sorted(e["details"]["url"] for e in reports) == [URL, URL + "#L2"]
    assert all(e["details"] == {"url": e["details"]["url"], "source": "content",
                                "reporter": "github secret scanning"} for e in reports)
    assert [e["actor_name"] for e in _audit(admin, earlier["id"], "revoke")] == ["alice"]
    assert len(_audit(admin, earlier["id"], "leak_reported")) == 1
    assert _audit(admin, bystander["id"], "leak_reported") == []

    logs = first.log_text() + second.log_text()
    assert "leak report" in logs
    for leaked in (*reported.values(), bystander["key"]):
        assert leaked not in logs


def test_reports_without_githubs_signature_are_refused(
        leak_servers: Servers, github_key: SigningKey, other_github_key: SigningKey,
        clients: Callable[[str, ApikmServer], httpx.Client]) -> None:
    first, second = leak_servers
    key = new_key(clients("alice", first))
    items = _items(key["key"])
    body = json.dumps(items).encode()
    forged = SigningKey()
    refused = [
        _signed(first, forged, items),  # a key apikm does not know
        _signed(first, other_github_key, items, identifier=github_key.identifier),
        httpx.post(f"{first.url}/v1/leaks", content=body, timeout=10, headers={
            **github_key.headers(body + b" "), "Content-Type": "application/json"}),
        httpx.post(f"{first.url}/v1/leaks", content=body, timeout=10, headers={
            "Github-Public-Key-Identifier": github_key.identifier}),
        httpx.post(f"{first.url}/v1/leaks", content=body, timeout=10, headers={
            "Github-Public-Key-Identifier": github_key.identifier,
            "Github-Public-Key-Signature": "not base64 at all"}),
        httpx.post(f"{first.url}/v1/leaks", content=body, timeout=10),
    ]
    for answer in refused:
        assert answer.status_code == 401, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"] in ("invalid_signature", "unauthorized")
        assert key["key"] not in answer.text
    with httpx.Client(base_url=second.url, timeout=10) as on_second:
        assert verify_key(on_second, key["key"])["code"] == "VALID"
    # Any key GitHub publishes may sign, each under its own identifier.
    assert _signed(first, other_github_key, []).json() == []


def test_malformed_and_oversized_reports_get_json_errors(
        leak_servers: Servers, github_key: SigningKey) -> None:
    first, _second = leak_servers
    url = f"{first.url}/v1/leaks"
    for body, status in ((b"not json", 400), (b'{"token": "x"}', 422),
                         (b'[{"type": "apikm_api_key"}]', 422), (b'[{"token": 7}]', 422)):
        answer = httpx.post(url, content=body, headers=github_key.headers(body), timeout=10)
        assert answer.status_code == status, answer.text
        assert answer.json()["error"] in ("bad_request", "invalid_request")
    # Larger than the API's body limit (64 KiB), within the reports' own (256 KiB here).
    many = _items(*(secrets.token_urlsafe(40) for _ in range(800)))
    big = _signed(first, github_key, many)
    assert big.status_code == 200 and len(big.json()) == 800
    too_big = json.dumps(_items("x" * 500) * 600).encode()
    answer = httpx.post(url, content=too_big, headers=github_key.headers(too_big), timeout=10)
    assert answer.status_code == 413 and answer.json()["error"] == "payload_too_large"


def test_an_admins_scanner_reports_with_a_keycloak_token(
        leak_servers: Servers, clients: Callable[[str, ApikmServer], httpx.Client]) -> None:
    first, second = leak_servers
    alice, admin = clients("alice", first), clients("admin", first)
    key = new_key(alice)
    unknown = generate_key("apikm").full
    items = _items(key["key"], unknown, url="scanner://ci/job/42")

    assert alice.post("/v1/leaks", json=items).status_code == 403
    assert httpx.post(f"{first.url}/v1/leaks", json=items, timeout=10,
                      headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    with httpx.Client(base_url=second.url, timeout=10) as on_second:
        assert verify_key(on_second, key["key"])["code"] == "VALID"

    answer = admin.post("/v1/leaks", json=items)
    assert answer.status_code == 200, answer.text
    assert [(e["label"], e["outcome"], e["key_id"]) for e in answer.json()] == [
        ("true_positive", "revoked", key["id"]), ("false_positive", "unknown", None)]
    assert _refused_within(second, key["key"], 1.0) < 1.0
    [revoke] = _audit(admin, key["id"], "revoke")
    assert (revoke["actor_name"], revoke["details"]) == ("admin", {"reason": "leaked"})
    [report] = _audit(admin, key["id"], "leak_reported")
    assert report["details"] == {"url": "scanner://ci/job/42", "source": "content",
                                 "reporter": "admin admin"}
    again = admin.post("/v1/leaks", json=items).json()
    assert again[0]["outcome"] == "already_revoked" and again[0]["label"] == "true_positive"
    assert len(_audit(admin, key["id"], "revoke")) == 1
    # The same place reported again is no news: no second row, so no second mail.
    assert len(_audit(admin, key["id"], "leak_reported")) == 1
