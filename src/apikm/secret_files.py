"""Files that hold secrets (peppers, session secrets) must be private to their owner."""

from __future__ import annotations

import stat
from pathlib import Path


def others_may_access(path: Path) -> str | None:
    """Why the file is not private (for an error message), or None when it is 0600 or
    stricter. Group or world bits of any kind count: readable leaks the secret, writable lets
    someone else choose it."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return (f"{path} can be accessed by group or others (mode {mode:04o}); "
                f"run: chmod 600 {path}")
    return None
