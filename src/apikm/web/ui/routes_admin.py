"""Administration: every key with its owner, revocation with a reason, the audit log."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Annotated, Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.responses import RedirectResponse

from apikm.identity.tables import owners
from apikm.keys.policy import MAX_REASON, PolicyError, check_reason, storable
from apikm.keys.service import Actor
from apikm.web.context import AppContext
from apikm.web.ui.admin_search import (
    AuditFilter,
    audit_actions,
    audit_events_page,
    kept_filters,
    key_ids_of,
    public_id_of,
    public_ids,
)
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
                   status: str = "all", key: str = "", page: Page = 1,
                   done: str | None = None) -> Response:
    status = status if status in STATUS_FILTERS else "all"
    user = user.strip()[:255]
    public_id = public_id_of(key[:255], ctx.settings.key_prefix) if key.strip() else None
    owner_id = await owner_id_of(ctx, user) if user else None
    keys: list[dict[str, Any]] = []
    if (not user or owner_id is not None) and (not key.strip() or public_id is not None):
        keys = await ctx.keys.list_keys(owner_id, None if status == "all" else status,
                                        PAGE_SIZE + 1, (page - 1) * PAGE_SIZE,
                                        public_id=public_id)
    owner_of = await owners_by_id(ctx, (k["owner_id"] for k in keys))
    here = kept_filters(urlencode({"user": user, "status": status, "key": public_id or "",
                                   "page": page if page > 1 else ""}))
    return render(request, "admin_keys.html", admin,
                  keys=decorate(keys[:PAGE_SIZE], owner_of), owners=owner_of, status=status,
                  statuses=STATUS_FILTERS, user_filter=user, key_filter=public_id or "",
                  bad_key=bool(key.strip()) and public_id is None,
                  unknown_user=bool(user) and owner_id is None, page=page,
                  more=len(keys) > PAGE_SIZE, here=here,
                  message="The key was revoked." if done == "revoked" else None)


@router.post("/keys")
async def search_keys(request: Request, admin: PostedAdmin, ctx: Ctx) -> Response:
    """The search form posts, so a whole key pasted into it never enters a URL (history,
    proxy logs); the list it redirects to names the key's public id only."""
    form = await request.form()
    text = {name: str(form.get(name) or "").strip()[:255] for name in ("user", "status", "key")}
    public_id = public_id_of(text["key"], ctx.settings.key_prefix) if text["key"] else ""
    if public_id is None:  # neither key, hint nor public id: say so, echo nothing of it
        public_id = "?"
    query = kept_filters(urlencode({**text, "key": public_id}))
    return RedirectResponse(f"/admin/keys?{query}", status_code=303)


@router.get("/keys/{key_id}/revoke")
async def revoke_form(request: Request, key_id: uuid.UUID, admin: AdminUser, ctx: Ctx,
                      back: Annotated[str, Query(max_length=1024)] = "") -> Response:
    key = await ctx.keys.get(str(key_id), None)
    owner_of = await owners_by_id(ctx, [key["owner_id"]])
    return render(request, "key_revoke.html", admin, key=key, admin=True,
                  owner=owner_of.get(key["owner_id"]), max_reason=MAX_REASON,
                  back=kept_filters(back))


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: uuid.UUID, admin: PostedAdmin,
                     ctx: Ctx) -> Response:
    form = await request.form()
    reason = str(form.get("reason") or "").strip()
    back = kept_filters(str(form.get("back") or ""))
    key = await ctx.keys.get(str(key_id), None)
    try:
        reason = check_reason(reason)
    except PolicyError as exc:
        owner_of = await owners_by_id(ctx, [key["owner_id"]])
        return render(request, "key_revoke.html", admin, 422, key=key, admin=True,
                      owner=owner_of.get(key["owner_id"]), max_reason=MAX_REASON, back=back,
                      error=f"{sentence(str(exc))} The owner sees it.")
    await ctx.keys.revoke(str(key_id), None, Actor.of(admin.principal), reason)
    # Back to the list as the admin left it: same user, status, key and page.
    return RedirectResponse(f"/admin/keys?{back + '&' if back else ''}done=revoked",
                            status_code=303)


@router.get("/audit")
async def audit_log(request: Request, admin: AdminUser, ctx: Ctx, action: str = "",
                    user: str = "", key: str = "", page: Page = 1) -> Response:
    actions = await audit_actions(ctx.engine)
    action = action if action in actions else ""
    user, key = user.strip()[:255], key.strip()[:255]
    # A whole key typed into the URL is shown, and kept in the paging links, as its
    # public id only (the form posts, so it never puts one there).
    key = public_id_of(key, ctx.settings.key_prefix) or key if key else ""
    where, problem = await _audit_filter(ctx, action, user, key)
    events: list[dict[str, Any]] = []
    if problem is None:
        events = await audit_events_page(ctx.engine, where, PAGE_SIZE + 1,
                                         (page - 1) * PAGE_SIZE)
    shown = events[:PAGE_SIZE]
    keys_of = await public_ids(ctx.engine, sorted({e["key_id"] for e in shown if e["key_id"]}))
    owner_of = await owners_by_id(ctx, (e["owner_id"] for e in shown if e["owner_id"]))
    params = urlencode({"action": action, "user": user, "key": key})
    return render(request, "admin_audit.html", admin, events=shown, keys_of=keys_of,
                  owners=owner_of, page=page, more=len(events) > PAGE_SIZE, actions=actions,
                  action=action, user_filter=user, key_filter=key, problem=problem,
                  params=params)


@router.post("/audit")
async def filter_audit(request: Request, admin: PostedAdmin, ctx: Ctx) -> Response:
    """Posted like the key search, so a whole key pasted here never enters a URL."""
    form = await request.form()
    text = {name: str(form.get(name) or "").strip()[:255] for name in ("action", "user", "key")}
    if text["key"]:
        text["key"] = public_id_of(text["key"], ctx.settings.key_prefix) or "?"
    return RedirectResponse(f"/admin/audit?{urlencode(text)}", status_code=303)


async def _audit_filter(ctx: AppContext, action: str, user: str,
                        key: str) -> tuple[AuditFilter, str | None]:
    """The filter, or why nothing can match (an unknown user, something not a key)."""
    user_id = None
    if user:
        user_id = await owner_id_of(ctx, user)
        if user_id is None:
            return AuditFilter(), f"apikm knows no user “{user}”."
    key_ids = None
    if key:
        public_id = public_id_of(key, ctx.settings.key_prefix)
        if public_id is None:
            return AuditFilter(), "Give a key's hint, its public id, or the whole key."
        key_ids = await key_ids_of(ctx.engine, public_id)
    return AuditFilter(action or None, user_id, key_ids), None
