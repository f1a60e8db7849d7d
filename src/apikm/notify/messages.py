"""What a notification says: mail subject and text, webhook body. Pure functions.

A payload (stored with the outbox row when the event is enqueued) holds the event type, the
key's name, public id and hint, owner and actor names, and the allow-listed details: never
a secret. As a last guard, everything rendered goes through the log redactor, which masks
anything shaped like a key or a JWT.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apikm.logs import Redactor
from apikm.notify import rules

SUBJECT_PREFIX = "[apikm] "

_WHAT: dict[str, str] = {
    "key.created": "was created",
    "key.rotated": "was rotated: it has a new secret",
    "key.renewed": "has a new expiry date",
    "key.revoked": "was revoked",
    "key.suspended": "was suspended",
    "key.reactivated": "works again",
    rules.EXPIRED: "expired",
    "key.new_network": "was used from a network it was never used from",
    "key.secret_reuse": "was presented with its old secret after the rotation overlap ended "
                        "(possible leak)",
    "key.leaked": "was reported leaked and has been revoked",
    "key.limit_tripped": "tripped a limit",
}

_LABELS = {"reason": "Reason", "network": "Network", "address": "Client address",
           "generation": "Secret generation", "revoked": "Revoked as well", "limit": "Limit",
           "url": "Found at", "source": "Reported by (source)", "reporter": "Reporter",
           "overlap_seconds": "Old secret valid for (seconds)", "expires_at": "Expires",
           "previous_expires_at": "Expired before"}
_LIMITS = {"key_rate": "its own rate limit", "failures": "the failure limit"}


@dataclass(frozen=True)
class Mail:
    subject: str
    text: str


def _key_label(payload: Mapping[str, Any]) -> str:
    key = payload.get("key") or {}
    if not key:
        return "A key"
    return f"Key \u201c{key.get('name', '')}\u201d ({key.get('hint', '')})"


def _what(payload: Mapping[str, Any]) -> str:
    event = str(payload.get("type", ""))
    details = payload.get("details") or {}
    if event == rules.EXPIRING:
        days = int(payload.get("days", 0))
        return f"expires in {days} day{'s' if days != 1 else ''}"
    if event == "key.limit_tripped":
        return "tripped " + _LIMITS.get(str(details.get("limit", "")), "a limit")
    if event == "key.leaked" and (payload.get("key") or {}).get("status") not in (None,
                                                                                "revoked"):
        # A rotated-away secret whose overlap had ended: recorded, the key left working.
        return "was reported leaked: an old, rotated-away secret of it (the key still works)"
    if event == "key.revoked" and details.get("reason"):
        return f"was revoked ({details['reason']})"
    if event == "key.secret_reuse" and details.get("revoked") is True:
        return _WHAT[event] + " and has been revoked"  # APIKM_REVOKE_ON_SECRET_REUSE
    return _WHAT.get(event, event)


def _shown(name: str, value: object) -> str:
    """A detail's value as a person reads it."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name == "limit":
        return _LIMITS.get(str(value), str(value))
    if name in ("expires_at", "previous_expires_at"):
        return _when(value)
    return str(value)


def _when(value: object) -> str:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M UTC")
        except ValueError:
            return value
    return ""


def render_mail(payload: Mapping[str, Any], audience: str, base_url: str,
                redactor: Redactor) -> Mail:
    event = str(payload.get("type", ""))
    if event == rules.TEST:
        return Mail(SUBJECT_PREFIX + "test notification",
                    redactor.scrub(f"This is a test mail from apikm at {base_url}.\n"
                                   f"Sent by {payload.get('actor', {}).get('name', 'an admin')}"
                                   " from the notification settings.\n"))
    key = payload.get("key") or {}
    owner = payload.get("owner") or {}
    label = _key_label(payload)
    alert = audience == "admin"
    subject = f"{label} {_what(payload)}"
    if alert:
        subject = f"alert: {label} of {owner.get('username', '?')} {_what(payload)}"
    lines = [f"{label} {_what(payload)}.", ""]
    if key:
        lines += [f"Key:        {key.get('name', '')}",
                  f"Public id:  {key.get('public_id', '')} (the key starts with "
                  f"{key.get('hint', '')})"]
        if key.get("expires_at"):
            lines.append(f"Expires:    {_when(key['expires_at'])}")
    if alert and owner:
        lines.append(f"Owner:      {owner.get('username', '')}")
    details = payload.get("details") or {}
    # An alert's own time (the use that raised it), else when the event was recorded.
    lines.append(f"When:       {_when(details.get('at') or payload.get('at'))}")
    actor = payload.get("actor") or {}
    if actor.get("name"):
        lines.append(f"By:         {actor['name']}")
    for name, value in details.items():
        if name != "at":
            lines.append(f"{_LABELS.get(name, name) + ':':<11} {_shown(name, value)}")
    lines.append("")
    if key.get("id"):
        path = "/admin/keys?user=" + str(owner.get("username", "")) if alert \
            else f"/keys/{key['id']}"
        lines.append(f"See the key: {base_url}{path}")
    if event in ("key.secret_reuse", "key.leaked", "key.new_network") and not alert:
        lines.append("If this was not you, create a new key." if key.get("status") == "revoked"
                     else "If this was not you, revoke the key and create a new one.")
    lines += ["", "--", "apikm, personal API keys. This mail holds no secret." if alert else
              f"apikm, personal API keys. Choose which mails you get: "
              f"{base_url}/settings/notifications"]
    return Mail(redactor.scrub(SUBJECT_PREFIX + subject), redactor.scrub("\n".join(lines) + "\n"))


def webhook_body(payload: Mapping[str, Any], redactor: Redactor) -> str:
    """The Standard Webhooks payload shape: ``{"type", "timestamp", "data"}``."""
    data = {k: v for k, v in payload.items() if k not in ("type", "at")}
    body = {"type": payload.get("type"), "timestamp": payload.get("at"), "data": data}
    return redactor.scrub(json.dumps(body, separators=(",", ":"), sort_keys=True))
