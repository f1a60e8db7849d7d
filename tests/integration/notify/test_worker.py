"""The notification worker against real parts: a migrated SQLite or PostgreSQL database, a
real SMTP server (aiosmtpd: STARTTLS, AUTH) and a real webhook receiver that checks every
signature with the Standard Webhooks reference library."""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook

from apikm.db import create_engine, utcnow
from apikm.encryption import parse_encryption_keys
from apikm.identity.sync_store import SYNC_ACTOR
from apikm.identity.tables import owners
from apikm.keys.format import generate_key
from apikm.keys.service import Actor, record_audit
from apikm.keys.tables import api_keys
from apikm.migrations import upgrade
from apikm.notify import outbox
from apikm.notify.smtp import parse_smtp_url
from apikm.notify.tables import notification_attempts, notifications
from apikm.notify.worker import Notifier, NotifyConfig
from tests.support.apikm_server import ENCRYPTION_KEY
from tests.support.http_server import serve_in_thread
from tests.support.postgres import fresh_database
from tests.support.smtp import Received, SmtpServer, smtp_server

pytestmark = pytest.mark.integration

ALICE = Actor("alice-id", "alice")
ADMIN = Actor("admin-id", "admin")
ADMINS = ("security@example.org",)


# --- parts ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


class Receiver:
    """Webhook receiver: answers from a script of status codes (then 200), verifies each
    request's signature, keeps what it got."""

    def __init__(self) -> None:
        self.secret = ""
        self.script: list[int] = []
        self.got: list[dict[str, Any]] = []
        self.lock = threading.Lock()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with state.lock:
                verified = Webhook(state.secret).verify(body, dict(self.headers.items()))
                status = state.script.pop(0) if state.script else 200
                state.got.append({"status": status, "id": self.headers["webhook-id"],
                                  "body": verified})
            self.send_response(status)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    with serve_in_thread(Handler) as url:
        yield state, url + "/hook"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        url = fresh_database(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'n.db'}"
    upgrade(url)
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make_notifier(engine: AsyncEngine, http: httpx.AsyncClient, smtp: SmtpServer,
                  **overrides: Any) -> Notifier:
    config = NotifyConfig(base_url="https://apikm.example.org", key_prefix="apikm",
                          smtp=parse_smtp_url(smtp.url), sender="apikm <apikm@example.org>",
                          admin_emails=ADMINS, thresholds=(30, 7, 1), first_retry=0.2,
                          **overrides)
    return Notifier(engine, config, http, parse_encryption_keys(ENCRYPTION_KEY),
                    holder=f"test-{uuid.uuid4()}")


async def add_owner(engine: AsyncEngine, user_id: str, email: str | None) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.insert(owners).values(
            user_id=user_id, username=user_id.removesuffix("-id"), email=email, enabled=True,
            roles=[], groups=[], synced_at=utcnow(), source="token", attributes={}))


async def add_key(engine: AsyncEngine, owner_id: str, expires_at: datetime,
                  created_at: datetime | None = None) -> dict[str, str]:
    key = generate_key("apikm")
    now = utcnow()
    row = {"id": str(uuid.uuid4()), "public_id": key.public_id, "owner_id": owner_id,
           "name": f"key {secrets.token_hex(3)}", "roles": ["analyst"], "allowed_networks": [],
           "meta": {}, "secret_hash": secrets.token_hex(32), "pepper_id": "t1",
           "expires_at": expires_at, "created_at": created_at or now - timedelta(days=40),
           "created_by": owner_id, "updated_at": now}
    async with engine.begin() as conn:
        await conn.execute(sa.insert(api_keys).values(**row))
    return {**row, "secret": key.full}


async def audit(engine: AsyncEngine, action: str, actor: Actor, key: dict[str, str],
                **details: Any) -> None:
    async with engine.begin() as conn:
        await record_audit(conn, action, actor, key["id"], key["owner_id"], details)


async def rows(engine: AsyncEngine, table: sa.Table) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(sa.select(table).order_by(table.c.id))).all())


def to(mails: list[Received], address: str) -> list[Received]:
    return [m for m in mails if m.recipients == [address]]


