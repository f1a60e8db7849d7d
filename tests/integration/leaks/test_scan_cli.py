"""``apikm keys scan`` against the database of a running apikm, as an admin would run it
over a log file or a repository export."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apikm.keys.format import generate_key
from tests.support.apikm_server import ApikmServer
from tests.support.keys import new_key, user_client, verify_key
from tests.support.leak_samples import near_misses

pytestmark = pytest.mark.integration


@pytest.fixture
def alice_and_admin(leak_servers: tuple[ApikmServer, ApikmServer],
                    token: Callable[[str], str]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    first = leak_servers[0]
    with user_client(first.url, token("alice")) as alice, \
            user_client(first.url, token("admin")) as admin:
        yield alice, admin


def _scan(server: ApikmServer, *args: str, stdin: str | None = None,
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "apikm.cli", "keys", "scan", *args],
                          env=server.env, capture_output=True, text=True, input=stdin,
                          timeout=120, check=False)


def _leak_reports(admin: httpx.Client, key_id: str) -> list[dict[str, Any]]:
    events = admin.get("/v1/admin/audit", params={"key_id": key_id}).json()
    return [event for event in events if event["action"] == "leak_reported"]


def test_scan_reports_each_key_and_revokes_on_request(
        leak_servers: tuple[ApikmServer, ApikmServer],
        alice_and_admin: tuple[httpx.Client, httpx.Client], tmp_path: Path) -> None:
    first, second = leak_servers
    alice, admin = alice_and_admin
    live, earlier = new_key(alice), new_key(alice)
    assert alice.delete(f"/v1/keys/{earlier['id']}").status_code == 200
    unknown = generate_key("apikm").full
    wrong = live["key"][:-1] + ("A" if live["key"][-1] != "A" else "B")
    leaked = tmp_path / "build.log"
    leaked.write_text("\n".join([
        "starting job", f"APIKM_API_KEY={live['key']}", f"old: {earlier['key']}",
        f"typo: {wrong}", *near_misses(), f"key={unknown}", f"again {live['key']}"]) + "\n")

    looked = _scan(first, str(leaked))
    assert looked.returncode == 1, looked.stderr  # an active key is out there
    rows = {line.split()[0]: line for line in looked.stdout.splitlines()[1:-1]}
    assert "alice" in rows[live["public_id"]] and " active " in rows[live["public_id"]]
    assert rows[live["public_id"]].rstrip().endswith(f"2,{len(near_misses()) + 6}")
    assert " revoked " in rows[earlier["public_id"]]
    assert looked.stdout.splitlines()[-1] == (
        "found 4 keys: 1 active, 1 revoked, 1 unknown, 1 bad checksum")
    for secret in (live["key"], earlier["key"], unknown, wrong):
        assert secret not in looked.stdout + looked.stderr
    with httpx.Client(base_url=second.url, timeout=10) as on_second:
        assert verify_key(on_second, live["key"])["code"] == "VALID"
    assert _leak_reports(admin, live["id"]) == []  # looking changes nothing

    revoked = _scan(first, str(leaked), "--revoke", "--json")
    assert revoked.returncode == 0, revoked.stderr
    result = json.loads(revoked.stdout)
    assert result["summary"] == ("found 4 keys: 1 active, 1 revoked, 1 unknown, "
                                 "1 bad checksum; revoked 1")
    by_status = {row["status"]: row for row in result["keys"]}
    assert by_status["active"]["key_id"] == live["id"] and by_status["active"]["revoked_now"]
    assert by_status["revoked"]["revoked_now"] is False
    with httpx.Client(base_url=second.url, timeout=10) as on_second:
        assert verify_key(on_second, live["key"])["code"] == "REVOKED"
    assert alice.get(f"/v1/keys/{live['id']}").json()["revoked_reason"] == "leaked"
    for key_id in (live["id"], earlier["id"]):
        [report] = _leak_reports(admin, key_id)
        assert report["details"]["url"] == str(leaked)
        assert report["details"]["source"] == "apikm keys scan"


def test_scan_reads_standard_input(leak_servers: tuple[ApikmServer, ApikmServer],
                                   alice_and_admin: tuple[httpx.Client, httpx.Client]) -> None:
    alice, _admin = alice_and_admin
    key = new_key(alice)
    scanned = _scan(leak_servers[0], "-", stdin=f"nothing here\nkey {key['key']}\n")
    assert scanned.returncode == 1
    assert scanned.stdout.splitlines()[-1] == "found 1 key: 1 active"
    clean = _scan(leak_servers[0], stdin="no keys\n")
    assert (clean.returncode, clean.stdout.strip()) == (0, "found 0 keys")
    missing = _scan(leak_servers[0], "/nonexistent/file")
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_scan_of_a_large_file(leak_servers: tuple[ApikmServer, ApikmServer],
                              alice_and_admin: tuple[httpx.Client, httpx.Client],
                              tmp_path: Path) -> None:
    alice, _admin = alice_and_admin
    key = new_key(alice)
    big = tmp_path / "dump.sql"
    filler = "INSERT INTO t VALUES ('apikm_ but no key here', 42);\n" * 60_000  # ~3 MiB
    big.write_text(filler + f"-- {key['key']}\n" + filler)
    scanned = _scan(leak_servers[0], str(big))
    assert scanned.returncode == 1, scanned.stderr
    assert scanned.stdout.splitlines()[-1] == "found 1 key: 1 active"
    assert scanned.stdout.splitlines()[1].rstrip().endswith(" 60001")


def test_scan_of_binary_input_on_stdin_and_in_a_file(
        leak_servers: tuple[ApikmServer, ApikmServer],
        alice_and_admin: tuple[httpx.Client, httpx.Client], tmp_path: Path) -> None:
    """Bytes that are not UTF-8 (a core dump, a Latin-1 log, one long line) are scanned,
    not a traceback; only the public id is printed."""
    alice, _admin = alice_and_admin
    key = new_key(alice)
    blob = bytes(range(256)) * 20_000 + b"\x00" + key["key"].encode() + b"\xff" * 100_000
    # A terminal's usual locale (en_US.UTF-8 and the like) gives a strict stdin.
    env = {**leak_servers[0].env, "PYTHONIOENCODING": "utf-8:strict"}
    scanned = subprocess.run([sys.executable, "-m", "apikm.cli", "keys", "scan", "-"],
                             env=env, capture_output=True, input=blob, timeout=120,
                             check=False)
    out, err = scanned.stdout.decode(), scanned.stderr.decode()
    assert scanned.returncode == 1, err
    assert "Traceback" not in err
    assert out.splitlines()[-1] == "found 1 key: 1 active"
    assert key["public_id"] in out and key["key"] not in out + err
    dump = tmp_path / "core"
    dump.write_bytes(blob)
    in_file = _scan(leak_servers[0], str(dump), "--json")
    assert in_file.returncode == 1, in_file.stderr
    [row] = json.loads(in_file.stdout)["keys"]
    assert (row["public_id"], row["status"]) == (key["public_id"], "active")
