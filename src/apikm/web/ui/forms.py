"""The create-key form: choices offered, and posted values turned into a ``NewKey``.

Errors are collected per field so the page can show every problem at once, next to its
field; the lifecycle rules themselves stay in ``keys.policy`` and ``KeyService``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from starlette.datastructures import FormData

from apikm.config import Settings
from apikm.keys.policy import (
    MAX_META_DEPTH,
    PolicyError,
    check_description,
    check_meta,
    check_name,
    check_rate_limit,
    normalize_networks,
)
from apikm.keys.service import KeyChanges, NewKey

PRESET_DAYS = (7, 30, 90)
META_EXAMPLE = 'Metadata must be a JSON object, e.g. {"project": "ndvi"}'
# Service field names -> form field names, for errors raised by KeyService.
FIELD_OF = {"expires_at": "expiry", "allowed_networks": "networks", "meta": "meta",
            "roles": "roles", "name": "name", "description": "description",
            "all_roles": "roles", "rate_limit": "rate_limit"}


@dataclass(frozen=True)
class ExpiryOption:
    value: str
    label: str


@dataclass(frozen=True)
class ExpiryChoices:
    options: tuple[ExpiryOption, ...]
    default: str
    min_date: str  # ISO dates: what a native date input takes and sends
    max_date: str
    max_days: int
    max_label: str  # the last day in words, as people read it whatever their locale


def expiry_choices(settings: Settings, today: date) -> ExpiryChoices:
    default_days = settings.default_apikey_ttl_hour / 24
    max_days = settings.max_apikey_ttl_hour // 24
    options = [ExpiryOption(str(d), f"{d} days") for d in PRESET_DAYS
               if d * 24 <= settings.max_apikey_ttl_hour]
    default_label = (f"{default_days:g} day{'s' if default_days != 1 else ''}"
                     if default_days >= 1 else f"{settings.default_apikey_ttl_hour} hours")
    options.insert(0, ExpiryOption("default", f"Default ({default_label})"))
    options.append(ExpiryOption("date", "Until a date"))
    latest = today + timedelta(hours=settings.max_apikey_ttl_hour)
    return ExpiryChoices(tuple(options), "default", (today + timedelta(days=1)).isoformat(),
                         latest.isoformat(), max_days, day_in_words(latest))


def day_in_words(day: date) -> str:
    """'23 November 2027': unambiguous in every locale, unlike 11/23/2027 or 23/11/2027."""
    return f"{day.day} {day:%B %Y}"


@dataclass
class NewKeyForm:
    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    new_key: NewKey | None = None


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def parse_new_key(form: FormData, settings: Settings, now: datetime) -> NewKeyForm:
    values: dict[str, Any] = {
        "name": _text(form, "name"),
        "description": _text(form, "description"),
        "expiry": _text(form, "expiry") or "default",
        "expiry_date": _text(form, "expiry_date"),
        "roles": [r for r in form.getlist("roles") if isinstance(r, str)],
        "all_roles": _text(form, "all_roles") == "on",
        "networks": _text(form, "networks"),
        "meta": _text(form, "meta"),
    }
    result = NewKeyForm(values)
    errors = result.errors
    if not values["name"]:
        errors["name"] = "Give the key a name, e.g. the tool or machine that will use it."
    else:
        _check(check_name, values["name"], "name", errors)
    _check(check_description, values["description"], "description", errors)
    expires_at = _expiry(values, settings, now, errors)
    networks = _networks(values["networks"], errors)
    meta = _meta(values["meta"], settings.max_meta_bytes, errors)
    if values["all_roles"] and values["roles"]:
        errors["roles"] = ("Either tick \"All my roles\" or pick roles, not both.")
    if not errors:
        result.new_key = NewKey(name=values["name"], description=values["description"],
                                roles=values["roles"], expires_at=expires_at,
                                allowed_networks=networks, meta=meta,
                                all_roles=values["all_roles"])
    return result


def _check(rule: Callable[[str], str], value: str, name: str, errors: dict[str, str]) -> None:
    """The service's own rule, its message shown next to the field."""
    try:
        rule(value)
    except PolicyError as exc:
        errors[name] = sentence(str(exc))


def sentence(message: str) -> str:
    """A policy message ("the name is too long") as a sentence for the page."""
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


