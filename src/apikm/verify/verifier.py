"""The verification pipeline: failure limit -> format -> lookup -> rules -> usage.

Kept free of HTTP so the gateway path (``/v1/auth``, ``/v1/verify``), introspection and
token exchange all call the same ``Verifier.verify``. A cache hit costs one HMAC, a few dict
probes and float comparisons; nothing here awaits I/O unless the key is not cached, the
key has its own rate limit, or the attempt failed (failures are counted).

Alerts (``apikm.alerts``) are fed in memory: a VALID use adds a dict and a set probe (is
this address known for the key?); a retired secret, a tripped limit are noticed on the
refusal paths. The alert writer stores them in the background.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from apikm.alerts.feed import AlertFeed
from apikm.compat.legacy_keys import LEGACY_PEPPER_ID, is_legacy_key, legacy_digest
from apikm.keys.format import is_well_formed
from apikm.keys.hashing import PepperRing
from apikm.verify.codes import COUNTED_FAILURES, MESSAGES, ROTATED, Code
from apikm.verify.limiter import Limiter, address_group
from apikm.verify.metrics import STATS
from apikm.verify.record import KeyRecord, RetiredSecret
from apikm.verify.rules import decide
from apikm.verify.store import KeyStore
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
        result = await self._verify(key, client_ip, address_group(limiter_id), required_roles)
        STATS.outcome(result.code.value, endpoint, time.perf_counter() - started)
        return result

    async def _verify(self, key: str, client_ip: str | None, group: str,
                      required_roles: Collection[str]) -> Verification:
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
                    await self.limiter.record_failure(group)
                return _MALFORMED
        current_hash = self.peppers.digest(key)
        record = self.store.cached(current_hash)
        presented_hash = current_hash
        from_cache = record is not None
        now = time.time()
        if from_cache:
            STATS.lookups["cache"] += 1
        else:
            found = await self.store.find(self._candidates(key, legacy))
            if found is None:
                await self.limiter.record_failure(group)
                return _NOT_FOUND
            presented_hash, named = found
            if isinstance(named, RetiredSecret):
                return await self._retired(named, client_ip, group, now)
            record = named
        assert record is not None
        decision = decide(record, presented_hash, now, client_ip, required_roles,
                          self._max_staleness)
        if decision.code is Code.STALE and from_cache:
            # A cached record's confirmation time may lag the database: read it again.
            self.store.drop_key(record.id)
            found = await self.store.find(self._candidates(key, legacy))
            if found is None:
                return _NOT_FOUND
            presented_hash, named = found
            if isinstance(named, RetiredSecret):
                return await self._retired(named, client_ip, group, now)
            record = named
            decision = decide(record, presented_hash, now, client_ip, required_roles,
                              self._max_staleness)
        code = decision.code
        if code is not Code.VALID:
            if code in COUNTED_FAILURES:
                await self._count_failure(record, decision.reason, client_ip, group, now)
            return Verification(code, record, decision.missing_roles, decision.reason)
        if record.rate_limit and not await self.limiter.allow_key_use(record.id,
                                                                      record.rate_limit):
            retry = await self.limiter.key_retry_after(record.id, record.rate_limit)
            self.alerts.limit_tripped(record.id, record.owner_id, "key_rate", client_ip, now,
                                      self.limiter.key_window(record.rate_limit))
            return Verification(Code.RATE_LIMITED, record=record, reason="key rate limit",
                                retry_after=retry)
        self.usage.record(record.id, now, client_ip)
        self.alerts.used(record.id, client_ip, now)
        if presented_hash == record.secret_hash != current_hash:
            # Hashed with a retired pepper, or imported as an unsalted SHA-256: move it to
            # the current pepper while we hold the key, so the old hash can go.
            self.usage.rehash(record.id, presented_hash, current_hash, self.peppers.current_id)
        return Verification(Code.VALID, record)

    async def _count_failure(self, record: KeyRecord, reason: str | None,
                             client_ip: str | None, group: str, now: float) -> None:
        """A known key refused: count it against the address; alert on a previous secret
        presented after its overlap, and on this failure blocking the address."""
        live = record.status != "revoked"
        if live and reason == ROTATED:
            self.alerts.secret_reused(record.id, record.owner_id, record.generation - 1,
                                      client_ip, now)
        if await self.limiter.record_failure(group) and live:
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
