"""Lifecycle rules as pure functions: no HTTP, no SQL, easy to test.

Every function raises ``PolicyError`` with a message fit to show to the caller.
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from limits import parse as parse_rate_limit


class PolicyError(ValueError):
    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.field = field
        self.details = details


MAX_NAME = 100
MAX_DESCRIPTION = 1000
MAX_NETWORKS = 100
# Characters that change how the text around them is shown: control characters, line and
# paragraph separators, private-use and lone surrogates, and the bidirectional overrides
# that make a name read differently from what it is ("Trojan Source").
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")


def _hidden(ch: str) -> bool:
    return unicodedata.category(ch) in _HIDDEN_CATEGORIES or ch in _BIDI_CONTROLS


def check_name(name: str) -> str:
    """A key's name, trimmed: 1 to 100 characters, nothing that hides or reorders text.
    The API, the web UI and the service all use this one rule."""
    if not isinstance(name, str):
        raise PolicyError("the name must be text", field="name")
    value = name.strip()
    if not value:
        raise PolicyError("the name must not be empty", field="name")
    if len(value) > MAX_NAME:
        raise PolicyError(f"the name is too long (at most {MAX_NAME} characters)", field="name")
    if any(_hidden(ch) for ch in value):
        raise PolicyError("the name must not contain control characters, line breaks or "
                          "text-direction marks", field="name")
    return value


MAX_REASON = 255


def check_reason(reason: str) -> str:
    """Why a key was revoked (the owner reads it): trimmed, 1 to 255 characters, one line."""
    if not isinstance(reason, str):
        raise PolicyError("the reason must be text", field="reason")
    value = reason.strip()
    if not value or len(value) > MAX_REASON:
        raise PolicyError(f"give a reason of 1 to {MAX_REASON} characters", field="reason")
    if any(_hidden(ch) for ch in value):
        raise PolicyError("the reason must not contain control characters, line breaks or "
                          "text-direction marks", field="reason")
    return value


def storable(text: str) -> bool:
    """Text a database can hold and compare: PostgreSQL refuses NUL, UTF-8 lone surrogates.
    An id that is not storable names nothing stored, so a lookup by it finds nothing."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_description(description: str) -> str:
    """Free text of at most 1000 characters; line breaks and tabs allowed, other control
    characters (terminal escapes, NUL) and lone surrogates not."""
    if not isinstance(description, str):
        raise PolicyError("the description must be text", field="description")
    if len(description) > MAX_DESCRIPTION:
        raise PolicyError(f"the description is too long (at most {MAX_DESCRIPTION} characters)",
                          field="description")
    if any(_hidden(ch) and ch not in "\t\n\r" for ch in description):
        raise PolicyError("the description must not contain control characters other than "
                          "line breaks and tabs", field="description")
    return description


@dataclass(frozen=True)
class LifetimePolicy:
    default: timedelta
    maximum: timedelta


def resolve_expiry(requested: datetime | None, now: datetime, policy: LifetimePolicy) -> datetime:
    """The key's expiry: the default when none is asked, never past the maximum lifetime."""
    if requested is None:
        return now + policy.default
    if requested.tzinfo is None:
        raise PolicyError("expires_at needs a time zone (e.g. 'Z')", field="expires_at")
    if requested <= now:
        raise PolicyError("expires_at must be in the future", field="expires_at")
    if requested > now + policy.maximum:
        limit = now + policy.maximum
        raise PolicyError(
            f"expires_at is beyond the maximum lifetime ({policy.maximum.days} days); "
            f"the latest allowed is {limit.isoformat()}",
            field="expires_at",
        )
    return requested


def narrowed_expiry(current: datetime, requested: datetime, now: datetime) -> datetime:
    """Updates may bring an expiry closer, never push it further (no silent extensions)."""
    if requested.tzinfo is None:
        raise PolicyError("expires_at needs a time zone (e.g. 'Z')", field="expires_at")
    if requested <= now:
        raise PolicyError("expires_at must be in the future", field="expires_at")
    if requested > current:
        raise PolicyError(
            "expires_at can only be brought forward; rotate or create a key for longer",
            field="expires_at",
        )
    return requested


def refused_roles(requested: Iterable[str], held: Iterable[str]) -> list[str]:
    """The requested roles the caller does not hold (empty list: all allowed)."""
    held_set = set(held)
    return sorted({role for role in requested if role not in held_set})


def normalize_roles(roles: Iterable[str]) -> list[str]:
    """Sorted, unique role names: ``role`` (realm) or ``client_id:role`` (client).

    Names are taken exactly as given: ``" analyst"`` or ``"analyst\n"`` is a misspelling,
    refused like any other, not silently trimmed into a role the caller did not type.
    """
    result = set()
    for role in roles:
        if not isinstance(role, str):
            raise PolicyError("role names must be strings", field="roles")
        client, sep, client_role = role.partition(":")
        if (not role or role != role.strip() or not role.isprintable()
                or (sep and (not client or not client_role
                             or client != client.strip() or client_role != client_role.strip()))):
            raise PolicyError(f"invalid role name {role!r}: no leading or trailing spaces, no "
                              "control characters, 'role' or 'client_id:role'", field="roles")
        result.add(role)
    return sorted(result)


def normalize_networks(networks: Iterable[str]) -> list[str]:
    """CIDR list in canonical form (IPv4 and IPv6); a bare address means that one host.
    At most ``MAX_NETWORKS``, whichever way they come (the API's JSON, the web UI's text
    box, an import): the check per request walks them all."""
    result: list[str] = []
    for count, network in enumerate(networks, start=1):
        if count > MAX_NETWORKS:
            raise PolicyError(f"a key allows at most {MAX_NETWORKS} networks",
                              field="allowed_networks")
        try:
            canonical = str(ipaddress.ip_network(network.strip(), strict=False))
        except ValueError:
            shown = network if len(network) <= 64 else network[:64] + "…"
            raise PolicyError(
                f"{shown!r} is not an IP network in CIDR notation (e.g. 10.0.0.0/8)",
                field="allowed_networks",
            ) from None
        if canonical not in result:
            result.append(canonical)
    return result


