"""Checking reported tokens against the database and acting on the keys found.

A token that is not shaped like one of our keys, or whose checksum is wrong, never reaches
the database. The others are looked up by HMAC under every configured pepper (as the
verifier does), as current or previous (rotation) secret, and, while imported APIKeyManager
keys exist, as the old service's unsalted SHA-256 of a uuid4 key.

Every key found is revoked through ``KeyService.revoke`` (audit row and change event in one
transaction, so every replica's cache drops it within a second), with reason ``leaked`` and,
in the same transaction, an audit row ``leak_reported`` with details
``{"url", "source", "reporter"}``. An already revoked key gets the ``leak_reported`` row only.

A rotated-away secret whose overlap has ended (the key's previous secret, or any older
generation kept in ``retired_secrets``) opens nothing, but is still a real leak signal: it
is labelled a true positive and ``leak_reported`` is recorded with its ``generation`` (its
owner and the admins are told). The key itself is revoked only under the policy that
governs a reused old secret, ``APIKM_REVOKE_ON_SECRET_REUSE``.

GitHub's reports carry no timestamp or nonce, so a captured signed report can be replayed,
and GitHub itself resends a report it got no answer to. Neither records anything new: a
key already reported from the same ``url`` and ``source`` gets no second ``leak_reported``
row (nor a second mail), and revocation is idempotent. Two copies racing on two replicas
may still both be recorded; they revoke nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.compat.legacy_keys import is_legacy_key, legacy_digest
from apikm.db import utcnow, write_transaction
from apikm.identity.tables import owners
from apikm.keys.format import parse_key
from apikm.keys.hashing import PepperRing
from apikm.keys.service import Actor, KeyNotFound, KeyService, derived_status, record_audit
from apikm.keys.tables import api_keys, audit_events, retired_secrets
from apikm.leaks.reports import Outcome, Reported

LEAKED = "leaked"  # the revocation reason the owner reads
LEAK_REPORTED = "leak_reported"  # the audit action the notifier follows
_CHUNK = 200  # tokens per lookup query (each brings one hash per pepper)


@dataclass(frozen=True)
class KnownKey:
    id: str
    public_id: str
    owner_id: str
    owner_username: str | None
    status: str  # active, expired, suspended or revoked
    old_secret: bool  # the token is a rotated-away secret of the key, its overlap ended
    generation: int | None = None  # the secret generation the token is, when it is old


@dataclass(frozen=True)
class Checked:
    """What a token is: MALFORMED (no lookup), UNKNOWN, or one of our keys (``key``)."""

    well_formed: bool
    key: KnownKey | None = None

    @property
    def outcome_if_left(self) -> Outcome:
        return Outcome.UNKNOWN if self.well_formed else Outcome.MALFORMED


MALFORMED = Checked(False)
UNKNOWN = Checked(True)


@dataclass(frozen=True)
class Handled:
    outcome: Outcome
    key: KnownKey | None


class LeakHandler:
    def __init__(self, engine: AsyncEngine, peppers: PepperRing, prefix: str,
                 keys: KeyService, revoke_retired: bool = False) -> None:
        self._engine = engine
        self._peppers = peppers
        self._prefix = prefix
        self._keys = keys
        # APIKM_REVOKE_ON_SECRET_REUSE: a leaked rotated-away secret revokes its key too.
        self._revoke_retired = revoke_retired

    # --- look up -------------------------------------------------------------------------
    async def check(self, tokens: Iterable[str]) -> dict[str, Checked]:
        """token -> what it is, for every distinct token."""
        checked: dict[str, Checked] = {}
        wanted: dict[str, str] = {}  # candidate hash -> token
        legacy: bool | None = None
        for token in dict.fromkeys(tokens):
            if parse_key(token, self._prefix) is not None:
                hashes = list(self._peppers.candidates(token))
            elif is_legacy_key(token):
                if legacy is None:
                    legacy = await self._imported_keys_exist()
                if not legacy:
                    checked[token] = MALFORMED
                    continue
                hashes = [*self._peppers.candidates(token), legacy_digest(token)]
            else:
                checked[token] = MALFORMED
                continue
            checked[token] = UNKNOWN
            wanted.update(dict.fromkeys(hashes, token))
        now = utcnow()
        digests = list(wanted)
        step = _CHUNK * (len(self._peppers.peppers) + 1)
        for start in range(0, len(digests), step):
            for row in await self._rows(digests[start:start + step]):
                for digest, previous in ((row.secret_hash, False),
                                         (row.previous_secret_hash, True)):
                    owner_of = wanted.get(digest) if digest else None
                    if owner_of is not None:
                        checked[owner_of] = Checked(True, _known(row, previous, now))
        await self._check_retired(checked, wanted, now)
        return checked

    async def _check_retired(self, checked: dict[str, Checked], wanted: dict[str, str],
                             now: datetime) -> None:
        """Tokens no live secret matched, looked up among the retired generations."""
        left = [digest for digest, token in wanted.items() if checked[token].key is None]
        for start in range(0, len(left), _CHUNK):
            for row in await self._retired_rows(left[start:start + _CHUNK]):
                checked[wanted[row.secret_hash]] = Checked(True, KnownKey(
                    id=row.id, public_id=row.public_id, owner_id=row.owner_id,
                    owner_username=row.username,
                    status=derived_status(row.status, row.expires_at, now),
                    old_secret=True, generation=row.generation))

    async def _retired_rows(self, digests: Sequence[str]) -> Sequence[Any]:
        query = (
            sa.select(retired_secrets.c.secret_hash, retired_secrets.c.generation,
                      api_keys.c.id, api_keys.c.public_id, api_keys.c.owner_id,
                      api_keys.c.status, api_keys.c.expires_at, owners.c.username)
            .select_from(retired_secrets
                         .join(api_keys, api_keys.c.id == retired_secrets.c.key_id)
                         .outerjoin(owners, owners.c.user_id == api_keys.c.owner_id))
            .where(retired_secrets.c.secret_hash.in_(digests)))
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).all()

    async def _rows(self, digests: Sequence[str]) -> Sequence[Any]:
        query = (
            sa.select(api_keys.c.id, api_keys.c.public_id, api_keys.c.owner_id,
                      api_keys.c.status, api_keys.c.expires_at, api_keys.c.generation,
                      api_keys.c.secret_hash,
                      api_keys.c.previous_secret_hash, api_keys.c.previous_secret_expires_at,
                      owners.c.username)
            .select_from(api_keys.outerjoin(owners, owners.c.user_id == api_keys.c.owner_id))
            .where(sa.or_(api_keys.c.secret_hash.in_(digests),
                          api_keys.c.previous_secret_hash.in_(digests))))
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).all()

    async def _imported_keys_exist(self) -> bool:
        async with self._engine.connect() as conn:
            found = await conn.scalar(sa.select(sa.literal(1)).where(
                sa.exists().where(api_keys.c.imported_from.is_not(None))))
        return bool(found)

    # --- act -----------------------------------------------------------------------------
    async def report(self, items: Sequence[Reported], actor: Actor, reporter: str,
                     checked: dict[str, Checked] | None = None) -> list[Handled]:
        """Revoke every reported key and record the report; one result per item, in order.
        A key reported twice from the same place is handled once."""
        checked = checked if checked is not None else await self.check(i.token for i in items)
        done: dict[tuple[str, str, str], Handled] = {}
        first: dict[str, Handled] = {}  # key id -> what this report did to it first
        results: list[Handled] = []
        for item in items:
            found = checked.get(item.token, MALFORMED)
            if found.key is None:
                results.append(Handled(found.outcome_if_left, None))
                continue
            place = (found.key.id, item.url, item.source)
            if place not in done:
                details = {"url": item.url, "source": item.source, "reporter": reporter}
                handled = await self._act(found.key, actor, details)
                done[place] = first.setdefault(found.key.id, handled)
            results.append(done[place])
        return results

    async def _act(self, key: KnownKey, actor: Actor, details: dict[str, Any]) -> Handled:
        known = await self._reported_before(key.id, details)
        if key.old_secret:
            details = {**details, "generation": key.generation}
            if key.status != "revoked" and not self._revoke_retired:
                if not known:
                    async with write_transaction(self._engine) as conn:
                        await record_audit(conn, LEAK_REPORTED, actor, key.id, key.owner_id,
                                           details)
                return Handled(Outcome.ROTATED_AWAY, key)
        if known and key.status == "revoked":  # a replay or a resend: nothing new
            return Handled(Outcome.ALREADY_REVOKED, key)
        try:
            await self._keys.revoke(key.id, None, actor, LEAKED,
                                    also_audit=None if known else (LEAK_REPORTED, details))
        except KeyNotFound:  # gone since the lookup
            return Handled(Outcome.UNKNOWN, None)
        if key.status == "revoked":
            return Handled(Outcome.ALREADY_REVOKED, key)
        return Handled(Outcome.REVOKED, key)


    async def _reported_before(self, key_id: str, details: dict[str, Any]) -> bool:
        """Whether the key has a ``leak_reported`` row from the same url and source (JSON
        compared here: the details column is JSON on SQLite, JSONB on PostgreSQL)."""
        query = sa.select(audit_events.c.details).where(
            audit_events.c.key_id == key_id, audit_events.c.action == LEAK_REPORTED)
        async with self._engine.connect() as conn:
            earlier = (await conn.scalars(query)).all()
        return any(isinstance(d, dict) and (d.get("url"), d.get("source"))
                   == (details["url"], details["source"]) for d in earlier)


def _known(row: Any, previous: bool, now: datetime) -> KnownKey:
    overlap_ended = previous and (row.previous_secret_expires_at is None
                                  or row.previous_secret_expires_at <= now)
    return KnownKey(id=row.id, public_id=row.public_id, owner_id=row.owner_id,
                    owner_username=row.username,
                    status=derived_status(row.status, row.expires_at, now),
                    old_secret=overlap_ended,
                    generation=row.generation - 1 if previous else None)
