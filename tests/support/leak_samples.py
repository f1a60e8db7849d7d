"""Text with generated apikm keys in the places people paste them, and near misses that a
secret scanner rule must not report: wrong length, wrong prefix, underscores, keys glued
inside longer tokens."""

from __future__ import annotations

from apikm.keys.format import generate_key

_PLACES = (
    "APIKM_API_KEY={key}",
    'api_key: "{key}"',
    "curl -H 'X-API-Key: {key}' https://maps.example.org/data/",
    "gdalinfo /vsicurl/https://maps.example.org/data/dem.tif?apikey={key}&x=1",
    "{key}",
    "  Authorization: Bearer {key}",
    "export TOKEN='{key}' # do not commit",
)


def near_misses(prefix: str = "apikm") -> list[str]:
    """Strings around a real key's shape that are not a key standing alone."""
    key = generate_key(prefix).full
    body = key[len(prefix) + 1:]
    return [
        key[:-1],  # one character short
        f"{prefix}_{body[:-2]}",  # two short
        "x" + key,  # glued after a letter
        "7" + key,  # after a digit
        key + "Q",  # one character long (glued before a letter)
        key + "0",  # glued before a digit
        f"my_{key}",  # after an underscore
        f"{key}_backup",  # before an underscore
        f"{prefix}__{body}",  # two underscores
        f"{prefix}_{body[:20]}_{body[20:]}",  # an underscore inside the body
        f"{prefix[:-1]}x_{body}",  # wrong prefix
        f"{prefix.upper()}_{body}",  # prefix in upper case
        f"{prefix}-{body}",  # dash instead of underscore
        f"{prefix}_{body[:10]}-{body[11:]}",  # a character outside base62
        f"{prefix}{body}",  # no separator
    ]


def sample(count: int = 20, prefix: str = "apikm") -> tuple[str, list[str]]:
    """(text, the keys in it): ``count`` generated keys, each on its own line amid near
    misses and ordinary text."""
    keys = [generate_key(prefix).full for _ in range(count)]
    lines = ["# settings", "name = demo"]
    for index, key in enumerate(keys):
        lines.append(_PLACES[index % len(_PLACES)].format(key=key))
        lines.append(f"token_{index} = {near_misses(prefix)[index % 15]}")
    lines.extend(near_misses(prefix))
    return "\n".join(lines) + "\n", keys
