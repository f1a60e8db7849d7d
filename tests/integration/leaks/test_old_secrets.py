"""Leak reports of keys in their other stored forms: a rotated key's previous secret, and a
key imported from CS Group's APIKeyManager (a uuid4 kept as unsalted SHA-256)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.apikeymanager import old_database, old_key
from tests.support.apikm_server import ApikmServer
from tests.support.keys import new_key, user_client, verify_key

pytestmark = pytest.mark.integration


@pytest.fixture
def alice_and_admin(leak_servers: tuple[ApikmServer, ApikmServer],
                    token: Callable[[str], str]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    first = leak_servers[0]
    with user_client(first.url, token("alice")) as alice, \
            user_client(first.url, token("admin")) as admin:
        yield alice, admin


def _report(admin: httpx.Client, *tokens: str) -> list[dict[str, Any]]:
    answer = admin.post("/v1/leaks", json=[{"token": t, "url": "u"} for t in tokens])
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()
    return entries


def _actions(admin: httpx.Client, key_id: str) -> list[str]:
    return [e["action"] for e in admin.get("/v1/admin/audit", params={"key_id": key_id}).json()]


def test_a_rotated_keys_old_secret(leak_servers: tuple[ApikmServer, ApikmServer],
                                   alice_and_admin: tuple[httpx.Client, httpx.Client]) -> None:
    _first, second = leak_servers
    alice, admin = alice_and_admin
    # Overlap ended: the old secret opens nothing; recorded, the key is left alone.
    ended = new_key(alice)
    rotated = alice.post(f"/v1/keys/{ended['id']}/rotate", json={"overlap_seconds": 1}).json()
    time.sleep(1.2)
    [entry] = _report(admin, ended["key"])
    assert (entry["label"], entry["outcome"]) == ("true_positive", "rotated_away")
    assert _actions(admin, ended["id"])[0] == "leak_reported"
    assert "revoke" not in _actions(admin, ended["id"])
    with httpx.Client(base_url=second.url, timeout=10) as on_second:
        assert verify_key(on_second, rotated["key"])["code"] == "VALID"
    # Within its overlap the old secret still works: the key is revoked.
    open_overlap = new_key(alice)
    alice.post(f"/v1/keys/{open_overlap['id']}/rotate", json={"overlap_seconds": 600})
    [entry] = _report(admin, open_overlap["key"])
    assert entry["outcome"] == "revoked"
    with httpx.Client(base_url=second.url, timeout=10) as on_second:
        deadline = time.monotonic() + 1
        while verify_key(on_second, open_overlap["key"])["code"] != "REVOKED":
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_an_older_generation_is_recorded_and_left_working(
        leak_servers: tuple[ApikmServer, ApikmServer],
        alice_and_admin: tuple[httpx.Client, httpx.Client]) -> None:
    """A secret two rotations old is kept only in ``retired_secrets``: still a real leak
    (true positive, ``leak_reported`` with its generation); without
    APIKM_REVOKE_ON_SECRET_REUSE the key keeps working."""
    _first, second = leak_servers
    alice, admin = alice_and_admin
    key = new_key(alice)
    middle = alice.post(f"/v1/keys/{key['id']}/rotate", json={}).json()
    current = alice.post(f"/v1/keys/{key['id']}/rotate", json={}).json()
    answers = [admin.post("/v1/leaks", json=[{"token": secret, "url": f"u{n}"}])
               for n, secret in enumerate((key["key"], middle["key"]))]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    [oldest], [previous] = (a.json() for a in answers)
    for entry in (oldest, previous):
        assert (entry["label"], entry["outcome"], entry["key_id"]) == (
            "true_positive", "rotated_away", key["id"])
    audit = admin.get("/v1/admin/audit", params={"key_id": key["id"]}).json()
    reported = sorted(e["details"]["generation"] for e in audit
                      if e["action"] == "leak_reported")
    assert reported == [1, 2]
    assert "revoke" not in [e["action"] for e in audit]
    with httpx.Client(base_url=second.url, timeout=10) as on_second:
        assert verify_key(on_second, current["key"])["code"] == "VALID"


def test_an_imported_apikeymanager_key(leak_servers: tuple[ApikmServer, ApikmServer],
                                       alice_and_admin: tuple[httpx.Client, httpx.Client],
                                       tmp_path: Path) -> None:
    first, _second = leak_servers
    alice, admin = alice_and_admin
    me = alice.get("/v1/me").json()
    old = old_key(me["user_id"], me["username"])
    url = f"sqlite:///{tmp_path / 'apikeymanager.db'}"
    old_database(url, [old])
    imported = subprocess.run([sys.executable, "-m", "apikm.cli", "import", "apikeymanager",
                               "--from", url], env=first.env, capture_output=True, text=True,
                              timeout=120)
    assert imported.returncode == 0, imported.stderr
    stranger = str(uuid.uuid4())
    found, unknown = _report(admin, old.key, stranger)
    assert (found["label"], found["outcome"]) == ("true_positive", "revoked")
    assert (unknown["label"], unknown["outcome"]) == ("false_positive", "unknown")
    assert "leak_reported" in _actions(admin, found["key_id"])
