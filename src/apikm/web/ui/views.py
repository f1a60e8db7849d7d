"""What the templates show, computed in Python: status wording, warnings, the usage chart."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

EXPIRING_SOON = timedelta(days=7)


@dataclass(frozen=True)
class KeyState:
    """A key's status as a person reads it: a label, a tone and, if it stopped, why."""

    label: str
    tone: str  # ok | warn | bad | muted: one CSS class per tone
    reason: str | None = None
    expiring_soon: bool = False


def key_state(key: Mapping[str, Any], now: datetime,
              owner: Mapping[str, Any] | None = None) -> KeyState:
    status = key["status"]
    if status == "revoked":
        when = format_datetime(key["revoked_at"])
        reason = f"Revoked {when} by {key['revoked_by'] or 'unknown'}"
        given = key.get("revoked_reason") or ""
        if given and not given.lower().startswith("revoked by"):  # not a default wording
            reason += f": {given}"
        return KeyState("Revoked", "muted", reason + ".")
    if status == "expired":
        return KeyState("Expired", "bad", f"Expired {format_datetime(key['expires_at'])}. "
                        "Renew it on its page to use it again (same secret), or create a new one.")
    if status == "suspended":
        since = owner.get("disabled_at") if owner else None
        when = f" since {format_datetime(since)}" if since else ""
        return KeyState("Suspended", "bad", f"The owner's Keycloak account is disabled{when}. "
                        "The key works again if the account is re-enabled in time.")
    left = key["expires_at"] - now
    if left <= EXPIRING_SOON:
        return KeyState("Active", "warn", None, expiring_soon=True)
    return KeyState("Active", "ok")


def lost_roles(key: Mapping[str, Any], current_roles: Iterable[str]) -> list[str]:
    """Granted roles the owner no longer holds: the key silently lacks them now."""
    held = set(current_roles)
    return [role for role in key["roles"] if role not in held]


def format_datetime(value: datetime | None) -> str:
    if value is None:
        return "never"
    return value.strftime("%Y-%m-%d %H:%M UTC")


def iso_utc(value: datetime) -> str:
    """For <time datetime>: always with its zone, so a browser never reads it as local."""
    if value.tzinfo is None:  # stored as UTC; some drivers hand it back naive
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def relative(value: datetime | None, now: datetime) -> str:
    """'in 3 days', '5 minutes ago': the precision a person needs at a glance."""
    if value is None:
        return "never"
    delta = value - now
    seconds = abs(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            # Whole units, rounded: a 7-day key created a second ago expires "in 7 days".
            count = int(seconds / size + 0.5)
            text = f"{count} {unit}{'s' if count != 1 else ''}"
            break
    else:
        return "just now"
    return f"in {text}" if delta.total_seconds() > 0 else f"{text} ago"


# --- the 30-day usage chart, as SVG geometry -------------------------------------------
CHART_WIDTH, CHART_HEIGHT = 900, 190
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 44, 8, 12, 28


@dataclass(frozen=True)
class Bar:
    day: str
    count: int
    x: float
    y: float
    width: float
    height: float
    label: str | None  # a date under every few bars


@dataclass(frozen=True)
class Chart:
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[float, int], ...]  # (y, value) for the horizontal grid
    total: int
    peak: int
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    left: int = _PAD_LEFT
    baseline: float = CHART_HEIGHT - _PAD_BOTTOM


def _nice_ceiling(value: int) -> int:
    for step in (1, 2, 5):
        for power in range(0, 12):
            candidate = step * int(10**power)
            if candidate >= value:
                return candidate
    return value


def usage_chart(daily: Iterable[Mapping[str, Any]], today: date, days: int = 30) -> Chart:
    counts = {str(row["day"]): int(row["count"]) for row in daily}
    series = [(today - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    values = [counts.get(day, 0) for day in series]
    top = _nice_ceiling(max(max(values), 4))
    plot_w = CHART_WIDTH - _PAD_LEFT - _PAD_RIGHT
    plot_h = CHART_HEIGHT - _PAD_TOP - _PAD_BOTTOM
    slot = plot_w / days
    bars = []
    for i, (day, count) in enumerate(zip(series, values, strict=True)):
        height = plot_h * count / top
        label = day[5:] if i % 5 == 4 or i == 0 else None
        bars.append(Bar(day, count, round(_PAD_LEFT + i * slot + slot * 0.15, 1),
                        round(_PAD_TOP + plot_h - height, 1), round(slot * 0.7, 1),
                        round(height, 1), label))
    ticks = tuple((round(_PAD_TOP + plot_h - plot_h * f, 1), int(top * f))
                  for f in (0.0, 0.5, 1.0))
    return Chart(tuple(bars), ticks, sum(values), max(values))
