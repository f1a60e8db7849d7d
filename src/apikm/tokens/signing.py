"""apikm's own JWT signing keys, kept as PEM files under ``APIKM_DATA_DIR/signing-keys/``.

One file per key, named ``<UTC creation time>.<alg>.pem`` so that the name orders keys by age
without trusting file times. The newest key signs; the newest ``PUBLISHED`` keys are served in
the JWKS, so after a rotation tokens signed by the previous key keep validating until they
expire. Files are created 0600 in a 0700 directory, written under a temporary name and
renamed, so a reader never sees half a key. Several processes sharing the directory (uvicorn
workers, replicas on a shared volume) notice each other's rotations: the directory is
re-read when its modification time changes, checked at most once a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

log = structlog.get_logger(__name__)

ALGORITHMS = ("ES256", "RS256")
PUBLISHED = 2  # the signing key and the one before it
RELOAD_CHECK_SECONDS = 1.0
_NAME_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"

SigningJwk = ECKey | RSAKey


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    jwk: SigningJwk
    created_at: datetime

    def public_jwk(self) -> dict[str, Any]:
        return dict(self.jwk.as_dict(private=False))


def generate_jwk(alg: str) -> SigningJwk:
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    if alg == "RS256":
        return RSAKey.generate_key(2048, private=True)
    raise ValueError(f"unsupported signing algorithm {alg!r}; use one of {ALGORITHMS}")


def _load_file(path: Path) -> SigningKey | None:
    try:
        stamp, alg, _suffix = path.name.split(".")
        created = datetime.strptime(stamp, _NAME_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    if alg not in ALGORITHMS:
        return None
    if path.stat().st_mode & 0o077:
        log.warning("signing key file is readable by others; chmod 600 it", file=str(path))
    pem = path.read_bytes()
    key_type = ECKey if alg == "ES256" else RSAKey
    bare = key_type.import_key(pem)
    # RFC 7638 thumbprint: a kid that names the key material itself, stable across restarts.
    kid = bare.thumbprint()
    jwk = key_type.import_key(pem, parameters={"kid": kid, "alg": alg, "use": "sig"})
    return SigningKey(kid=kid, alg=alg, jwk=jwk, created_at=created)


class SigningKeys:
    def __init__(self, directory: Path, alg: str) -> None:
        if alg not in ALGORITHMS:
            raise ValueError(f"unsupported signing algorithm {alg!r}")
        self.directory = directory
        self.alg = alg
        self._keys: list[SigningKey] = []  # oldest first
        self._seen_mtime: float | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    # --- reading ------------------------------------------------------------------------
    def current(self) -> SigningKey:
        """The key that signs now; creates the first one when there is none of ``alg``."""
        self._refresh()
        for key in reversed(self._keys):
            if key.alg == self.alg:
                return key
        return self.rotate()

    def published(self) -> list[SigningKey]:
        """The keys a verifier must accept: newest first."""
        self.current()
        return list(reversed(self._keys[-PUBLISHED:]))

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in self.published()]}

    def sign(self, claims: dict[str, Any]) -> str:
        key = self.current()
        header = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, key.jwk, algorithms=[key.alg])

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < RELOAD_CHECK_SECONDS:
            return
        self._checked_at = now
        try:
            mtime = self.directory.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if not force and mtime == self._seen_mtime:
            return
        with self._lock:
            self._keys = self._load_all()
            self._seen_mtime = mtime

    def _load_all(self) -> list[SigningKey]:
        if not self.directory.is_dir():
            return []
        keys = []
        for path in sorted(self.directory.glob("*.pem")):
            key = _load_file(path)
            if key is not None:
                keys.append(key)
        return keys

    # --- rotation -------------------------------------------------------------------------
    def rotate(self) -> SigningKey:
        """Create a new signing key; the previous one stays published, older ones go."""
        with self._exclusive():
            self._write_new_key()
            self._prune()
        self._refresh(force=True)
        return self._keys[-1]

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (self.directory / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write_new_key(self) -> None:
        pem = generate_jwk(self.alg).as_pem(private=True)
        stamp = datetime.now(UTC).strftime(_NAME_TIME_FORMAT)
        target = self.directory / f"{stamp}.{self.alg}.pem"
        temporary = self.directory / f".{stamp}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        log.info("created signing key", file=target.name)

    def _prune(self) -> None:
        files = sorted(p for p in self.directory.glob("*.pem") if _load_file(p) is not None)
        for stale in files[:-PUBLISHED]:
            stale.unlink(missing_ok=True)
            log.info("retired signing key", file=stale.name)
