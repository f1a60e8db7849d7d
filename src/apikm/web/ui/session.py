"""Web UI sessions: an encrypted cookie plus a small in-process cache of access tokens.

The cookie (JWE, ``dir`` + A256GCM, so it is both secret and tamper-proof) carries the
session id, the CSRF token, the absolute expiry, the Keycloak refresh token and, when it
fits, the ID token (only needed as ``id_token_hint`` at logout). Access tokens, which carry
the user's roles and live about five minutes, stay in memory keyed by session id; on a miss
(another worker, a restart, expiry) the refresh token buys a fresh one, so every page acts
with the user's *current* Keycloak roles. When Keycloak's own session ends (logout
elsewhere, idle timeout, user disabled) the refresh fails and so does ours.

Why not a server-side table: three Keycloak tokens (~3.3 kB) do not fit a cookie, but the
refresh token alone (~0.7 kB) does, and a cookie needs no migration, no cleanup job and
works across replicas.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from apikm.identity.principal import Principal
from apikm.secret_files import others_may_access

SESSION_COOKIE = "apikm_session"
SECURE_SESSION_COOKIE = "__Host-apikm_session"  # browsers enforce Secure, Path=/, no Domain
LOGIN_COOKIE = "apikm_login"
LOGIN_TTL_SECONDS = 600
# Browsers drop cookies above 4096 bytes (name + value + attributes) without a word.
MAX_COOKIE_BYTES = 3800
MIN_SECRET_BYTES = 32
_JWE_HEADER = {"alg": "dir", "enc": "A256GCM", "zip": "DEF"}


class SecretError(ValueError):
    pass


def parse_session_secrets(spec: str) -> list[bytes]:
    """``'new,old'`` -> secrets; the first encrypts, every one decrypts (rotation)."""
    result = [part.strip().encode() for part in spec.split(",") if part.strip()]
    if not result:
        raise SecretError("APIKM_SESSION_SECRET is empty")
    for secret in result:
        if len(secret) < MIN_SECRET_BYTES:
            raise SecretError(f"APIKM_SESSION_SECRET entries need {MIN_SECRET_BYTES}+ bytes")
    return result


def load_or_create_secret_file(path: Path) -> list[bytes]:
    """Development default: a random secret in a 0600 file beside the SQLite database."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker won the race; use its secret
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48) + "\n")
    problem = others_may_access(path)
    if problem:  # whoever reads it can open and forge session cookies
        raise SecretError(f"refusing the session secret file: {problem}")
    return parse_session_secrets(path.read_text().strip())


class CookieCodec:
    """Encrypts small JSON documents into cookie-safe strings (compact JWE)."""

    def __init__(self, secrets_: list[bytes], purpose: str) -> None:
        # One derived key per purpose, so a login cookie can never pass for a session.
        self._keys = [OctKey.import_key(hmac.digest(s, f"apikm {purpose} v1".encode(), "sha256"))
                      for s in secrets_]

    def encode(self, payload: dict[str, Any]) -> str:
        data = json.dumps(payload, separators=(",", ":")).encode()
        return jwe.encrypt_compact(_JWE_HEADER, data, self._keys[0])

    def decode(self, value: str) -> dict[str, Any] | None:
        for key in self._keys:
            try:
                plaintext = jwe.decrypt_compact(value, key).plaintext
            except (JoseError, ValueError, TypeError):
                continue
            try:
                payload = json.loads(plaintext or b"")
            except ValueError:
                return None
            return payload if isinstance(payload, dict) else None
        return None


@dataclass(frozen=True)
class Session:
    sid: str
    user_id: str
    username: str
    csrf: str
    expires_at: float  # unix time; the absolute end of this session
    refresh_token: str
    id_token: str | None = None

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires_at

    def with_tokens(self, refresh_token: str, id_token: str | None) -> Session:
        return replace(self, refresh_token=refresh_token, id_token=id_token or self.id_token)

    def __repr__(self) -> str:  # tokens must never reach a log through repr()
        return f"Session(user={self.username!r}, expires_at={self.expires_at})"


def new_session(user_id: str, username: str, lifetime_seconds: int, refresh_token: str,
                id_token: str | None) -> Session:
    return Session(sid=secrets.token_urlsafe(16), user_id=user_id, username=username,
                   csrf=secrets.token_urlsafe(32), expires_at=time.time() + lifetime_seconds,
                   refresh_token=refresh_token, id_token=id_token)


class SessionCodec:
    def __init__(self, secrets_: list[bytes]) -> None:
        self._codec = CookieCodec(secrets_, "session")

    def encode(self, session: Session) -> str:
        value = self._codec.encode(asdict(session))
        if len(value) > MAX_COOKIE_BYTES and session.id_token:
            # Logout then falls back to client_id (Keycloak asks the user to confirm).
            value = self._codec.encode(asdict(replace(session, id_token=None)))
        return value

    def decode(self, value: str) -> Session | None:
        payload = self._codec.decode(value)
        if payload is None:
            return None
        try:
            session = Session(**payload)
        except TypeError:
            return None
        return None if session.expired() else session


@dataclass(frozen=True)
class CachedAccess:
    access_token: str
    principal: Principal
    valid_until: float  # unix time, a little before the token's own expiry


class AccessCache:
    """Access tokens by session id (bounded), and the ids of sessions that were ended.

    Ending is remembered until the session would have expired anyway, so a copied cookie
    replayed after logout is refused by this process at once; other processes refuse it at
    the latest when their cached access token expires and the refresh fails.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, CachedAccess] = OrderedDict()
        self._ended: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._max = max_entries

    def get(self, sid: str) -> CachedAccess | None:
        entry = self._entries.get(sid)
        if entry is None or entry.valid_until <= time.time():
            return None
        self._entries.move_to_end(sid)
        return entry

    def put(self, sid: str, entry: CachedAccess) -> None:
        self._entries[sid] = entry
        self._entries.move_to_end(sid)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def lock(self, sid: str) -> asyncio.Lock:
        # One refresh per session at a time: parallel requests reuse its result.
        if len(self._locks) > self._max:
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        return self._locks.setdefault(sid, asyncio.Lock())

    def end(self, session: Session) -> None:
        self._entries.pop(session.sid, None)
        now = time.time()
        self._ended = {k: v for k, v in self._ended.items() if v > now}
        self._ended[session.sid] = session.expires_at

    def is_ended(self, sid: str) -> bool:
        return sid in self._ended

