"""Issue 13 end to end: what verification notices (alerts), what a leak report records, and
what the notifier sends, joined through real ``apikm serve`` processes: a real SMTP server
(STARTTLS, AUTH), a webhook receiver checking every signature with the Standard Webhooks
reference library, the real Keycloak; one server on SQLite, two replicas on one PostgreSQL
(each alert mailed exactly once), with ``APIKM_REVOKE_ON_SECRET_REUSE=true``."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import httpx
import pytest

from apikm.devstack import keycloak as devstack
from apikm.keys.format import CHECKSUM_LENGTH, SECRET_LENGTH
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.keys import age_key, new_key, user_client, verify_key
from tests.support.postgres import fresh_database
from tests.support.replicas import DEMO_SYNC_SECRET
from tests.support.smtp import Received, SmtpServer, smtp_server
from tests.support.webhooks import Delivery, WebhookReceiver, webhook_receiver

pytestmark = pytest.mark.integration

OWNER = "alice@example.org"  # alice's address in the demo realm
ADMINS = "security@example.org"
ALERT_EVENTS = ["key.new_network", "key.secret_reuse", "key.limit_tripped", "key.leaked",
                "key.revoked"]
SETTLE = 2.0  # several notifier rounds (0.3 s) and alert flushes (0.5 s): nothing more comes


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def servers(request: pytest.FixtureRequest, keycloak: devstack.StackInfo,
            token: Callable[[str], str], smtp: SmtpServer,
            hooks: WebhookReceiver) -> Iterator[tuple[ApikmServer, ...]]:
    """SQLite: one server; PostgreSQL: two replicas of one database, both delivering."""
    settings = {"peppers": f"t1:{secrets.token_urlsafe(24)}",
                "oidc_client_secret": DEMO_SYNC_SECRET, "smtp_url": smtp.url,
                "smtp_from": "apikm <apikm@example.org>", "admin_emails": ADMINS,
                "notify_interval_seconds": "0.3", "public_url": "https://apikm.example.org",
                "revoke_on_secret_reuse": "true", "rate_limit": "1000/minute"}
    with ExitStack() as stack:
        if request.param == "sqlite":
            found: tuple[ApikmServer, ...] = (
                stack.enter_context(apikm_server(None, keycloak.base_url, **settings)),)
        else:
            database = fresh_database(request.getfixturevalue("postgres_url"))
            found = tuple(stack.enter_context(apikm_server(database, keycloak.base_url,
                                                           **settings)) for _ in range(2))
        with httpx.Client(base_url=found[-1].url, timeout=30, headers={
                "Authorization": f"Bearer {token('admin')}"}) as admin:
            made = admin.post("/v1/admin/webhooks", json={"url": hooks.url,
                                                           "events": ALERT_EVENTS})
            assert made.status_code == 201, made.text
            hooks.secret = made.json()["secret"]
        yield found


@pytest.fixture
def alice(servers: tuple[ApikmServer, ...],
          token: Callable[[str], str]) -> Iterator[httpx.Client]:
    with user_client(servers[0].url, token("alice")) as client:
        yield client


@pytest.fixture
def anyone(servers: tuple[ApikmServer, ...]) -> Iterator[list[httpx.Client]]:
    """An unauthenticated client per replica (the test runs on loopback: a trusted proxy, so
    the ``client_ip`` it names is believed)."""
    with ExitStack() as stack:
        yield [stack.enter_context(httpx.Client(base_url=s.url, timeout=30)) for s in servers]


# --- helpers -------------------------------------------------------------------------------
def subnet() -> str:
    """A fresh /24 (the first three octets) for each test and run."""
    raw = uuid.uuid4().int
    return f"10.{raw % 250}.{(raw >> 8) % 250}"


def about(key: dict[str, Any]) -> Callable[[Received], bool]:
    return lambda mail: f"\u201c{key['name']}\u201d" in mail.subject


def alert_mails(smtp: SmtpServer, key: dict[str, Any]) -> list[Received]:
    """Mails about the key, but the owner's own "created" and "rotated" ones."""
    return [m for m in smtp.messages() if about(key)(m)
            and not m.subject.endswith((" was created", " was rotated: it has a new secret"))]