# --- audit events become mails -------------------------------------------------------------
async def test_owner_and_admin_mails_follow_the_rules(
        engine: AsyncEngine, http: httpx.AsyncClient, smtp: SmtpServer) -> None:
    alice = f"alice-{uuid.uuid4().hex[:6]}@example.org"
    await add_owner(engine, "alice-id", alice)
    notifier = make_notifier(engine, http, smtp)
    await notifier.run_round()  # the cursor starts here
    key = await add_key(engine, "alice-id", utcnow() + timedelta(days=90))
    other = await add_key(engine, "alice-id", utcnow() + timedelta(days=90))
    leaked = await add_key(engine, "alice-id", utcnow() + timedelta(days=90))
    with structlog.testing.capture_logs() as logs:
        await audit(engine, "create", ALICE, key)
        await audit(engine, "revoke", ALICE, other)  # her own doing: no mail
        await audit(engine, "revoke", ADMIN, key, reason="left the project")
        await audit(engine, "suspend", SYNC_ACTOR, key, reason="owner disabled in Keycloak")
        await audit(engine, "new_network", SYNC_ACTOR, key, network="203.0.113.0/24",
                    address="203.0.113.9")
        async with engine.begin() as conn:  # as apikm.leaks does, in one transaction
            await conn.execute(sa.update(api_keys).where(api_keys.c.id == leaked["id"])
                               .values(status="revoked"))
            await record_audit(conn, "revoke", Actor("leaks", "leaks"), leaked["id"],
                               "alice-id", {"reason": "leaked"})
            await record_audit(conn, "leak_reported", Actor("leaks", "leaks"), leaked["id"],
                               "alice-id", {"url": "https://github.com/x/y/blob/main/.env",
                                            "source": "github",
                                            "reporter": "GitHub secret scanning"})
        await notifier.run_round()
    names = (f"\u201c{key['name']}\u201d", f"\u201c{leaked['name']}\u201d")

    def for_admins(got: list[Received]) -> list[Received]:
        return [m for m in to(got, ADMINS[0]) if any(n in m.subject for n in names)]

    mails = smtp.wait_for(lambda m: len(to(m, alice)) >= 5 and len(for_admins(m)) >= 2)
    subjects = sorted(m.subject for m in to(mails, alice))
    name, hint = key["name"], f"apikm_{key['public_id']}..."
    assert subjects == sorted([
        f"[apikm] Key \u201c{name}\u201d ({hint}) was created",
        f"[apikm] Key \u201c{name}\u201d ({hint}) was revoked (left the project)",
        f"[apikm] Key \u201c{name}\u201d ({hint}) was suspended",
        f"[apikm] Key \u201c{name}\u201d ({hint}) was used from a network it was never used from",
        f"[apikm] Key \u201c{leaked['name']}\u201d (apikm_{leaked['public_id']}...) was reported "
        "leaked and has been revoked",
    ])  # one mail for the leak, none for her own revocation
    admin_subjects = sorted(m.subject for m in for_admins(mails))
    assert len(admin_subjects) == 2 and all(" of alice " in s for s in admin_subjects)
    everything = "\n".join(m.raw.decode() for m in smtp.messages()) + json.dumps(logs,
                                                                                default=str)
    for secret in (key["secret"], other["secret"], leaked["secret"], smtp.password):
        assert secret not in everything
    assert all(m.message["From"] == "apikm <apikm@example.org>" for m in mails)


