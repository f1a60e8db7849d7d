"""The verification pipeline: format -> failure limit -> lookup -> rules -> usage.

Kept free of HTTP so the JSON route, forward auth, introspection and token exchange all call
the same ``Verifier.verify``.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from apikm.db import utcnow
from apikm.keys.format import parse_key
from apikm.keys.hashing import PepperRing
from apikm.verify.codes import COUNTED_FAILURES, MESSAGES, Code
from apikm.verify.limiter import Limiter
from apikm.verify.metrics import VERIFICATIONS, VERIFY_LATENCY
from apikm.verify.record import KeyRecord
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
        "expires_at": record.expires_at.isoformat(),
    }


class Verifier:
    def __init__(
        self,
        prefix: str,
        peppers: PepperRing,
        store: KeyStore,
        limiter: Limiter,
        usage: UsageRecorder,
        max_staleness: timedelta | None = None,
    ) -> None:
        self.prefix = prefix
        self.peppers = peppers
        self.store = store
        self.limiter = limiter
        self.usage = usage
        self.max_staleness = max_staleness

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
        result = await self._verify(key, client_ip, limiter_id, required_roles)
        VERIFY_LATENCY.observe(time.perf_counter() - started)
        VERIFICATIONS.labels(result.code.value, endpoint).inc()
        return result

    async def _verify(self, key: str, client_ip: str | None, limiter_id: str,
                      required_roles: Collection[str]) -> Verification:
        if await self.limiter.is_blocked(limiter_id):
            retry = await self.limiter.failure_retry_after(limiter_id)
            return Verification(Code.RATE_LIMITED, retry_after=retry)
        parsed = parse_key(key, self.prefix)
        candidates = self.peppers.candidates(key) if parsed else {}
        found = await self.store.find(candidates) if parsed else None
        if parsed is None or found is None:
            return await self._fail(Code.MALFORMED if parsed is None else Code.NOT_FOUND,
                                    limiter_id)
        presented_hash, record = found
        now = utcnow()
        decision = decide(record, presented_hash, now, client_ip, required_roles,
                          self.max_staleness)
        if decision.code in COUNTED_FAILURES:
            await self.limiter.record_failure(limiter_id)
        if decision.code is Code.VALID and record.rate_limit:
            if not await self.limiter.allow_key_use(record.id, record.rate_limit):
                return Verification(Code.RATE_LIMITED, record=record, reason="key rate limit")
        if decision.code is Code.VALID:
            self.usage.record(record.id, now, client_ip)
            if (presented_hash == record.secret_hash
                    and candidates[presented_hash] != self.peppers.current_id):
                # Hashed with a retired pepper: move it to the current one while we hold the
                # key, so the old pepper can be removed once no key uses it.
                current_hash = next(iter(candidates))
                self.usage.rehash(record.id, presented_hash, current_hash,
                                  self.peppers.current_id)
        return Verification(decision.code, record, decision.missing_roles, decision.reason)

    async def _fail(self, code: Code, limiter_id: str) -> Verification:
        await self.limiter.record_failure(limiter_id)
        return Verification(code)