def settled(smtp: SmtpServer, key: dict[str, Any], expected: int) -> list[Received]:
    """The alert mails about the key once ``expected`` came and a while added none."""
    smtp.wait_for(lambda _got: len(alert_mails(smtp, key)) >= expected, timeout=30)
    time.sleep(SETTLE)
    return alert_mails(smtp, key)


def to(mails: list[Received], address: str) -> list[Received]:
    return [m for m in mails if m.recipients == [address]]


def hooks_about(hooks: WebhookReceiver, key: dict[str, Any]) -> list[Delivery]:
    return [d for d in hooks.deliveries()
            if ((d.body.get("data") or {}).get("key") or {}).get("id") == key["id"]]


def audit(admin_or_owner: httpx.Client, key: dict[str, Any]) -> list[dict[str, Any]]:
    found = admin_or_owner.get(f"/v1/keys/{key['id']}/audit")
    assert found.status_code == 200, found.text
    events: list[dict[str, Any]] = found.json()
    return events


def minute(at: str) -> str:
    """How mails show a time."""
    return datetime.fromisoformat(at).strftime("%Y-%m-%d %H:%M UTC")


def assert_no_secret(smtp: SmtpServer, hooks: WebhookReceiver,
                     servers: tuple[ApikmServer, ...], *keys: str) -> None:
    """No key, no key's secret part, no webhook or SMTP secret in any mail, webhook or log."""
    mails = "\n".join(m.raw.decode(errors="replace") for m in smtp.messages())
    mails += "\n".join(m.text + m.subject for m in smtp.messages())  # decoded too
    webhooks = "\n".join(d.raw for d in hooks.deliveries())
    logs = "\n".join(s.log_text() for s in servers)
    hook_secret = hooks.secret.removeprefix("whsec_")
    for key in keys:
        secret_part = key[-(SECRET_LENGTH + CHECKSUM_LENGTH):-CHECKSUM_LENGTH]
        for text in (mails, webhooks, logs):
            assert key not in text and secret_part not in text
    for text in (mails, webhooks, logs):
        assert smtp.password not in text
        assert not hook_secret or hook_secret not in text


# --- the tests -----------------------------------------------------------------------------
def test_use_from_a_new_network_is_mailed_and_posted_once(
        servers: tuple[ApikmServer, ...], alice: httpx.Client, anyone: list[httpx.Client],
        smtp: SmtpServer, hooks: WebhookReceiver) -> None:
    key = new_key(alice)
    age_key(servers[0], key["id"])  # past its first day: new networks are news now
    net = subnet()
    for client in anyone * 2:  # every replica sees it, twice, from two addresses
        for address in (f"{net}.7", f"{net}.8"):
            assert verify_key(client, key["key"], client_ip=address)["code"] == "VALID"
    mails = settled(smtp, key, 2)
    [owner], [admin] = to(mails, OWNER), to(mails, ADMINS)
    assert len(mails) == 2, [(m.recipients, m.subject) for m in mails]
    assert owner.subject == (f"[apikm] Key \u201c{key['name']}\u201d ({key['hint']}) was used "
                             "from a network it was never used from")
    assert admin.subject.startswith("[apikm] alert: ") and " of alice " in admin.subject
    [alert] = [e for e in audit(alice, key) if e["action"] == "new_network"]
    details = alert["details"]
    assert details["network"] == f"{net}.0/24" and details["address"] in (f"{net}.7",
                                                                         f"{net}.8")
    for mail in (owner, admin):
        text = mail.text
        assert key["public_id"] in text and key["hint"] in text
        assert f"Network:    {net}.0/24" in text
        assert f"Client address: {details['address']}" in text
        assert f"When:       {minute(details['at'])}" in text  # the use, not the write
    hooks.wait_for(lambda _d: bool(hooks_about(hooks, key)))
    time.sleep(0.5)
    [posted] = hooks_about(hooks, key)
    assert posted.body["type"] == "key.new_network"
    data = posted.body["data"]
    assert data["key"]["public_id"] == key["public_id"] and data["owner"]["username"] == "alice"
    assert (data["details"]["network"], data["details"]["address"], data["details"]["at"]) == (
        details["network"], details["address"], details["at"])
    assert hooks.rejected == 0
    assert_no_secret(smtp, hooks, servers, key["key"])