def _expiry(values: dict[str, Any], settings: Settings, now: datetime,
            errors: dict[str, str]) -> datetime | None:
    choice = values["expiry"]
    latest = now + timedelta(hours=settings.max_apikey_ttl_hour)
    if choice == "default":
        return None
    if choice.isascii() and choice.isdigit() and int(choice) in PRESET_DAYS:
        expires = now + timedelta(days=int(choice))
    elif choice == "date":
        day = _day(values["expiry_date"])
        if day is None:
            errors["expiry"] = "Pick the day the key should expire in the date field."
            return None
        # The key lives through the whole chosen day (UTC); on the last allowed day, up to
        # the policy's limit.
        expires = datetime.combine(day, time(23, 59, 59), tzinfo=UTC)
        if day == latest.date():
            expires = min(expires, latest)
        if expires <= now:
            errors["expiry"] = "Pick a day after today."
            return None
    else:
        errors["expiry"] = "Choose how long the key should live."
        return None
    if expires > latest:
        errors["expiry"] = (f"Keys can live at most {settings.max_apikey_ttl_hour // 24} days: "
                            f"pick {day_in_words(latest.date())} or earlier.")
        return None
    return expires


def _day(text: str) -> date | None:
    """The date input's value: ISO (YYYY-MM-DD), what every browser's native input sends,
    whatever it displays."""
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _networks(text: str, errors: dict[str, str]) -> list[str]:
    entries = [n for n in re.split(r"[\s,]+", text) if n]
    try:
        return normalize_networks(entries)
    except PolicyError as exc:
        errors["networks"] = str(exc)
        return []


def _meta(text: str, max_bytes: int, errors: dict[str, str]) -> dict[str, Any]:
    if not text:
        return {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        errors["meta"] = (f"{META_EXAMPLE}; error at line {exc.lineno}, column {exc.colno}.")
        return {}
    except ValueError:  # a number too long to convert, say
        errors["meta"] = f"{META_EXAMPLE}."
        return {}
    except RecursionError:
        errors["meta"] = f"Metadata can be nested at most {MAX_META_DEPTH} levels deep."
        return {}
    if not isinstance(meta, dict):
        errors["meta"] = f"{META_EXAMPLE}."
        return {}
    try:
        return check_meta(meta, max_bytes)
    except PolicyError as exc:
        errors["meta"] = sentence(str(exc))
        return {}


# --- the key page: edit the fields a key owner may change at any time --------------------
@dataclass
class KeyEditForm:
    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    changes: KeyChanges | None = None


def edit_values(key: dict[str, Any]) -> dict[str, Any]:
    """A key's editable fields as the form shows them."""
    return {"name": key["name"], "description": key["description"] or "",
            "networks": "\n".join(key["allowed_networks"]),
            "meta": json.dumps(key["meta"], indent=2, ensure_ascii=False) if key["meta"] else "",
            "rate_limit": key["rate_limit"] or ""}


def parse_key_edit(form: FormData, key: dict[str, Any], settings: Settings) -> KeyEditForm:
    """Posted fields -> the changes to make (only what differs from ``key``), or errors."""
    values = {name: _text(form, name) for name in ("name", "description", "networks", "meta",
                                                    "rate_limit")}
    result = KeyEditForm(values)
    errors = result.errors
    if not values["name"]:
        errors["name"] = "Give the key a name, e.g. the tool or machine that will use it."
    else:
        _check(check_name, values["name"], "name", errors)
    _check(check_description, values["description"], "description", errors)
    networks = _networks(values["networks"], errors)
    meta = _meta(values["meta"], settings.max_meta_bytes, errors)
    rate_limit = _rate_limit(values["rate_limit"], errors)
    if errors:
        return result
    result.changes = KeyChanges(
        name=values["name"] if values["name"] != key["name"] else None,
        description=(values["description"]
                     if values["description"] != (key["description"] or "") else None),
        allowed_networks=networks if networks != list(key["allowed_networks"]) else None,
        meta=meta if meta != key["meta"] else None,
        rate_limit=rate_limit if rate_limit not in (None, key["rate_limit"]) else None,
        clear_rate_limit=rate_limit is None and key["rate_limit"] is not None)
    return result


def _rate_limit(text: str, errors: dict[str, str]) -> str | None:
    if not text:
        return None
    try:
        return check_rate_limit(text)
    except PolicyError as exc:
        errors["rate_limit"] = sentence(str(exc))
        return None


def parse_renewal(form: FormData, settings: Settings,
                  now: datetime) -> tuple[dict[str, Any], dict[str, str], datetime | None]:
    """The renew form: (values, errors, new expiry; None for the policy's default)."""
    values = {"expiry": _text(form, "expiry") or "default",
              "expiry_date": _text(form, "expiry_date")}
    errors: dict[str, str] = {}
    expires_at = _expiry(values, settings, now, errors)
    return values, errors, expires_at
