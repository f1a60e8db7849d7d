"""Mail and webhook texts: what happened, to which key, and nothing secret."""

from __future__ import annotations

import json
from typing import Any

from apikm.keys.format import generate_key
from apikm.logs import Redactor
from apikm.notify import messages

REDACTOR = Redactor("apikm")
BASE = "https://apikm.example.org"


def payload(event: str, **extra: Any) -> dict[str, Any]:
    return {"type": event, "id": "audit:7", "at": "2030-01-10T12:00:00+00:00",
            "key": {"id": "k-1", "public_id": "AbCd1234", "name": "gdal laptop",
                    "hint": "apikm_AbCd1234...", "expires_at": "2030-02-01T00:00:00+00:00"},
            "owner": {"id": "u-1", "username": "alice"},
            "actor": {"id": "admin-id", "name": "admin"}, "details": {}, **extra}


def test_subject_names_the_event_the_key_and_its_hint() -> None:
    mail = messages.render_mail(payload("key.revoked", details={"reason": "left the team"}),
                                "owner", BASE, REDACTOR)
    assert mail.subject == "[apikm] Key \u201cgdal laptop\u201d (apikm_AbCd1234...) was revoked " \
                           "(left the team)"
    assert f"{BASE}/keys/k-1" in mail.text
    assert "left the team" in mail.text and "By:         admin" in mail.text


def test_expiry_warning_says_how_many_days() -> None:
    assert "expires in 7 days" in messages.render_mail(
        payload("key.expiring", days=7), "owner", BASE, REDACTOR).subject
    assert "expires in 1 day" in messages.render_mail(
        payload("key.expiring", days=1), "owner", BASE, REDACTOR).subject


def test_admin_alert_names_the_owner() -> None:
    mail = messages.render_mail(payload("key.new_network", details={
        "network": "203.0.113.0/24", "address": "203.0.113.9"}), "admin", BASE, REDACTOR)
    assert mail.subject.startswith("[apikm] alert: ") and "of alice" in mail.subject
    assert "203.0.113.0/24" in mail.text and "Owner:      alice" in mail.text


def test_limits_are_named() -> None:
    mail = messages.render_mail(payload("key.limit_tripped", details={"limit": "failures"}),
                                "owner", BASE, REDACTOR)
    assert "tripped the failure limit" in mail.subject


def test_a_key_that_slipped_into_an_event_is_masked() -> None:
    secret = generate_key("apikm").full
    leaked = payload("key.leaked", details={"url": f"https://paste.example/?k={secret}"})
    leaked["key"]["name"] = secret  # even as a key's name
    mail = messages.render_mail(leaked, "owner", BASE, REDACTOR)
    body = messages.webhook_body(leaked, REDACTOR)
    for text in (mail.subject, mail.text, body):
        assert secret not in text
    assert "[key]" in mail.text
    json.loads(body)  # still JSON


def test_webhook_body_is_the_standard_webhooks_shape() -> None:
    body = json.loads(messages.webhook_body(payload("key.created"), REDACTOR))
    assert body["type"] == "key.created"
    assert body["timestamp"] == "2030-01-10T12:00:00+00:00"
    assert body["data"]["key"]["hint"] == "apikm_AbCd1234..."
    assert body["data"]["id"] == "audit:7"


def test_a_leak_of_an_old_secret_does_not_claim_a_revocation() -> None:
    revoked = payload("key.leaked")
    revoked["key"]["status"] = "revoked"
    assert "has been revoked" in messages.render_mail(revoked, "owner", BASE, REDACTOR).subject
    old = payload("key.leaked")
    old["key"]["status"] = "active"
    subject = messages.render_mail(old, "owner", BASE, REDACTOR).subject
    assert "rotated-away secret" in subject and "revoked" not in subject


def test_an_alert_says_when_the_use_happened_and_each_detail_is_spaced() -> None:
    mail = messages.render_mail(payload("key.new_network", details={
        "network": "203.0.113.0/24", "address": "203.0.113.9",
        "at": "2030-01-10T11:58:41+00:00"}), "owner", BASE, REDACTOR)
    assert "When:       2030-01-10 11:58 UTC" in mail.text  # the use, not the audit write
    assert "Client address: 203.0.113.9" in mail.text
    assert "Network:    203.0.113.0/24" in mail.text
    assert "2030-01-10T11:58:41" not in mail.text


def test_a_reused_secret_that_revoked_the_key_says_so() -> None:
    revoked = payload("key.secret_reuse", details={"generation": 1, "revoked": True})
    revoked["key"]["status"] = "revoked"
    mail = messages.render_mail(revoked, "owner", BASE, REDACTOR)
    assert mail.subject.endswith("(possible leak) and has been revoked")
    assert "Revoked as well: yes" in mail.text and "Secret generation: 1" in mail.text
    assert "revoke the key" not in mail.text and "create a new key" in mail.text
    kept = messages.render_mail(payload("key.secret_reuse", details={"revoked": False}),
                                "owner", BASE, REDACTOR)
    assert kept.subject.endswith("(possible leak)") and "revoke the key" in kept.text


def test_a_limit_is_named_in_the_text_too() -> None:
    mail = messages.render_mail(payload("key.limit_tripped", details={"limit": "key_rate"}),
                                "admin", BASE, REDACTOR)
    assert "Limit:      its own rate limit" in mail.text
