"""Administration: every key with its owner, revocation with a reason, the audit log."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.responses import RedirectResponse

from apikm.identity.tables import owners
from apikm.keys.policy import MAX_REASON, PolicyError, check_reason, storable
from apikm.keys.service import Actor, list_audit
from apikm.keys.tables import api_keys
from apikm.web.context import AppContext
from apikm.web.ui.auth import AdminUser, Ctx, UiUser
from apikm.web.ui.csrf import check_csrf
from apikm.web.ui.forms import sentence
from apikm.web.ui.render import UiRoute, render
from apikm.web.ui.routes_keys import PAGE_SIZE, STATUS_FILTERS, decorate

router = APIRouter(prefix="/admin", route_class=UiRoute, include_in_schema=False)
Page = Annotated[int, Query(ge=1, le=10_000)]


async def checked_admin(request: Request, admin: AdminUser) -> UiUser:
    await check_csrf(request, admin.csrf)
    return admin


PostedAdmin = Annotated[UiUser, Depends(checked_admin)]


async def owners_by_id(ctx: AppContext, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    async with ctx.engine.connect() as conn:
        rows = (await conn.execute(sa.select(owners).where(owners.c.user_id.in_(ids)))).all()
    return {row.user_id: dict(row._mapping) for row in rows}


async def owner_id_of(ctx: AppContext, user: str) -> str | None:
    """A user filter accepts a username (as apikm last saw it) or a Keycloak user id."""
    if not storable(user):
        return None
    async with ctx.engine.connect() as conn:
        found = await conn.scalar(sa.select(owners.c.user_id).where(
            sa.or_(owners.c.username == user, owners.c.user_id == user)))
    return str(found) if found is not None else None


@router.get("")
async def admin_home() -> Response:
    return RedirectResponse("/admin/keys", status_code=303)


@router.get("/keys")
async def all_keys(request: Request, admin: AdminUser, ctx: Ctx, user: str = "",
                   status: str = "all", page: Page = 1, done: str | None = None) -> Response:
    status = status if status in STATUS_FILTERS else "all"
    user = user.strip()[:255]
    owner_id = await owner_id_of(ctx, user) if user else None
    keys: list[dict[str, Any]] = []
    if not user or owner_id is not None:
        keys = await ctx.keys.list_keys(owner_id, None if status == "all" else status,
                                        PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)
    owner_of = await owners_by_id(ctx, (k["owner_id"] for k in keys))
    return render(request, "admin_keys.html", admin,
                  keys=decorate(keys[:PAGE_SIZE], owner_of), owners=owner_of, status=status,
                  statuses=STATUS_FILTERS, user_filter=user, unknown_user=bool(user) and
                  owner_id is None, page=page, more=len(keys) > PAGE_SIZE,
                  message="The key was revoked." if done == "revoked" else None)


@router.get("/keys/{key_id}/revoke")
async def revoke_form(request: Request, key_id: uuid.UUID, admin: AdminUser,
                      ctx: Ctx) -> Response:
    key = await ctx.keys.get(str(key_id), None)
    owner_of = await owners_by_id(ctx, [key["owner_id"]])
    return render(request, "key_revoke.html", admin, key=key, admin=True,
                  owner=owner_of.get(key["owner_id"]), max_reason=MAX_REASON)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: uuid.UUID, admin: PostedAdmin,
                     ctx: Ctx) -> Response:
    reason = str((await request.form()).get("reason") or "").strip()
    key = await ctx.keys.get(str(key_id), None)
    try:
        reason = check_reason(reason)
    except PolicyError as exc:
        owner_of = await owners_by_id(ctx, [key["owner_id"]])
        return render(request, "key_revoke.html", admin, 422, key=key, admin=True,
                      owner=owner_of.get(key["owner_id"]), max_reason=MAX_REASON,
                      error=f"{sentence(str(exc))} The owner sees it.")
    await ctx.keys.revoke(str(key_id), None, Actor.of(admin.principal), reason)
    return RedirectResponse("/admin/keys?done=revoked", status_code=303)


@router.get("/audit")
async def audit_log(request: Request, admin: AdminUser, ctx: Ctx, page: Page = 1) -> Response:
    events = await list_audit(ctx.engine, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    key_ids = sorted({e["key_id"] for e in events if e["key_id"]})
    names: dict[str, str] = {}
    if key_ids:
        async with ctx.engine.connect() as conn:
            rows = (await conn.execute(sa.select(api_keys.c.id, api_keys.c.name)
                                       .where(api_keys.c.id.in_(key_ids)))).all()
        names = {row.id: row.name for row in rows}
    owner_of = await owners_by_id(ctx, (e["owner_id"] for e in events if e["owner_id"]))
    return render(request, "admin_audit.html", admin, events=events[:PAGE_SIZE],
                  key_names=names, owners=owner_of, page=page, more=len(events) > PAGE_SIZE)
