"""``/v1/keys``: a user's own keys, authenticated by a Keycloak access token."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from apikm.alerts.service import key_alerts
from apikm.identity.owners import remember_owner
from apikm.keys.service import Actor, list_audit
from apikm.web.api.deps import Ctx, User
from apikm.web.api.schemas import (
    ERROR_RESPONSES,
    AuditEvent,
    DailyUsage,
    KeyCreate,
    KeyOut,
    KeyRotate,
    KeyUpdate,
    KeyWithSecret,
    Me,
)

router = APIRouter(prefix="/v1", tags=["keys"], responses=ERROR_RESPONSES)
StatusFilter = Literal["active", "expired", "suspended", "revoked"]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


@router.get("/me", response_model=Me)
async def me(user: User, ctx: Ctx) -> dict[str, Any]:
    return {"user_id": user.user_id, "username": user.username, "email": user.email,
            "roles": sorted(user.roles), "groups": list(user.groups),
            "is_admin": user.has_role(ctx.settings.admin_role)}


@router.post("/keys", response_model=KeyWithSecret, status_code=201)
async def create_key(body: KeyCreate, user: User, ctx: Ctx) -> dict[str, Any]:
    await remember_owner(ctx.engine, user)
    created = await ctx.keys.create(user, body.to_domain())
    return {**created.key, "key": created.secret}


@router.get("/keys", response_model=list[KeyOut])
async def list_keys(user: User, ctx: Ctx, status: StatusFilter | None = None,
                    limit: Limit = 100, offset: Offset = 0) -> list[dict[str, Any]]:
    return await ctx.keys.list_keys(user.user_id, status, limit, offset)


@router.get("/keys/{key_id}", response_model=KeyOut)
async def get_key(key_id: uuid.UUID, user: User, ctx: Ctx) -> dict[str, Any]:
    return await ctx.keys.get(str(key_id), user.user_id)


@router.patch("/keys/{key_id}", response_model=KeyOut)
async def update_key(key_id: uuid.UUID, body: KeyUpdate, user: User, ctx: Ctx) -> dict[str, Any]:
    return await ctx.keys.update(str(key_id), user.user_id, body.to_domain(), Actor.of(user))


@router.delete("/keys/{key_id}", response_model=KeyOut)
async def revoke_key(key_id: uuid.UUID, user: User, ctx: Ctx) -> dict[str, Any]:
    return await ctx.keys.revoke(str(key_id), user.user_id, Actor.of(user), "revoked by owner")


@router.post("/keys/{key_id}/rotate", response_model=KeyWithSecret)
async def rotate_key(key_id: uuid.UUID, user: User, ctx: Ctx,
                     body: KeyRotate | None = None) -> dict[str, Any]:
    await remember_owner(ctx.engine, user)
    overlap = body.overlap_seconds if body else 0
    created = await ctx.keys.rotate(str(key_id), user.user_id, overlap, Actor.of(user))
    return {**created.key, "key": created.secret}


@router.get("/keys/{key_id}/usage", response_model=list[DailyUsage])
async def key_usage(key_id: uuid.UUID, user: User, ctx: Ctx,
                    days: Annotated[int, Query(ge=1, le=365)] = 30) -> list[dict[str, Any]]:
    return await ctx.keys.daily_usage(str(key_id), user.user_id, days)


@router.get("/keys/{key_id}/alerts", response_model=list[AuditEvent])
async def key_alert_events(key_id: uuid.UUID, user: User, ctx: Ctx,
                           limit: Limit = 100) -> list[dict[str, Any]]:
    """The key's alerts (audit events new_network, secret_reuse, leak_reported,
    limit_tripped), newest first."""
    await ctx.keys.get(str(key_id), user.user_id)  # 404 unless it is the caller's key
    return await key_alerts(ctx.engine, str(key_id), limit=limit)


@router.get("/keys/{key_id}/audit", response_model=list[AuditEvent])
async def key_audit(key_id: uuid.UUID, user: User, ctx: Ctx,
                    limit: Limit = 100) -> list[dict[str, Any]]:
    await ctx.keys.get(str(key_id), user.user_id)  # 404 unless it is the caller's key
    return await list_audit(ctx.engine, key_id=str(key_id), limit=limit)
