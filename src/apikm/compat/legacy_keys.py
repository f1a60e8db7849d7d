"""Keys imported from APIKeyManager: uuid4 strings stored there as unsalted SHA-256 hex.

An imported key keeps its text. Until its first use it is stored as the old service stored
it, under the pseudo pepper id ``sha256``; the first good verification moves it to apikm's
peppered HMAC (``UsageRecorder.rehash``, as for a retired pepper), after which the unsalted
hash is gone from the database. Verification recognises this format only while imported
keys exist, so a deployment that never imported anything refuses it without a lookup.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.cluster.events import Event, Kind
from apikm.keys.tables import api_keys

if TYPE_CHECKING:
    from apikm.verify.verifier import Verifier

LEGACY_PEPPER_ID = "sha256"
IMPORT_SOURCE = "apikeymanager"
# str(uuid.uuid4()): 36 characters, lowercase hex; the old service hashed exactly this text.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_legacy_key(candidate: str) -> bool:
    return len(candidate) == 36 and _UUID.fullmatch(candidate) is not None


def legacy_digest(key: str) -> str:
    """What APIKeyManager stored in ``api_tokens.api_key``: SHA-256 hex, no salt."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


async def imported_keys_exist(engine: AsyncEngine) -> bool:
    """Whether legacy-format keys must be looked up at all."""
    async with engine.connect() as conn:
        found = await conn.scalar(sa.select(sa.literal(1)).where(sa.exists().where(
            api_keys.c.imported_from.is_not(None), api_keys.c.status != "revoked")))
    return bool(found)


def on_import_event(verifier: Verifier) -> Callable[[Event], None]:
    """A bus handler: ``apikm import`` announces imported keys with ``Kind.ALL`` and ref
    ``apikeymanager`` (which also clears every cache); from then on they are looked up."""
    def handle(event: Event) -> None:
        if event.kind is Kind.ALL and event.ref == IMPORT_SOURCE:
            verifier.legacy_keys = True
    return handle
