"""APIKeyManager's setting names, read beside apikm's own.

Old names that mean something here are read; when an old name and its apikm name are both
set and disagree, apikm refuses to start and names both (a silent pick would hide a typo).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apikm.config import Settings

# Attribute names become JSON keys and header names (X-Auth-Attr-<name>): HTTP token
# characters only.
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ROOT_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")
MAX_ATTRIBUTES = 50

# (old name, apikm name): both are APIKM_ settings.
RENAMED = (("oidc_endpoint", "keycloak_url"), ("oidc_realm", "keycloak_realm"))


def attribute_names(value: object) -> object:
    """``'a,b'`` or ``'["a", "b"]'`` (APIKeyManager accepted both) -> checked names."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError("not a JSON list of attribute names") from None
        else:
            value = [item.strip() for item in text.split(",") if item.strip()]
    if not isinstance(value, list):
        return value  # pydantic says what is wrong
    names: list[str] = []
    for name in value:
        if not isinstance(name, str) or not _ATTRIBUTE_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an attribute name (1-64 letters, digits, "
                             "'_', '.', '-')")
        if name not in names:
            names.append(name)
    if len(names) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes")
    return names


def check_root_path(value: str) -> str:
    """``/apikm`` (a trailing slash is dropped); empty: served at the root."""
    path = value.strip().rstrip("/")
    if path and not _ROOT_PATH.fullmatch(path):
        raise ValueError("must be a path such as /apikm (letters, digits, '.', '_', '~', '-')")
    return path


def apply_old_names(settings: Settings) -> None:
    """Copy each old name's value to its apikm name; refuse when both are set and differ."""
    given = settings.model_fields_set
    for old, new in RENAMED:
        value = getattr(settings, old)
        if not value:
            continue
        if new in given and getattr(settings, new) != value:
            raise ValueError(
                f"APIKM_{old.upper()} (APIKeyManager's name) is {value!r} but "
                f"APIKM_{new.upper()} is {getattr(settings, new)!r}: set only "
                f"APIKM_{new.upper()}")
        setattr(settings, new, value)
