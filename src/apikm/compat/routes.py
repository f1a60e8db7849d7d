"""APIKeyManager's key management routes, served by apikm's key service.

``GET /auth/api_key/new|list|revoke|renew``, ``GET /auth/me`` (Keycloak bearer tokens, as for
``/v1/keys``) and ``GET /health/status``. Keys are named by the key itself (``api-key``), as
before. Errors keep the old shape, ``{"detail": "..."}``. Where the old behaviour was unsafe
the request is refused with a message saying what to do instead:

- ``never_expires=true``: apikm keys expire (``APIKM_MAX_APIKEY_TTL_HOUR`` at the longest);
- ``renew`` of a revoked key (the old service revived it), or to a date in the past or past
  the longest lifetime;
- ``allowed_referers`` entries that are not IP addresses or CIDR networks (the old service
  stored host names and never enforced them; apikm enforces networks).

``new`` creates a key carrying all of the caller's current roles and following them in
Keycloak (the old service's only kind), unless ``roles`` names some; with
``APIKM_ALLOW_ALL_ROLES_KEYS=false`` only ``roles`` keys can be made.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from apikm.compat.legacy_keys import is_legacy_key, legacy_digest
from apikm.config import Settings
from apikm.identity.owners import remember_owner
from apikm.identity.principal import Principal
from apikm.identity.tables import owners
from apikm.identity.tokens import InvalidToken
from apikm.keys import policy
from apikm.keys.service import Actor, KeyLimitReached, KeyNotFound, NewKey, RolesRefused
from apikm.keys.tables import api_keys
from apikm.web.api.deps import get_ctx
from apikm.web.context import AppContext
from apikm.web.errors import redactor_of

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})
_bearer = HTTPBearer(auto_error=False, description="A Keycloak access token")


class CompatError(Exception):
    """An answer in the old shape: ``{"detail": ...}`` with this status."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


async def _caller(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None,
                                         Depends(_bearer)]) -> Principal:
    ctx = get_ctx(request)
    if credentials is None or not credentials.credentials:
        raise CompatError(401, "Not authenticated: send a Keycloak access token "
                          "(Authorization: Bearer ...)", {"WWW-Authenticate": "Bearer"})
    try:
        return await ctx.tokens.validate(credentials.credentials,
                                         ctx.addresses.resolve(request.scope))
    except InvalidToken as exc:
        raise CompatError(401, str(exc), {"WWW-Authenticate": 'Bearer error="invalid_token"'}
                          ) from None


Caller = Annotated[Principal, Depends(_caller)]
Ctx = Annotated[AppContext, Depends(get_ctx)]
# Parameters are read as text and checked here, so every refusal says what to do in the
# old {"detail"} shape (never the framework's validation list).
Text = str | None


def _flag(value: Text, name: str) -> bool:
    text = (value or "").strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise CompatError(422, f"{name} must be true or false")


def _config(value: Text) -> dict[str, Any]:
    if value is None or not value.strip():
        return {}
    try:
        config = json.loads(value)
    except (ValueError, RecursionError):
        raise CompatError(422, "config must be a JSON object, e.g. {\"project\": \"s2\"}"
                          ) from None
    if not isinstance(config, dict):
        raise CompatError(422, "config must be a JSON object, e.g. {\"project\": \"s2\"}")
    return config


def networks_of_referers(referers: Sequence[str]) -> list[str]:
    """``allowed_referers`` as allowed networks; anything but IPs/CIDRs is refused."""
    refused = [r for r in referers if not _is_network(r)]
    if refused:
        raise CompatError(422, "allowed_referers takes IP addresses or CIDR networks, which "
                          "apikm enforces (APIKeyManager stored host names and never checked "
                          f"them); not networks: {', '.join(refused)}")
    return policy.normalize_networks(referers)


def _is_network(text: str) -> bool:
    try:
        policy.normalize_networks([text])
    except policy.PolicyError:
        return False
    return True


