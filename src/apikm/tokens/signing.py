"""apikm's JWT signing keys: one set in the database for every replica.

Each key is a row of ``signing_keys``: its public JWK in clear (the JWKS), its private PEM
encrypted with ``APIKM_ENCRYPTION_KEY`` (AES-256-GCM, see ``apikm.encryption``), and a
``generation`` number. The newest key signs; the newest ``PUBLISHED`` keys are served in the
JWKS, so after a rotation tokens signed by the previous key keep validating until they expire.

* Creating "the next key" inserts generation n+1 if absent, so replicas that start together
  (or rotate together) create exactly one key, and all of them load the same one.
* A rotation writes the key and a ``signing`` change event in one transaction; every
  replica's event bus then reloads the set (at once with PostgreSQL's NOTIFY, within 0.1 s
  polling SQLite).
* Keys of an older installation, PEM files in ``APIKM_DATA_DIR/signing-keys/``, are imported
  once, when the table is still empty, so tokens and Keycloak's trust keep their ``kid``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apikm.cluster import events
from apikm.cluster.events import Event, Kind
from apikm.config import ConfigError
from apikm.db import upsert, utcnow
from apikm.encryption import DecryptionError, EncryptionKeys
from apikm.tokens.tables import signing_keys

log = structlog.get_logger(__name__)

ALGORITHMS = ("ES256", "RS256")
PUBLISHED = 2  # the signing key and the one before it
_NAME_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"  # legacy PEM file names: <UTC time>.<alg>.pem
_CREATE_ATTEMPTS = 5

SigningJwk = ECKey | RSAKey


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    generation: int
    created_at: datetime
    public: dict[str, Any]
    jwk: SigningJwk | None  # None: this replica cannot decrypt it (publishes it only)
    encryption_key_id: str = ""

    def public_jwk(self) -> dict[str, Any]:
        return dict(self.public)


def generate_jwk(alg: str) -> SigningJwk:
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    if alg == "RS256":
        return RSAKey.generate_key(2048, private=True)
    raise ValueError(f"unsupported signing algorithm {alg!r}; use one of {ALGORITHMS}")


def import_pem(pem: bytes, alg: str) -> SigningJwk:
    """The private key with kid (RFC 7638 thumbprint: names the key material), alg and use."""
    key_type = ECKey if alg == "ES256" else RSAKey
    kid = key_type.import_key(pem).thumbprint()
    return key_type.import_key(pem, parameters={"kid": kid, "alg": alg, "use": "sig"})


def _associated(kid: str) -> bytes:
    return f"apikm signing key {kid}".encode()


def _row_values(jwk: SigningJwk, alg: str, generation: int, encryption: EncryptionKeys,
                created_at: datetime) -> dict[str, Any]:
    kid = str(jwk.kid)
    key_id, sealed = encryption.encrypt(jwk.as_pem(private=True), _associated(kid))
    return {"generation": generation, "kid": kid, "alg": alg,
            "public_jwk": json.dumps(jwk.as_dict(private=False), sort_keys=True),
            "private_key": sealed, "encryption_key_id": key_id, "created_at": created_at}


async def _insert_if_absent(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    statement = upsert(conn.dialect.name, signing_keys).values(**values)
    result = await conn.execute(statement.on_conflict_do_nothing())
    return result.rowcount == 1


async def _newest_generation(conn: AsyncConnection) -> int:
    return int(await conn.scalar(sa.select(sa.func.max(signing_keys.c.generation))) or 0)


async def read_rows(conn: AsyncConnection, limit: int = PUBLISHED) -> list[sa.Row[Any]]:
    """The newest ``limit`` keys, newest first."""
    result = await conn.execute(sa.select(signing_keys)
                                .order_by(signing_keys.c.generation.desc()).limit(limit))
    return list(result)


async def create_next(conn: AsyncConnection, alg: str, encryption: EncryptionKeys,
                      after: int) -> SigningKey | None:
    """Insert generation ``after + 1`` unless someone already did; retire older keys and
    announce the change. None when another process won (read the table again)."""
    jwk = import_pem(generate_jwk(alg).as_pem(private=True), alg)  # with kid, alg, use
    values = _row_values(jwk, alg, after + 1, encryption, utcnow())
    if not await _insert_if_absent(conn, values):
        return None
    await conn.execute(sa.delete(signing_keys)
                       .where(signing_keys.c.generation <= after + 1 - PUBLISHED))
    await events.emit(conn, Kind.SIGNING, values["kid"])
    log.info("created signing key", kid=values["kid"], alg=alg, generation=after + 1)
    return SigningKey(kid=values["kid"], alg=alg, generation=after + 1,
                      created_at=values["created_at"], public=json.loads(values["public_jwk"]),
                      jwk=jwk, encryption_key_id=values["encryption_key_id"])


def _legacy_files(directory: Path) -> list[tuple[datetime, str, bytes]]:
    found = []
    for path in sorted(directory.glob("*.pem")) if directory.is_dir() else []:
        try:
            stamp, alg, _suffix = path.name.split(".")
            created = datetime.strptime(stamp, _NAME_TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            continue
        if alg in ALGORITHMS:
            found.append((created, alg, path.read_bytes()))
    return found[-PUBLISHED:]


class _LostRace(Exception):
    pass


async def import_legacy_files(engine: AsyncEngine, directory: Path,
                              encryption: EncryptionKeys) -> int:
    """Copy the newest PEM files of an older installation into the empty table, all or none."""
    files = _legacy_files(directory)
    if not files:
        return 0
    async with engine.connect() as conn:
        if await _newest_generation(conn):
            return 0
    try:
        async with engine.begin() as conn:  # inserts first: SQLite takes the write lock
            for generation, (created, alg, pem) in enumerate(files, start=1):
                values = _row_values(import_pem(pem, alg), alg, generation, encryption,
                                     created)
                if not await _insert_if_absent(conn, values):
                    raise _LostRace  # another replica imported or created keys meanwhile
            await events.emit(conn, Kind.SIGNING, "imported")
    except _LostRace:
        return 0
    log.info("imported signing keys into the database; the directory is not read again "
             "and can be removed", count=len(files), directory=str(directory))
    return len(files)


class SigningKeys:
    """The published keys of this replica, kept in step with the table."""

    def __init__(self, engine: AsyncEngine, encryption: EncryptionKeys, alg: str,
                 legacy_dir: Path | None = None) -> None:
        if alg not in ALGORITHMS:
            raise ValueError(f"unsupported signing algorithm {alg!r}")
        self.engine = engine
        self.encryption = encryption
        self.alg = alg
        self.legacy_dir = legacy_dir
        self._keys: list[SigningKey] = []  # newest first
        self._loaded: tuple[tuple[int, str, str], ...] = ()
        self._dirty = False
        self._reloading: asyncio.Task[None] | None = None

    # --- start, reload -------------------------------------------------------------------
    async def start(self) -> None:
        """Import legacy files, make sure a key of ``alg`` is published, load the set."""
        if self.legacy_dir is not None:
            await import_legacy_files(self.engine, self.legacy_dir, self.encryption)
        for _attempt in range(_CREATE_ATTEMPTS):
            async with self.engine.connect() as conn:
                rows = await read_rows(conn)
            if any(row.alg == self.alg for row in rows):
                break
            # The first key, or the first of a newly configured algorithm. The insert comes
            # first in its transaction (SQLite: takes the write lock before reading).
            async with self.engine.begin() as conn:
                await create_next(conn, self.alg, self.encryption,
                                  rows[0].generation if rows else 0)
        else:
            raise RuntimeError("could not create a signing key (concurrent rotations?)")
        if await self._reencrypt(rows):
            async with self.engine.connect() as conn:
                rows = await read_rows(conn)
        self._install(rows)
        current = self._keys[0] if self._keys else None
        if current is None or current.jwk is None:
            raise ConfigError(
                f"the newest signing key ({current.kid if current else '-'}) cannot be "
                f"decrypted with APIKM_ENCRYPTION_KEY: give every replica the same "
                f"APIKM_ENCRYPTION_KEY, including the key id "
                f"{current.encryption_key_id if current else '-'!r} while keys still use it")

    async def reload(self) -> None:
        async with self.engine.connect() as conn:
            rows = await read_rows(conn)
        self._install(rows)

    def on_event(self, event: Event) -> None:
        """Bus subscriber: reload after a rotation anywhere (or after a long bus outage)."""
        if event.kind not in (Kind.SIGNING, Kind.ALL):
            return
        self._dirty = True
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self._reload_while_dirty())

    async def _reload_while_dirty(self) -> None:
        while self._dirty:
            self._dirty = False
            try:
                await self.reload()
            except Exception as exc:  # the next event or the bus's catch-up tries again
                log.warning("reloading signing keys failed", error=str(exc))

    async def stop(self) -> None:
        if self._reloading is not None:
            self._reloading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reloading

    def _install(self, rows: list[sa.Row[Any]]) -> None:
        fingerprint = tuple((row.generation, row.kid, row.encryption_key_id) for row in rows)
        if fingerprint == self._loaded:
            return
        known = {key.kid: key for key in self._keys if key.jwk is not None}
        keys = []
        for row in rows:
            jwk = known[row.kid].jwk if row.kid in known else self._decrypt(row)
            keys.append(SigningKey(kid=row.kid, alg=row.alg, generation=row.generation,
                                   created_at=row.created_at, public=json.loads(row.public_jwk),
                                   jwk=jwk, encryption_key_id=row.encryption_key_id))
        self._keys, self._loaded = keys, fingerprint
        log.info("signing keys loaded", kids=[key.kid for key in keys])

    def _decrypt(self, row: sa.Row[Any]) -> SigningJwk | None:
        try:
            pem = self.encryption.decrypt(row.encryption_key_id, row.private_key,
                                          _associated(row.kid))
        except DecryptionError as exc:
            log.error("signing key cannot be decrypted; it is published but cannot sign",
                      kid=row.kid, error=str(exc))
            return None
        jwk = import_pem(pem, row.alg)
        if jwk.kid != row.kid:
            log.error("signing key does not match its kid; ignored", kid=row.kid)
            return None
        return jwk

    async def _reencrypt(self, rows: list[sa.Row[Any]]) -> int:
        """Move keys protected by an older APIKM_ENCRYPTION_KEY entry to the first one."""
        current, moved = self.encryption.current_id, 0
        for row in rows:
            if row.encryption_key_id == current:
                continue
            try:
                pem = self.encryption.decrypt(row.encryption_key_id, row.private_key,
                                              _associated(row.kid))
            except DecryptionError:
                continue  # reported when loaded
            key_id, sealed = self.encryption.encrypt(pem, _associated(row.kid))
            async with self.engine.begin() as conn:
                await conn.execute(sa.update(signing_keys).where(
                    signing_keys.c.generation == row.generation,
                    signing_keys.c.encryption_key_id == row.encryption_key_id,
                ).values(private_key=sealed, encryption_key_id=key_id))
            moved += 1
            log.info("signing key re-encrypted with the first APIKM_ENCRYPTION_KEY",
                     kid=row.kid, old=row.encryption_key_id, new=key_id)
        return moved

    # --- rotation --------------------------------------------------------------------------
    async def rotate(self) -> SigningKey:
        """A new signing key; the previous one stays published, older ones go. Every
        replica learns of it from the ``signing`` event written with it."""
        for _attempt in range(_CREATE_ATTEMPTS):
            async with self.engine.connect() as conn:
                newest = await _newest_generation(conn)
            async with self.engine.begin() as conn:
                created = await create_next(conn, self.alg, self.encryption, newest)
            if created is not None:
                await self.reload()
                return created
        raise RuntimeError("could not rotate the signing key (concurrent rotations?)")

    # --- reading ---------------------------------------------------------------------------
    def current(self) -> SigningKey:
        """The key that signs: the newest of ``alg`` this replica can use, else the newest
        usable one (another replica may have switched algorithms)."""
        usable = [key for key in self._keys if key.jwk is not None]
        for key in usable:
            if key.alg == self.alg:
                return key
        if not usable:
            raise RuntimeError("no usable signing key loaded (start() not awaited?)")
        return usable[0]

    def published(self) -> list[SigningKey]:
        """The keys a verifier must accept: newest first."""
        return list(self._keys)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in self._keys]}

    def sign(self, claims: dict[str, Any]) -> str:
        key = self.current()
        assert key.jwk is not None
        header = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, key.jwk, algorithms=[key.alg])
