"""``/v1/admin``: every key and the audit log, for holders of the admin role."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from apikm.keys.service import Actor, list_audit
from apikm.web.api.deps import Admin, Ctx
from apikm.web.api.keys import Limit, Offset, StatusFilter
from apikm.web.api.schemas import ERROR_RESPONSES, AuditEvent, KeyOut

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERROR_RESPONSES)
Reason = Annotated[str | None, Query(max_length=255, description="why; kept in the audit log")]


@router.get("/keys", response_model=list[KeyOut])
async def all_keys(admin: Admin, ctx: Ctx, owner_id: str | None = None,
                   status: StatusFilter | None = None, limit: Limit = 100,
                   offset: Offset = 0) -> list[dict[str, Any]]:
    return await ctx.keys.list_keys(owner_id, status, limit, offset)


@router.get("/keys/{key_id}", response_model=KeyOut)
async def any_key(key_id: uuid.UUID, admin: Admin, ctx: Ctx) -> dict[str, Any]:
    return await ctx.keys.get(str(key_id), None)


@router.delete("/keys/{key_id}", response_model=KeyOut)
async def revoke_any_key(key_id: uuid.UUID, admin: Admin, ctx: Ctx,
                         reason: Reason = None) -> dict[str, Any]:
    return await ctx.keys.revoke(str(key_id), None, Actor.of(admin),
                                 reason or f"revoked by admin {admin.username}"[:255])


@router.get("/audit", response_model=list[AuditEvent])
async def audit_log(admin: Admin, ctx: Ctx, key_id: str | None = None,
                    owner_id: str | None = None, actor_id: str | None = None,
                    limit: Limit = 100, offset: Offset = 0) -> list[dict[str, Any]]:
    return await list_audit(ctx.engine, key_id=key_id, owner_id=owner_id, actor_id=actor_id,
                            limit=limit, offset=offset)
