"""Show once, reload safely: a form that makes a secret (create, rotate) answers its POST
with a redirect (303) to ``/keys/{id}/created?h=<token>``, and that GET shows the secret
exactly once. The secret waits in the database (``ui_handoffs``), encrypted with
``APIKM_ENCRYPTION_KEY`` and bound to its owner and key, so any replica can answer the GET;
the first read deletes it. A reload, the back button or a copied URL then find nothing and
the page says the key was already shown; no reload can post the form again.

The URL carries only a random token (its SHA-256 is the row's id); a row nobody reads is
deleted after ``HANDOFF_SECONDS``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.db import utcnow, write_transaction
from apikm.encryption import DecryptionError, EncryptionKeys
from apikm.identity.tables import ui_handoffs

HANDOFF_SECONDS = 600
TOKEN_BYTES = 24
MAX_TOKEN_LENGTH = 64


@dataclass(frozen=True)
class Handoff:
    key_id: str
    secret: str
    rotated: bool


def _row_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _associated(row_id: str, user_id: str, key_id: str) -> bytes:
    return f"ui-handoff|{row_id}|{user_id}|{key_id}".encode()


class Handoffs:
    def __init__(self, engine: AsyncEngine, encryption: EncryptionKeys) -> None:
        self._engine = engine
        self._encryption = encryption

    async def put(self, user_id: str, key_id: str, secret: str, rotated: bool) -> str:
        """Keep ``secret`` for one read; the token for the redirect's URL."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        row_id = _row_id(token)
        key_ref, sealed = self._encryption.encrypt(secret.encode(),
                                                   _associated(row_id, user_id, key_id))
        now = utcnow()
        async with write_transaction(self._engine) as conn:
            await conn.execute(sa.delete(ui_handoffs).where(ui_handoffs.c.until <= now))
            await conn.execute(sa.insert(ui_handoffs).values(
                id=row_id, user_id=user_id, key_id=key_id, rotated=rotated,
                encryption_key_id=key_ref, secret=sealed,
                until=now + dt.timedelta(seconds=HANDOFF_SECONDS)))
        return token

    async def take(self, token: str, user_id: str, key_id: str) -> Handoff | None:
        """The secret, once, for its owner and key; None when read already, expired or
        not theirs (another user's token is left alone)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        row_id = _row_id(token)
        where = sa.and_(ui_handoffs.c.id == row_id, ui_handoffs.c.user_id == user_id,
                        ui_handoffs.c.key_id == key_id)
        async with write_transaction(self._engine) as conn:
            row = (await conn.execute(sa.select(ui_handoffs).where(where))).first()
            if row is None:
                return None
            # Whoever deletes the row shows the secret: two concurrent reads show it once.
            if (await conn.execute(sa.delete(ui_handoffs).where(where))).rowcount != 1:
                return None
        if row.until <= utcnow():
            return None
        try:
            secret = self._encryption.decrypt(row.encryption_key_id, row.secret,
                                              _associated(row_id, user_id, key_id))
        except DecryptionError:
            return None
        return Handoff(key_id=key_id, secret=secret.decode(), rotated=bool(row.rotated))