async def test_users_choose_which_mails_they_get(
        engine: AsyncEngine, http: httpx.AsyncClient, smtp: SmtpServer) -> None:
    from apikm.notify import preferences

    bob = f"bob-{uuid.uuid4().hex[:6]}@example.org"
    await add_owner(engine, "bob-id", bob)
    await preferences.save(engine, preferences.DEFAULTS, {"created": False})
    await preferences.save(engine, "bob-id", {"revoked": False, "leaked": False})
    notifier = make_notifier(engine, http, smtp)
    await notifier.run_round()
    key = await add_key(engine, "bob-id", utcnow() + timedelta(days=90))
    await audit(engine, "create", Actor("bob-id", "bob"), key)  # admins' default: off
    await audit(engine, "revoke", ADMIN, key, reason="x")  # bob's choice: off
    await audit(engine, "secret_reuse", SYNC_ACTOR, key, generation=1, address="192.0.2.1",
                revoked=False)  # always on
    await audit(engine, "leak_reported", SYNC_ACTOR, key, url="https://x", source="s",
                reporter="r")  # always on, whatever bob saved
    await notifier.run_round()
    mails = smtp.wait_for(lambda m: len(to(m, bob)) >= 2)
    await asyncio.sleep(0.5)
    subjects = [m.subject for m in to(smtp.messages(), bob)]
    assert len(subjects) == 2, subjects
    assert any("old secret" in s for s in subjects) and any("leaked" in s for s in subjects)
    assert mails


async def test_an_event_committed_late_is_still_notified(
        engine: AsyncEngine, http: httpx.AsyncClient, smtp: SmtpServer) -> None:
    """PostgreSQL hands out ids at insert: a lower id may commit after a higher one was
    read. SQLite writes one at a time, so there the test only checks the ordinary path."""
    carol = f"carol-{uuid.uuid4().hex[:6]}@example.org"
    await add_owner(engine, "carol-id", carol)
    notifier = make_notifier(engine, http, smtp)
    await notifier.run_round()
    slow_key = await add_key(engine, "carol-id", utcnow() + timedelta(days=90))
    fast_key = await add_key(engine, "carol-id", utcnow() + timedelta(days=90))
    if engine.dialect.name == "postgresql":
        async with engine.connect() as slow:
            transaction = await slow.begin()
            await record_audit(slow, "revoke", ADMIN, slow_key["id"], "carol-id",
                               {"reason": "slow"})  # takes the lower id, not committed yet
            await audit(engine, "revoke", ADMIN, fast_key, reason="fast")
            await notifier.run_round()  # reads the higher id: the cursor passes the lower
            await transaction.commit()
    else:
        await audit(engine, "revoke", ADMIN, slow_key, reason="slow")
        await audit(engine, "revoke", ADMIN, fast_key, reason="fast")
    await notifier.run_round()
    mails = smtp.wait_for(lambda m: len(to(m, carol)) >= 2)
    assert sorted(m.subject.rsplit("(", 1)[1] for m in to(mails, carol)) == ["fast)", "slow)"]


# --- expiry: exactly once --------------------------------------------------------------------
async def test_expiry_warnings_are_sent_once_across_a_restart(
        engine: AsyncEngine, http: httpx.AsyncClient, smtp: SmtpServer) -> None:
    dana = f"dana-{uuid.uuid4().hex[:6]}@example.org"
    await add_owner(engine, "dana-id", dana)
    first = make_notifier(engine, http, smtp)
    await first.run_round()
    # Crosses "7 days" in a second; another key expires in a second.
    week = await add_key(engine, "dana-id", utcnow() + timedelta(days=7, seconds=1))
    ending = await add_key(engine, "dana-id", utcnow() + timedelta(seconds=1))
    await asyncio.sleep(1.5)
    await first.run_round()
    # A restart: a new worker resumes from the saved cursor, and a worker whose saved state
    # is lost re-reads from scratch; neither sends anything twice.
    await make_notifier(engine, http, smtp).run_round()
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM sync_state WHERE name = 'notifications'"))
    again = make_notifier(engine, http, smtp)
    again._expiry_since = utcnow() - timedelta(days=2)  # as after a long outage
    again._audit_cursor = 0
    await again.collect_expiry()
    await again.deliver_due(asyncio.get_running_loop().time() + 10)
    await asyncio.sleep(0.5)
    mails = to(smtp.messages(), dana)
    assert sorted(m.subject for m in mails) == sorted([
        f"[apikm] Key \u201c{week['name']}\u201d (apikm_{week['public_id']}...) expires in 7 days",
        f"[apikm] Key \u201c{ending['name']}\u201d (apikm_{ending['public_id']}...) expired",
    ])
    assert f"https://apikm.example.org/keys/{week['id']}" in mails[0].text + mails[1].text