MAX_META_DEPTH = 8  # the meta object itself is level 1


def _meta_problem(meta: Any, max_depth: int) -> str | None:
    """What makes ``meta`` unfit to store (depth, non-JSON values, text PostgreSQL refuses),
    found without recursion so no nesting can exhaust the stack."""
    stack: list[tuple[Any, int]] = [(meta, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth > max_depth:
                return f"meta is nested more than {max_depth} levels deep"
            for name, item in value.items():
                if not isinstance(name, str):
                    return "meta keys must be strings"
                stack.append((name, depth))
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > max_depth:
                return f"meta is nested more than {max_depth} levels deep"
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            if "\x00" in value:
                return "meta must not contain NUL characters (\\u0000)"
            try:
                value.encode()
            except UnicodeEncodeError:
                return "meta must not contain lone surrogates (invalid UTF-16 escapes)"
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                return "meta must not contain NaN or Infinity"
        elif value is not None and not isinstance(value, bool | int):
            return "meta must contain only JSON values"
    return None


def check_meta(meta: dict[str, Any], max_bytes: int,
               max_depth: int = MAX_META_DEPTH) -> dict[str, Any]:
    """A JSON object of at most ``max_bytes`` (UTF-8, compact) and ``max_depth`` levels."""
    if not isinstance(meta, dict):
        raise PolicyError("meta must be a JSON object", field="meta")
    problem = _meta_problem(meta, max_depth)
    if problem is not None:
        raise PolicyError(problem, field="meta")
    # NaN and Infinity are not JSON: PostgreSQL refuses them, SQLite cannot read them
    text = json.dumps(meta, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    size = len(text.encode())
    if size > max_bytes:
        raise PolicyError(
            f"meta is {size} bytes as JSON; the limit is {max_bytes}", field="meta"
        )
    return meta


def displayable_meta(meta: Any, max_depth: int = MAX_META_DEPTH) -> dict[str, Any]:
    """Stored meta as it can be shown and serialised: a row written before the depth limit
    (or by hand) must not break listings, so containers below ``max_depth`` become their
    JSON text, and anything but an object is wrapped."""
    if not isinstance(meta, dict):
        return {"value": _as_text(meta)}
    if _meta_problem(meta, max_depth) is None:
        return meta
    cut: dict[str, Any] = _cut(meta, max_depth)
    return cut


def _cut(value: Any, levels: int) -> Any:
    """``levels``: how many more levels of containers may follow (0: none).
    Recursion is bounded by the depth cap, never by the data."""
    if isinstance(value, dict):
        if levels <= 0:
            return _as_text(value)
        return {str(k): _cut(v, levels - 1) for k, v in value.items()}
    if isinstance(value, list):
        if levels <= 0:
            return _as_text(value)
        return [_cut(v, levels - 1) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    return value


def _as_text(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), default=str)
    except (ValueError, TypeError, RecursionError):
        return "[unreadable]"


# A per-key limit is one window of at most a day (the limiter keeps one counter per window):
# limits' notation for a single limit, "100/minute", "100 per minute", "5/10 minutes".
_RATE_LIMIT = re.compile(r"\s*([0-9]{1,9})\s*(?:/|per)\s*(?:([0-9]{1,9})\s*)?"
                         r"(second|minute|hour|day)s?\s*", re.IGNORECASE)
_WINDOW_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MAX_RATE_LIMIT_AMOUNT = 1_000_000
MAX_RATE_LIMIT_WINDOW = timedelta(days=1)


def check_rate_limit(value: str | None) -> str | None:
    """``N/<second|minute|hour|day>`` (or ``N per ...``, ``N/M minutes``), 1 <= N <= 10^6,
    a window of at most one day; returned in the canonical form ``100/minute``."""
    if value is None:
        return None
    match = _RATE_LIMIT.fullmatch(value)
    if match is None:
        raise PolicyError(
            f"{value!r} is not a rate limit such as '100/minute', '5000/hour' or "
            "'10 per 5 seconds' (one limit; the window in seconds, minutes, hours or days)",
            field="rate_limit",
        )
    amount, multiples = int(match.group(1)), int(match.group(2) or 1)
    unit = match.group(3).lower()
    if not 1 <= amount <= MAX_RATE_LIMIT_AMOUNT:
        raise PolicyError(f"a rate limit allows 1 to {MAX_RATE_LIMIT_AMOUNT:,} requests per "
                          "window", field="rate_limit")
    window = multiples * _WINDOW_SECONDS[unit]
    if not 1 <= window <= MAX_RATE_LIMIT_WINDOW.total_seconds():
        raise PolicyError("a rate limit's window is 1 second to 1 day (e.g. '20000/day')",
                          field="rate_limit")
    canonical = f"{amount}/{unit}" if match.group(2) is None else f"{amount}/{multiples} {unit}s"
    parse_rate_limit(canonical)  # what the limiter will read: must parse the same
    return canonical


def rotation_overlap(seconds: int, maximum: timedelta) -> timedelta:
    if seconds < 0:
        raise PolicyError("overlap_seconds must not be negative", field="overlap_seconds")
    if seconds > maximum.total_seconds():  # compared as numbers: no timedelta overflows
        raise PolicyError(
            f"overlap_seconds exceeds the maximum of {int(maximum.total_seconds())}",
            field="overlap_seconds",
        )
    return timedelta(seconds=seconds)