def test_a_reused_old_secret_revokes_the_key_and_says_so(
        servers: tuple[ApikmServer, ...], alice: httpx.Client, anyone: list[httpx.Client],
        smtp: SmtpServer, hooks: WebhookReceiver) -> None:
    key = new_key(alice)
    rotated = alice.post(f"/v1/keys/{key['id']}/rotate", json={"overlap_seconds": 1})
    assert rotated.status_code == 200, rotated.text
    time.sleep(1.2)  # the overlap is over
    address = f"{subnet()}.9"
    for client in anyone:
        answer = verify_key(client, key["key"], client_ip=address)
        assert answer["code"] == "REVOKED", answer
    mails = settled(smtp, key, 2)
    assert len(mails) == 2, [(m.recipients, m.subject) for m in mails]  # no revocation mail
    [owner], [admin] = to(mails, OWNER), to(mails, ADMINS)
    label = f"Key \u201c{key['name']}\u201d ({key['hint']})"
    assert owner.subject == (f"[apikm] {label} was presented with its old secret after the "
                             "rotation overlap ended (possible leak) and has been revoked")
    assert admin.subject == (f"[apikm] alert: {label} of alice was presented with its old "
                             "secret after the rotation overlap ended (possible leak) and has "
                             "been revoked")
    assert f"Client address: {address}" in owner.text
    assert "Secret generation: 1" in owner.text
    assert "revoke the key" not in owner.text  # done already
    events = audit(alice, key)
    [reuse] = [e for e in events if e["action"] == "secret_reuse"]
    assert (reuse["details"]["generation"], reuse["details"]["address"],
            reuse["details"]["revoked"]) == (1, address, True)
    [revoke] = [e for e in events if e["action"] == "revoke"]
    assert revoke["details"] == {"reason": "secret_reuse"} and revoke["actor_id"] == "apikm"
    assert alice.get(f"/v1/keys/{key['id']}").json()["status"] == "revoked"
    assert verify_key(anyone[-1], rotated.json()["key"])["code"] == "REVOKED"
    hooks.wait_for(lambda _d: len(hooks_about(hooks, key)) >= 2)
    time.sleep(0.5)
    assert sorted(d.body["type"] for d in hooks_about(hooks, key)) == [
        "key.revoked", "key.secret_reuse"]  # receivers get every event they asked for
    assert_no_secret(smtp, hooks, servers, key["key"], rotated.json()["key"])


def test_a_tripped_key_rate_limit_is_mailed_once(
        servers: tuple[ApikmServer, ...], alice: httpx.Client, anyone: list[httpx.Client],
        smtp: SmtpServer, hooks: WebhookReceiver) -> None:
    key = new_key(alice, rate_limit="2/minute")
    address = f"{subnet()}.10"
    for client in anyone:  # without Redis each replica applies the limit: both trip it
        codes = [verify_key(client, key["key"], client_ip=address)["code"] for _ in range(8)]
        assert codes[:2] == ["VALID", "VALID"] and set(codes[2:]) == {"RATE_LIMITED"}
    mails = settled(smtp, key, 2)
    assert len(mails) == 2, [(m.recipients, m.subject) for m in mails]
    [owner], [admin] = to(mails, OWNER), to(mails, ADMINS)
    assert owner.subject.endswith(") tripped its own rate limit")
    assert "Limit:      its own rate limit" in owner.text
    assert admin.subject.endswith(" of alice tripped its own rate limit")
    assert [e["details"]["limit"] for e in audit(alice, key)
            if e["action"] == "limit_tripped"] == ["key_rate"]
    assert_no_secret(smtp, hooks, servers, key["key"])


