"""The verification pipeline: failure limit -> format -> lookup -> rules -> usage.

Kept free of HTTP so the gateway path (``/v1/auth``, ``/v1/verify``), introspection and
token exchange all call the same ``Verifier.verify``. A cache hit costs one HMAC, a few dict
probes and float comparisons; nothing here awaits I/O unless the key is not cached (and,
on SQLite, not found on the spot: ``KeyStore.find_now``), the key has its own rate limit,
or the attempt failed (failures are counted).

Alerts (``apikm.alerts``) are fed in memory: a VALID use adds a dict and a set probe (is
this address known for the key?); a retired secret, a tripped limit are noticed on the
refusal paths. The alert writer stores them in the background.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

from apikm.alerts.feed import AlertFeed
from apikm.compat.legacy_keys import LEGACY_PEPPER_ID, is_legacy_key, legacy_digest
from apikm.keys.format import is_well_formed
from apikm.keys.hashing import PepperRing
from apikm.verify.codes import COUNTED_FAILURES, MESSAGES, ROTATED, Code
from apikm.verify.limiter import Limiter, address_group
from apikm.verify.metrics import STATS
from apikm.verify.record import KeyRecord, RetiredSecret
from apikm.verify.rules import Decision, decide
from apikm.verify.store import NOT_NOW, KeyStore
from apikm.verify.usage import UsageRecorder


@dataclass(frozen=True)
class Verification:
    code: Code
    record: KeyRecord | None = None
    missing_roles: tuple[str, ...] = ()
    reason: str | None = None
    retry_after: int | None = None

    @property
    def valid(self) -> bool:
        return self.code is Code.VALID

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"valid": self.valid, "code": self.code.value}
        if not self.valid:
            body["message"] = MESSAGES[self.code]
        if self.reason:
            body["reason"] = self.reason
        if self.missing_roles:
            body["missing_roles"] = list(self.missing_roles)
        if self.retry_after:
            body["retry_after"] = self.retry_after
        record = self.record
        if record is not None and self.code in (Code.VALID, Code.INSUFFICIENT_ROLES):
            body.update(identity_json(record))
        return body


def identity_json(record: KeyRecord) -> dict[str, Any]:
    return {
        "key_id": record.id,
        "key_name": record.name,
        "public_id": record.public_id,
        "user": {"id": record.owner_id, "username": record.username, "email": record.email},
        "roles": sorted(record.effective_roles),
        "groups": list(record.owner_groups),
        "meta": record.meta,
        "attributes": record.owner_attributes,
        "expires_at": record.expires_at.isoformat(),
    }


_MALFORMED = Verification(Code.MALFORMED)
_NOT_FOUND = Verification(Code.NOT_FOUND)
_ROTATED = Verification(Code.REVOKED, reason=ROTATED)


class _Need(Enum):
    """What a verification still has to do once it needs I/O."""

    LOOKUP = "lookup"  # not cached: read the database
    STALE_RECORD = "stale"  # cached but STALE: read the database again
    FAILURE = "failure"  # refused: count the failure (limiter storage)
    RETIRED = "retired"  # a secret a rotation retired: count, maybe alert
    KEY_RATE = "key_rate"  # good, with its own rate limit (limiter storage)


@dataclass(slots=True)
class _Pending:
    need: _Need
    current_hash: str = ""
    legacy: bool = False
    record: KeyRecord | None = None
    cached: bool = False  # the record came from the cache (counted once, when finished)
    answer: Verification | None = None  # FAILURE: the refusal to give once counted
    presented_hash: str = ""
    now: float = 0.0
    retired: RetiredSecret | None = None


class Verifier:
    def __init__(
        self,
        prefix: str,
        peppers: PepperRing,
        store: KeyStore,
        limiter: Limiter,
        usage: UsageRecorder,
        max_staleness: timedelta | None = None,
        alerts: AlertFeed | None = None,
    ) -> None:
        self.prefix = prefix
        self._key_start = prefix + "_"
        self.peppers = peppers
        self.store = store
        self.limiter = limiter
        self.usage = usage
        self.alerts = alerts if alerts is not None else AlertFeed()
        self._max_staleness = max_staleness.total_seconds() if max_staleness else None
        # True while keys imported from APIKeyManager exist (uuid4 keys, apikm.compat).
        self.legacy_keys = False

    def verify_now(
        self,
        key: str,
        *,
        client_ip: str | None,
        limiter_id: str,
        required_roles: Collection[str] = (),
        endpoint: str = "verify",
    ) -> Verification | None:
        """The answer when it needs no I/O (a cached key without its own rate limit, a
        blocked address, text that is no key of ours), else None: call ``verify``, which
        starts over. Nothing is counted or recorded for a None."""
        started = time.perf_counter()
        step = self._start(key, client_ip, address_group(limiter_id), required_roles)
        if isinstance(step, _Pending):
            return None
        STATS.outcome(step.code.value, endpoint, time.perf_counter() - started)
        return step

    async def verify(
        self,
        key: str,
        *,
        client_ip: str | None,
        limiter_id: str,
        required_roles: Collection[str] = (),
        endpoint: str = "verify",
    ) -> Verification:
        started = time.perf_counter()
        group = address_group(limiter_id)
        step = self._start(key, client_ip, group, required_roles)
        if isinstance(step, _Pending):
            step = await self._finish(step, key, client_ip, group, required_roles)
        STATS.outcome(step.code.value, endpoint, time.perf_counter() - started)
        return step

    def _start(self, key: str, client_ip: str | None, group: str,
               required_roles: Collection[str]) -> Verification | _Pending:
        """Everything up to the first I/O: the answer, or what is left to do. Side effects
        (usage, rehash) happen only with a VALID answer."""
        retry = self.limiter.retry_after(group)
        if retry is not None:
            return Verification(Code.RATE_LIMITED, retry_after=retry)
        legacy = False
        if not is_well_formed(key, self.prefix):
            legacy = self.legacy_keys and is_legacy_key(key)
            if not legacy:
                # Only what looks like one of our keys counts as a guess: a Keycloak token
                # sent to the wrong place must not lock its sender's address out.
                if key.startswith(self._key_start):
                    return _Pending(_Need.FAILURE, answer=_MALFORMED)
                return _MALFORMED
        current_hash = presented_hash = self.peppers.digest(key)
        record = self.store.cached(current_hash)
        cached = record is not None
        if record is None:
            found = self.store.find_now(self._candidates(key, legacy))
            if found is NOT_NOW:
                return _Pending(_Need.LOOKUP, current_hash, legacy)
            if found is None:
                return _Pending(_Need.FAILURE, answer=_NOT_FOUND)
            presented_hash, named = found
            if isinstance(named, RetiredSecret):
                return _Pending(_Need.RETIRED, retired=named)
            record = named
        now = time.time()
        decision = decide(record, presented_hash, now, client_ip, required_roles,
                          self._max_staleness)
        if cached and decision.code is Code.STALE:
            # A cached record's confirmation time may lag the database: read it again.
            return _Pending(_Need.STALE_RECORD, current_hash, legacy, record, cached=True)
        step = self._conclude(record, presented_hash, current_hash, decision, now, client_ip)
        if cached:
            if isinstance(step, _Pending):
                step.cached = True
            else:
                STATS.lookups["cache"] += 1
        return step

    async def _finish(self, step: _Pending, key: str, client_ip: str | None, group: str,
                      required_roles: Collection[str]) -> Verification:
        """The rest, with I/O: a database lookup, counting a failure, a per-key limit."""
        if step.cached:
            STATS.lookups["cache"] += 1
        if step.need in (_Need.LOOKUP, _Need.STALE_RECORD):
            if step.record is not None:
                self.store.drop_key(step.record.id)
            found = await self.store.find(self._candidates(key, step.legacy))
            if found is None:
                if step.need is _Need.LOOKUP:
                    await self.limiter.record_failure(group)
                return _NOT_FOUND
            presented_hash, named = found
            now = time.time()
            if isinstance(named, RetiredSecret):
                return await self._retired(named, client_ip, group, now)
            record = named
            decision = decide(record, presented_hash, now, client_ip, required_roles,
                              self._max_staleness)
            next_step = self._conclude(record, presented_hash, step.current_hash, decision,
                                       now, client_ip)
            if isinstance(next_step, Verification):
                return next_step
            step = next_step
        if step.need is _Need.RETIRED:
            assert step.retired is not None
            return await self._retired(step.retired, client_ip, group, time.time())
        if step.need is _Need.FAILURE:
            assert step.answer is not None
            await self._count_failure(step.answer, client_ip, group)
            return step.answer
        limited = step.record  # _Need.KEY_RATE: a good key with its own rate limit
        assert limited is not None and limited.rate_limit
        if not await self.limiter.allow_key_use(limited.id, limited.rate_limit):
            retry = await self.limiter.key_retry_after(limited.id, limited.rate_limit)
            self.alerts.limit_tripped(limited.id, limited.owner_id, "key_rate", client_ip,
                                      time.time(), self.limiter.key_window(limited.rate_limit))
            return Verification(Code.RATE_LIMITED, record=limited, reason="key rate limit",
                                retry_after=retry)
        return self._accept(limited, step.presented_hash, step.current_hash, step.now,
                            client_ip)

    def _conclude(self, record: KeyRecord, presented_hash: str, current_hash: str,
                  decision: Decision, now: float, client_ip: str | None
                  ) -> Verification | _Pending:
        code = decision.code
        if code is not Code.VALID:
            answer = Verification(code, record, decision.missing_roles, decision.reason)
            if code in COUNTED_FAILURES:
                return _Pending(_Need.FAILURE, answer=answer)
            return answer
        if record.rate_limit:
            return _Pending(_Need.KEY_RATE, current_hash, record=record,
                            presented_hash=presented_hash, now=now)
        return self._accept(record, presented_hash, current_hash, now, client_ip)

    def _accept(self, record: KeyRecord, presented_hash: str, current_hash: str, now: float,
                client_ip: str | None) -> Verification:
        self.usage.record(record.id, now, client_ip)
        self.alerts.used(record.id, client_ip, now)
        if presented_hash == record.secret_hash != current_hash:
            # Hashed with a retired pepper, or imported as an unsalted SHA-256: move it to
            # the current pepper while we hold the key, so the old hash can go.
            self.usage.rehash(record.id, presented_hash, current_hash, self.peppers.current_id)
        valid: Verification | None = record.valid_answer
        if valid is None:  # one answer object per cached record, not one per request
            valid = Verification(Code.VALID, record)
            object.__setattr__(record, "valid_answer", valid)
        return valid

    async def _count_failure(self, answer: Verification, client_ip: str | None,
                             group: str) -> None:
        """A refusal: count it against the address. For a live key, alert on its previous
        secret presented after the overlap, and on this failure blocking the address."""
        blocked = await self.limiter.record_failure(group)
        record = answer.record
        if record is None or record.status == "revoked":
            return
        now = time.time()
        if answer.code is Code.REVOKED and answer.reason == ROTATED:
            self.alerts.secret_reused(record.id, record.owner_id, record.generation - 1,
                                      client_ip, now)
        if blocked:
            self.alerts.limit_tripped(record.id, record.owner_id, "failures", client_ip, now,
                                      self.limiter.failure_window)

    async def _retired(self, secret: RetiredSecret, client_ip: str | None, group: str,
                       now: float) -> Verification:
        """A secret a rotation retired: REVOKED, never NOT_FOUND. While the key lives, its
        holder has a secret the owner rotated away: a possible leak."""
        blocked = await self.limiter.record_failure(group)
        if secret.key_status == "revoked":
            return Verification(Code.REVOKED, reason=secret.revoked_reason)
        self.alerts.secret_reused(secret.key_id, secret.owner_id, secret.generation,
                                  client_ip, now)
        if blocked:
            self.alerts.limit_tripped(secret.key_id, secret.owner_id, "failures", client_ip,
                                      now, self.limiter.failure_window)
        return _ROTATED

    def _candidates(self, key: str, legacy: bool) -> dict[str, str]:
        """hash -> pepper id of every form the key may be stored in."""
        candidates = self.peppers.candidates(key)
        if legacy:
            candidates[legacy_digest(key)] = LEGACY_PEPPER_ID
        return candidates
