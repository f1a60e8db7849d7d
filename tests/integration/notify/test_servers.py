"""Notifications from real ``apikm serve`` processes: two replicas on one PostgreSQL, one of
them stopped and started again, a real SMTP server and a signature-checking webhook
receiver. Each expiry warning reaches its owner exactly once."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from apikm.devstack import keycloak as devstack
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.http_server import serve_in_thread
from tests.support.keys import create_key, user_client
from tests.support.postgres import fresh_database
from tests.support.replicas import DEMO_SYNC_SECRET
from tests.support.smtp import Received, SmtpServer, smtp_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


class Hooks:
    def __init__(self) -> None:
        self.secret = ""
        self.got: list[tuple[str, dict[str, Any]]] = []  # (webhook-id, verified body)
        self.lock = threading.Lock()


@pytest.fixture(scope="module")
def hooks() -> Iterator[tuple[Hooks, str]]:
    state = Hooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with state.lock:  # raises (and answers nothing) on a bad signature
                verified = Webhook(state.secret).verify(body, dict(self.headers.items()))
                state.got.append((self.headers["webhook-id"], verified))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    with serve_in_thread(Handler) as url:
        yield state, url + "/apikm"


def about(key: dict[str, Any]) -> Callable[[Received], bool]:
    return lambda mail: f"\u201c{key['name']}\u201d" in mail.subject


def test_expiry_warning_once_across_two_replicas_and_a_restart(
        postgres_url: str, keycloak: devstack.StackInfo, token: Callable[[str], str],
        smtp: SmtpServer, hooks: tuple[Hooks, str]) -> None:
    state, hook_url = hooks
    database = fresh_database(postgres_url)
    shared = {"peppers": f"t1:{secrets.token_urlsafe(24)}",
              "oidc_client_secret": DEMO_SYNC_SECRET, "smtp_url": smtp.url,
              "smtp_from": "apikm <apikm@example.org>", "admin_emails": "security@example.org",
              "notify_interval_seconds": "0.3", "public_url": "https://apikm.example.org"}
    first, second = ExitStack(), ExitStack()
    with second:
        a: ApikmServer = first.enter_context(apikm_server(database, keycloak.base_url, **shared))
        b: ApikmServer = second.enter_context(apikm_server(database, keycloak.base_url,
                                                           **shared))
        with httpx.Client(base_url=b.url, timeout=30, headers={
                "Authorization": f"Bearer {token('admin')}"}) as admin:
            made = admin.post("/v1/admin/webhooks", json={
                "url": hook_url, "events": ["key.expiring", "key.created"]})
            assert made.status_code == 201, made.text
            state.secret = made.json()["secret"]
        # Crosses "7 days before expiry" a few seconds after it is made.
        expires = datetime.now(UTC) + timedelta(days=7, seconds=5)
        with user_client(a.url, token("alice")) as alice:
            secret, key = create_key(alice, ["analyst"], expires_at=expires.isoformat())
        warning = smtp.wait_for(lambda got: any(
            about(key)(m) and "expires in 7 days" in m.subject for m in got), timeout=30)
        first.close()  # replica A stops (it may have been the one delivering) ...
        with apikm_server(database, keycloak.base_url, **shared) as again:  # ... and returns
            time.sleep(4)  # many rounds of both workers
            assert again.url
        mails = [m for m in smtp.messages() if about(key)(m)]
        assert sorted(m.subject for m in mails) == sorted([
            f"[apikm] Key \u201c{key['name']}\u201d ({key['hint']}) was created",
            f"[apikm] Key \u201c{key['name']}\u201d ({key['hint']}) expires in 7 days",
        ])
        assert all(m.recipients == ["alice@example.org"] for m in mails)
        mail = next(m for m in warning if about(key)(m) and "7 days" in m.subject)
        assert f"https://apikm.example.org/keys/{key['id']}" in mail.text
        with state.lock:
            about_key = [(i, body["type"]) for i, body in state.got
                         if (body["data"].get("key") or {}).get("id") == key["id"]]
        assert sorted(t for _, t in about_key) == ["key.created", "key.expiring"]
        everything = "".join(m.raw.decode() for m in smtp.messages()) + str(state.got)
        logs = a.log_text() + b.log_text()
        for text in (everything, logs):
            assert secret not in text and smtp.password not in text
            assert state.secret not in text
        log = httpx.get(f"{b.url}/v1/admin/notifications",
                        headers={"Authorization": f"Bearer {token('admin')}"}).json()
        warnings = [n for n in log if n["key_id"] == key["id"] and n["event"] == "key.expiring"]
        assert sorted((n["channel"], n["status"]) for n in warnings) == [
            ("email", "sent"), ("webhook", "sent")]


def test_a_leak_report_sends_the_owner_one_mail(
        keycloak: devstack.StackInfo, token: Callable[[str], str], smtp: SmtpServer) -> None:
    """A leak reported through ``POST /v1/leaks`` revokes the key: its owner gets the leak's
    mail (not a revocation mail as well), the admins an alert; the key is in neither."""
    with apikm_server(None, keycloak.base_url, oidc_client_secret=DEMO_SYNC_SECRET,
                      smtp_url=smtp.url, admin_emails="leaks@example.org",
                      notify_interval_seconds="0.3") as server:
        with user_client(server.url, token("alice")) as alice:
            secret, key = create_key(alice, ["analyst"])
        with httpx.Client(base_url=server.url, timeout=30, headers={
                "Authorization": f"Bearer {token('admin')}"}) as admin:
            reported = admin.post("/v1/leaks", json=[{
                "token": secret, "type": "apikm_api_key", "url": "scanner://ci/job/7",
                "source": "content"}])
            assert reported.status_code == 200, reported.text
            assert reported.json()[0]["outcome"] == "revoked"
        leak = smtp.wait_for(lambda got: sum(about(key)(m) for m in got) >= 3, timeout=20)
        time.sleep(1.5)  # more rounds: nothing else may come
        mails = sorted((m.recipients[0], m.subject) for m in smtp.messages() if about(key)(m))
        label = f"Key \u201c{key['name']}\u201d ({key['hint']})"
        assert mails == [
            ("alice@example.org", f"[apikm] {label} was created"),
            ("alice@example.org", f"[apikm] {label} was reported leaked and has been revoked"),
            ("leaks@example.org", f"[apikm] alert: {label} of alice was reported leaked and "
                                  "has been revoked"),
        ]
        text = next(m for m in leak if "leaked" in m.subject and m.recipients ==
                    ["alice@example.org"]).text
        assert "scanner://ci/job/7" in text and secret not in text
        assert secret not in server.log_text() and smtp.password not in server.log_text()