def test_a_leaked_older_generation_revokes_under_the_policy(
        servers: tuple[ApikmServer, ...], alice: httpx.Client, anyone: list[httpx.Client],
        token: Callable[[str], str], smtp: SmtpServer, hooks: WebhookReceiver) -> None:
    """A secret two rotations old (only in ``retired_secrets``) reported leaked: a real leak
    signal; with APIKM_REVOKE_ON_SECRET_REUSE=true the key is revoked, and its owner gets the
    leak's mail (one), the admins an alert."""
    key = new_key(alice)
    second = alice.post(f"/v1/keys/{key['id']}/rotate", json={}).json()
    third = alice.post(f"/v1/keys/{key['id']}/rotate", json={}).json()
    with httpx.Client(base_url=servers[-1].url, timeout=30, headers={
            "Authorization": f"Bearer {token('admin')}"}) as admin:
        reported = admin.post("/v1/leaks", json=[{"token": key["key"], "type": "apikm_api_key",
                                                  "url": "https://paste.example/p/1"}])
    assert reported.status_code == 200, reported.text
    [entry] = reported.json()
    assert (entry["label"], entry["outcome"], entry["key_id"]) == (
        "true_positive", "revoked", key["id"])
    deadline = time.monotonic() + 1
    while verify_key(anyone[0], third["key"])["code"] != "REVOKED":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    mails = settled(smtp, key, 2)
    assert len(mails) == 2, [(m.recipients, m.subject) for m in mails]
    [owner], [admin] = to(mails, OWNER), to(mails, ADMINS)
    assert owner.subject.endswith(") was reported leaked and has been revoked")
    assert "Secret generation: 1" in owner.text and "https://paste.example/p/1" in owner.text
    [leak] = [e for e in audit(alice, key) if e["action"] == "leak_reported"]
    assert leak["details"]["generation"] == 1
    assert_no_secret(smtp, hooks, servers, key["key"], second["key"], third["key"])


# --- without APIKM_REVOKE_ON_SECRET_REUSE ---------------------------------------------------
@pytest.fixture(scope="module")
def lenient(keycloak: devstack.StackInfo, smtp: SmtpServer) -> Iterator[ApikmServer]:
    """One server on SQLite with the default policy: old secrets alert, revoke nothing."""
    with apikm_server(None, keycloak.base_url, oidc_client_secret=DEMO_SYNC_SECRET,
                      smtp_url=smtp.url, admin_emails=ADMINS, notify_interval_seconds="0.3",
                      rate_limit="1000/minute") as server:
        yield server


def test_without_the_policy_old_secrets_are_told_and_the_key_kept(
        lenient: ApikmServer, token: Callable[[str], str], smtp: SmtpServer,
        hooks: WebhookReceiver) -> None:
    with user_client(lenient.url, token("alice")) as alice, \
            user_client(lenient.url, token("admin")) as admin, \
            httpx.Client(base_url=lenient.url, timeout=30) as anyone:
        key = new_key(alice)
        second = alice.post(f"/v1/keys/{key['id']}/rotate", json={}).json()
        third = alice.post(f"/v1/keys/{key['id']}/rotate", json={}).json()
        address = f"{subnet()}.11"
        answer = verify_key(anyone, second["key"], client_ip=address)
        assert (answer["code"], answer["reason"]) == ("REVOKED", "rotated")
        mails = settled(smtp, key, 2)
        [owner], [alert] = to(mails, OWNER), to(mails, ADMINS)
        label = f"Key \u201c{key['name']}\u201d ({key['hint']})"
        assert owner.subject == (f"[apikm] {label} was presented with its old secret after the "
                                 "rotation overlap ended (possible leak)")
        assert "Secret generation: 2" in owner.text and "Revoked as well: no" in owner.text
        assert "revoke the key and create a new one" in owner.text
        assert alert.subject.startswith(f"[apikm] alert: {label} of alice was presented")
        # The oldest generation (kept only in retired_secrets) reported leaked: told, kept.
        reported = admin.post("/v1/leaks", json=[{"token": key["key"],
                                                  "url": "https://paste.example/p/2"}])
        assert reported.status_code == 200, reported.text
        assert reported.json()[0]["outcome"] == "rotated_away"
        mails = settled(smtp, key, 4)
        assert len(mails) == 4, [(m.recipients, m.subject) for m in mails]
        leak = [m for m in to(mails, OWNER) if "leaked" in m.subject]
        assert [m.subject for m in leak] == [
            f"[apikm] {label} was reported leaked: an old, rotated-away secret of it (the key "
            "still works)"]
        assert "Secret generation: 1" in leak[0].text
        assert "https://paste.example/p/2" in leak[0].text
        assert len([m for m in to(mails, ADMINS) if "leaked" in m.subject]) == 1
        assert verify_key(anyone, third["key"])["code"] == "VALID"
        assert alice.get(f"/v1/keys/{key['id']}").json()["status"] == "active"
        assert_no_secret(smtp, hooks, (lenient,), key["key"], second["key"], third["key"])