# --- webhooks --------------------------------------------------------------------------------
async def test_webhooks_are_signed_retried_after_500s_and_logged(
        engine: AsyncEngine, http: httpx.AsyncClient, smtp: SmtpServer,
        receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    notifier = make_notifier(engine, http, smtp)
    endpoint = await notifier.endpoints.create(url, "SIEM", ["key.created", "key.revoked"],
                                               "admin")
    quiet = await notifier.endpoints.create(url, "only leaks", ["key.leaked"], "admin")
    state.secret = endpoint.secret
    state.script = [500, 503]  # two failures, then 200
    await notifier.run_round()
    await add_owner(engine, "erin-id", None)  # no mail address: webhooks still go
    key = await add_key(engine, "erin-id", utcnow() + timedelta(days=90))
    await audit(engine, "create", Actor("erin-id", "erin"), key)
    for _ in range(40):
        await notifier.run_round()
        if any(g["status"] == 200 for g in state.got):
            break
        await asyncio.sleep(0.2)
    assert [g["status"] for g in state.got] == [500, 503, 200]
    assert len({g["id"] for g in state.got}) == 1  # one message id on every retry
    body = state.got[-1]["body"]
    assert body["type"] == "key.created"
    assert body["data"]["key"] == {"id": key["id"], "public_id": key["public_id"],
                                   "name": key["name"], "hint": f"apikm_{key['public_id']}...",
                                   "expires_at": body["data"]["key"]["expires_at"],
                                   "status": "active"}
    assert key["secret"] not in json.dumps(body)
    sent = [r for r in await rows(engine, notifications) if r.channel == "webhook"]
    assert [(r.recipient, r.status, r.attempts) for r in sent] == [(endpoint.id, "sent", 3)]
    assert quiet.id not in {r.recipient for r in sent}
    attempts = await rows(engine, notification_attempts)
    assert [(a.ok, a.status_code) for a in attempts if a.notification_id == sent[0].id] == [
        (False, 500), (False, 503), (True, 200)]
    log = await outbox.delivery_log(engine)
    assert [a["status_code"] for a in log[0]["attempt_log"]] == [500, 503, 200]
    # The secret is kept encrypted, never in clear.
    async with engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT secret FROM webhook_endpoints"))).all()
    assert all(endpoint.secret.encode() not in bytes(row[0]) for row in stored)


async def test_a_webhook_that_keeps_failing_is_marked_failed(
        engine: AsyncEngine, http: httpx.AsyncClient, smtp: SmtpServer,
        receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    notifier = make_notifier(engine, http, smtp, max_attempts=2)
    endpoint = await notifier.endpoints.create(url, "", [], "admin")
    state.secret, state.script = endpoint.secret, [500] * 10
    await notifier.run_round()
    await add_owner(engine, "fay-id", None)
    key = await add_key(engine, "fay-id", utcnow() + timedelta(days=90))
    await audit(engine, "create", Actor("fay-id", "fay"), key)
    for _ in range(30):
        await notifier.run_round()
        if [r for r in await rows(engine, notifications) if r.status == "failed"]:
            break
        await asyncio.sleep(0.2)
    row = (await rows(engine, notifications))[-1]
    assert (row.status, row.attempts, row.last_error) == ("failed", 2, "HTTP 500")


async def test_test_delivery_reports_the_result(
        engine: AsyncEngine, http: httpx.AsyncClient, smtp: SmtpServer,
        receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    notifier = make_notifier(engine, http, smtp)
    endpoint = await notifier.endpoints.create(url, "", [], "admin")
    state.secret = endpoint.secret
    _, outcome = await notifier.send_test("webhook", endpoint.id, "admin")
    assert outcome.ok and outcome.status_code == 200
    assert state.got[-1]["body"]["type"] == "test"
    address = f"ops-{uuid.uuid4().hex[:6]}@example.org"
    _, outcome = await notifier.send_test("email", address, "admin")
    assert outcome.ok
    assert to(smtp.messages(), address)[0].subject == "[apikm] test notification"
    await notifier.endpoints.set_enabled(endpoint.id, False)
    _, outcome = await notifier.send_test("webhook", endpoint.id, "admin")
    assert not outcome.ok and "disabled" in outcome.error