def _expiry(value: Text) -> datetime | None:
    if value is None or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CompatError(422, "The expiration date could not be parsed. Please use ISO 8601."
                          ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # naive: UTC, as before


async def _key_id(ctx: AppContext, key: Text, owner_id: str) -> str:
    """The id of the caller's key whose secret is ``key``; 404 otherwise (anyone's)."""
    if not key or not key.strip():
        raise CompatError(422, "api-key is required: the API key itself")
    key = key.strip()
    hashes = list(ctx.verifier.peppers.candidates(key)) if key.isascii() else []
    if is_legacy_key(key):
        hashes.append(legacy_digest(key))
    if hashes and policy.storable(owner_id):
        async with ctx.engine.connect() as conn:
            found = await conn.scalar(sa.select(api_keys.c.id).where(
                api_keys.c.owner_id == owner_id,
                sa.or_(api_keys.c.secret_hash.in_(hashes),
                       api_keys.c.previous_secret_hash.in_(hashes))))
        if found is not None:
            return str(found)
    raise CompatError(404, "API key not found")


class Detail(BaseModel):
    """Every error of the old API: what is wrong, for a person."""

    detail: str


def _documented(description: str) -> dict[str, Any]:
    return {"model": Detail, "description": description}


RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _documented("no valid Keycloak access token"),
    403: _documented("roles the caller does not hold"),
    404: _documented("no such key among the caller's"),
    409: _documented("the caller's key limit is reached"),
    422: _documented("a parameter is not valid, or apikm refuses what the old service did"),
}


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["APIKeyManager compatibility"], responses=RESPONSES)

    @router.get("/auth/me")
    async def me(user: Caller) -> dict[str, Any]:
        """Who you are (APIKeyManager's ``/auth/me``)."""
        return {"user_id": user.user_id, "user_login": user.username,
                "roles": sorted(user.roles), "email": user.email,
                "groups": list(user.groups)}

    @router.get("/auth/api_key/new")
    async def new_key(
        user: Caller, ctx: Ctx, name: Text = None, config: Text = None,
        allowed_referers: Annotated[list[str] | None, Query()] = None,
        never_expires: Text = None,
        roles: Annotated[list[str] | None, Query(
            description="apikm: grant only these roles (default: all your roles, "
                        "following Keycloak)")] = None,
    ) -> str:
        """A new key (returned once, as a JSON string)."""
        if not name or not name.strip():
            raise CompatError(422, "name is required")
        if _flag(never_expires, "never_expires"):
            hours = ctx.settings.max_apikey_ttl_hour
            raise CompatError(422, "apikm keys always expire: leave never_expires out (the "
                              f"key lives {ctx.settings.default_apikey_ttl_hour} hours) and "
                              f"renew it, up to {hours} hours ahead, with "
                              "/auth/api_key/renew")
        with old_shape():
            new = NewKey(name=name, roles=roles or [], all_roles=not roles,
                         meta=_config(config),
                         allowed_networks=networks_of_referers(allowed_referers or []))
        await remember_owner(ctx.engine, user)
        with old_shape():
            created = await ctx.keys.create(user, new)
        return created.secret

    @router.get("/auth/api_key/list")
    async def list_keys(user: Caller, ctx: Ctx) -> list[dict[str, Any]]:
        """Your keys with their use (most recently used first), in the old shape; the old
        ``api_key`` field (an unsalted hash) does not exist in apikm and is left out."""
        rows = await ctx.keys.list_keys(user.user_id, None, limit=10_000)
        async with ctx.engine.connect() as conn:
            owner = (await conn.execute(sa.select(owners.c.synced_at, owners.c.enabled)
                                        .where(owners.c.user_id == user.user_id))).first()
        rows.sort(key=lambda r: r["last_used_at"] or datetime.min.replace(tzinfo=UTC),
                  reverse=True)
        return [usage_log(row, owner) for row in rows]

    @router.get("/auth/api_key/revoke")
    async def revoke_key(user: Caller, ctx: Ctx,
                         api_key: Annotated[Text, Query(alias="api-key")] = None) -> None:
        """Revoke one of your keys."""
        key_id = await _key_id(ctx, api_key, user.user_id)
        with old_shape():
            await ctx.keys.revoke(key_id, user.user_id, Actor.of(user), "revoked by owner")

    @router.get("/auth/api_key/renew")
    async def renew_key(
        user: Caller, ctx: Ctx,
        api_key: Annotated[Text, Query(alias="api-key")] = None,
        expiration_date: Annotated[Text, Query(alias="expiration-date")] = None,
    ) -> str:
        """A new expiry for one of your keys (default: the policy's lifetime from now)."""
        key_id = await _key_id(ctx, api_key, user.user_id)
        with old_shape():
            renewed = await ctx.keys.renew(key_id, user.user_id, _expiry(expiration_date),
                                           Actor.of(user))
        return f"The new expiration date for the API key is {renewed['expires_at']}"

    @router.get("/health/status", include_in_schema=settings.show_technical_endpoints)
    async def health_status() -> dict[str, bool]:
        return {"healthy": True}

    return router


def usage_log(row: dict[str, Any], owner: Any) -> dict[str, Any]:
    """One key as the old ``/auth/api_key/list`` showed it (None values left out), plus
    apikm's ``id``, ``hint``, ``status`` and ``all_roles``."""
    entry: dict[str, Any] = {
        "id": row["id"],
        "hint": row["hint"],
        "name": row["name"],
        "user_active": bool(owner.enabled) if owner is not None
        else row["status"] != "suspended",
        "is_active": row["status"] != "revoked",
        "never_expire": False,
        "expiration_date": row["expires_at"].isoformat(),
        "latest_query_date": row["last_used_at"].isoformat() if row["last_used_at"] else None,
        "total_queries": row["use_count"],
        "latest_sync_date": owner.synced_at.isoformat() if owner is not None else None,
        "iam_roles": row["roles"],
        "config": row["meta"],
        "allowed_referers": row["allowed_networks"] or None,
        "status": row["status"],
        "all_roles": row["all_roles"],
    }
    return {k: v for k, v in entry.items() if v is not None}


def install(app: FastAPI, settings: Settings) -> None:
    """The old routes and their error shape (``{"detail"}``)."""
    app.include_router(build_router(settings))

    @app.exception_handler(CompatError)
    async def _compat(request: Request, exc: CompatError) -> JSONResponse:
        detail = redactor_of(request.app).text(exc.detail)  # never echo a key
        return JSONResponse({"detail": detail}, status_code=exc.status, headers=exc.headers)


@contextlib.contextmanager
def old_shape() -> Iterator[None]:
    """apikm's refusals, raised by the key service, as the old API's ``{"detail"}``."""
    try:
        yield
    except KeyNotFound:
        raise CompatError(404, "API key not found") from None
    except RolesRefused as exc:
        refused = ", ".join((exc.details or {}).get("refused", []))
        raise CompatError(403, f"{exc}: {refused}" if refused else str(exc)) from None
    except KeyLimitReached as exc:
        raise CompatError(409, str(exc)) from None
    except policy.PolicyError as exc:
        raise CompatError(422, str(exc)) from None
