"""Signed webhooks (the Standard Webhooks scheme, https://www.standardwebhooks.com): each
request carries ``webhook-id`` (the same on every retry of one message), ``webhook-timestamp``
and ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``), signed with
the reference library. Endpoints and their encrypted secrets are kept in the database.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook

from apikm.db import utcnow
from apikm.encryption import EncryptionKeys
from apikm.keys.policy import storable
from apikm.notify.rules import EVENT_TYPES, Outcome, http_outcome
from apikm.notify.tables import webhook_endpoints

SECRET_PREFIX = "whsec_"  # noqa: S105 (the scheme's prefix, not a secret)
MAX_URL = 2000


class EndpointError(ValueError):
    """An endpoint that cannot be saved; the message says which field and why."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    description: str
    events: list[str]
    enabled: bool
    created_at: datetime
    created_by: str
    secret: str = field(repr=False, default="")  # filled only where it is needed


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def check_url(url: str) -> str:
    url = url.strip()
    bad = EndpointError("must be an http(s) URL such as https://hooks.example.org/apikm", "url")
    if len(url) > MAX_URL or not url.isprintable() or " " in url or not storable(url):
        raise bad
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port out of range
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    if parts.username or parts.password:
        raise EndpointError("must not carry a user or password (the signature "
                            "authenticates apikm)", "url")
    return url


def check_description(text: str) -> str:
    text = text.strip()[:255]
    if not storable(text):
        raise EndpointError("must be plain text", "description")
    return text


def check_secret(secret: str) -> str:
    secret = secret.strip()
    if not secret.isascii() or not storable(secret):
        raise EndpointError("must be 'whsec_' and base64 (as Standard Webhooks secrets are)",
                            "secret")
    try:
        Webhook(secret)
        raw = base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==", validate=False)
    except Exception:
        raise EndpointError("must be 'whsec_' and base64 (as Standard Webhooks secrets are)",
                            "secret") from None
    if len(raw) < 16:
        raise EndpointError("must hold at least 16 random bytes (24 are generated)", "secret")
    return secret


def check_events(events: list[str]) -> list[str]:
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise EndpointError(f"unknown event type(s): {', '.join(unknown)}", "events")
    return sorted(set(events))


def signed_headers(secret: str, message_id: str, at: datetime, body: str) -> dict[str, str]:
    signature = Webhook(secret).sign(message_id, at, body)
    return {"webhook-id": message_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature, "content-type": "application/json",
            "user-agent": "apikm-webhooks"}


async def post(http: httpx.AsyncClient, endpoint: Endpoint, message_id: str, body: str,
               timeout: float) -> Outcome:  # noqa: ASYNC109 (httpx's own timeout)
    headers = signed_headers(endpoint.secret, message_id, utcnow(), body)
    try:
        answer = await http.post(endpoint.url, content=body.encode(), headers=headers,
                                 timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:400])
    return http_outcome(answer.status_code, answer.text)


class EndpointStore:
    """Webhook endpoints; secrets encrypted with APIKM_ENCRYPTION_KEY (row id as AAD)."""

    def __init__(self, engine: AsyncEngine, keys: EncryptionKeys) -> None:
        self._engine = engine
        self._keys = keys

    async def create(self, url: str, description: str, events: list[str], created_by: str,
                     secret: str | None = None) -> Endpoint:
        """Returns the endpoint with its secret: the only time it is shown."""
        endpoint_id = str(uuid.uuid4())
        url, events = check_url(url), check_events(events)
        description = check_description(description)
        secret = check_secret(secret) if secret else new_secret()
        key_id, sealed = self._keys.encrypt(secret.encode(), _aad(endpoint_id))
        now = utcnow()
        row = {"id": endpoint_id, "url": url, "description": description,
               "events": events, "enabled": True, "encryption_key_id": key_id,
               "secret": sealed, "created_at": now, "created_by": created_by[:255]}
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(webhook_endpoints).values(**row))
        return _endpoint(row, secret)

    async def list(self, enabled_only: bool = False, with_secrets: bool = False
                   ) -> list[Endpoint]:
        query = sa.select(webhook_endpoints).order_by(webhook_endpoints.c.created_at)
        if enabled_only:
            query = query.where(webhook_endpoints.c.enabled.is_(True))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_endpoint(r._mapping, self._secret(r) if with_secrets else "") for r in rows]

    async def get(self, endpoint_id: str, with_secret: bool = False) -> Endpoint | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(webhook_endpoints).where(
                webhook_endpoints.c.id == endpoint_id))).first()
        if row is None:
            return None
        return _endpoint(row._mapping, self._secret(row) if with_secret else "")

    async def set_enabled(self, endpoint_id: str, enabled: bool) -> bool:
        async with self._engine.begin() as conn:
            changed = await conn.execute(sa.update(webhook_endpoints).where(
                webhook_endpoints.c.id == endpoint_id).values(enabled=enabled))
        return changed.rowcount == 1

    async def delete(self, endpoint_id: str) -> bool:
        async with self._engine.begin() as conn:
            deleted = await conn.execute(sa.delete(webhook_endpoints).where(
                webhook_endpoints.c.id == endpoint_id))
        return deleted.rowcount == 1

    def _secret(self, row: Any) -> str:
        return self._keys.decrypt(row.encryption_key_id, row.secret, _aad(row.id)).decode()


def _aad(endpoint_id: str) -> bytes:
    return f"webhook:{endpoint_id}".encode()


def _endpoint(row: Any, secret: str) -> Endpoint:
    return Endpoint(id=row["id"], url=row["url"], description=row["description"],
                    events=list(row["events"]), enabled=bool(row["enabled"]),
                    created_at=row["created_at"], created_by=row["created_by"], secret=secret)
