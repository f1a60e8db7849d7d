"""A user's own keys: list, create (shown once), details with usage and audit, manage."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.responses import RedirectResponse

from apikm.db import utcnow
from apikm.identity.owners import remember_owner
from apikm.identity.tables import owners
from apikm.keys.policy import MAX_NAME, PolicyError
from apikm.keys.service import (
    STATUSES,
    Actor,
    CreatedKey,
    KeyChanges,
    KeyLimitReached,
    list_audit,
)
from apikm.web.context import AppContext
from apikm.web.ui.auth import Ctx, FreshUser, Ui, UiState, UiUser, User
from apikm.web.ui.csrf import check_csrf
from apikm.web.ui.forms import (
    FIELD_OF,
    edit_values,
    expiry_choices,
    parse_key_edit,
    parse_new_key,
    parse_renewal,
    sentence,
)
from apikm.web.ui.handoff import Handoffs
from apikm.web.ui.render import UiRoute, render
from apikm.web.ui.snippets import snippets
from apikm.web.ui.views import key_state, lost_roles, usage_chart

router = APIRouter(route_class=UiRoute, include_in_schema=False)
PAGE_SIZE = 50
STATUS_FILTERS = ("all", *STATUSES)
DONE_MESSAGES = {
    "saved": "Your changes were saved. Services see them within seconds.",
    "unchanged": "Nothing was changed.",
    "renewed": "The key was renewed: it works until its new expiry, with the same secret.",
    "revoked": "The key was revoked. It stops working within seconds.",
}
RENEWABLE = ("active", "expired")


async def checked_user(request: Request, user: User) -> UiUser:
    await check_csrf(request, user.csrf)
    return user


async def checked_fresh_user(request: Request, user: FreshUser) -> UiUser:
    await check_csrf(request, user.csrf)
    return user


Posted = Annotated[UiUser, Depends(checked_user)]
PostedFresh = Annotated[UiUser, Depends(checked_fresh_user)]
Page = Annotated[int, Query(ge=1, le=10_000)]


async def owner_row(ctx: AppContext, user_id: str) -> dict[str, Any] | None:
    async with ctx.engine.connect() as conn:
        row = (await conn.execute(sa.select(owners).where(owners.c.user_id == user_id))).first()
    return dict(row._mapping) if row else None


def decorate(keys: list[dict[str, Any]], owner_of: dict[str, dict[str, Any]]) -> list[dict[str,
                                                                                          Any]]:
    now = utcnow()
    return [{**key, "state": key_state(key, now, owner_of.get(key["owner_id"]))} for key in keys]


@router.get("/keys")
async def my_keys(request: Request, user: User, ctx: Ctx, status: str = "all",
                  page: Page = 1, done: str | None = None) -> Response:
    status = status if status in STATUS_FILTERS else "all"
    keys = await ctx.keys.list_keys(user.principal.user_id, None if status == "all" else status,
                                    PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)
    owner = await owner_row(ctx, user.principal.user_id)
    return render(request, "keys.html", user, keys=decorate(keys[:PAGE_SIZE],
                  {user.principal.user_id: owner} if owner else {}),
                  status=status, statuses=STATUS_FILTERS, page=page,
                  more=len(keys) > PAGE_SIZE, message=DONE_MESSAGES.get(done or ""))


async def _create_form(request: Request, user: UiUser, ctx: AppContext, ui: Any,
                       values: dict[str, Any], errors: dict[str, str],
                       status: int = 200) -> Response:
    groups = await ui.roles.groups(ctx.http, user.principal, user.access_token)
    choices = expiry_choices(ctx.settings, utcnow().date())
    return render(request, "key_new.html", user, status, groups=groups, choices=choices,
                  values=values, errors=errors, max_name=MAX_NAME,
                  allow_all_roles=ctx.settings.allow_all_roles_keys)


@router.get("/keys/new")
async def new_key_form(request: Request, user: FreshUser, ctx: Ctx, ui: Ui) -> Response:
    values = {"expiry": "default", "roles": [], "name": "", "description": "",
              "networks": "", "meta": "", "expiry_date": "", "all_roles": False}
    return await _create_form(request, user, ctx, ui, values, {})


@router.post("/keys/new")
async def create_key(request: Request, user: PostedFresh, ctx: Ctx, ui: Ui) -> Response:
    form = parse_new_key(await request.form(), ctx.settings, utcnow())
    if form.new_key is None:
        return await _create_form(request, user, ctx, ui, form.values, form.errors, 422)
    await remember_owner(ctx.engine, user.principal)
    try:
        created = await ctx.keys.create(user.principal, form.new_key)
    except KeyLimitReached as exc:
        return await _create_form(request, user, ctx, ui, form.values, {"form": str(exc)}, 409)
    except PolicyError as exc:
        field = FIELD_OF.get(exc.field or "", "form")
        return await _create_form(request, user, ctx, ui, form.values,
                                  {field: sentence(str(exc))}, 422)
    return await _hand_off(ctx, ui, user, created, rotated=False)


async def _hand_off(ctx: AppContext, ui: UiState, user: UiUser, created: CreatedKey,
                    rotated: bool) -> Response:
    """POST -> 303 -> GET: a reload shows "already shown" and never posts the form again."""
    key_id = str(created.key["id"])
    token = await Handoffs(ctx.engine, ui.encryption).put(user.principal.user_id, key_id,
                                                          created.secret, rotated)
    return RedirectResponse(f"/keys/{key_id}/created?h={token}", status_code=303)


@router.get("/keys/{key_id}/created")
async def show_once(request: Request, key_id: uuid.UUID, user: User, ctx: Ctx, ui: Ui,
                    h: Annotated[str, Query(max_length=64)] = "") -> Response:
    owner_id = user.principal.user_id
    handoff = await Handoffs(ctx.engine, ui.encryption).take(h, owner_id, str(key_id))
    key = await ctx.keys.get(str(key_id), owner_id)
    if handoff is None:
        return render(request, "key_shown.html", user, 410, key=key)
    return render(request, "key_created.html", user, key=key, secret=handoff.secret,
                  rotated=handoff.rotated, snippets=snippets(handoff.secret, ctx.settings))


@router.get("/keys/{key_id}")
async def key_page(request: Request, key_id: uuid.UUID, user: User, ctx: Ctx,
                   done: str | None = None) -> Response:
    return await _key_page(request, user, ctx, str(key_id), message=DONE_MESSAGES.get(
        done or ""))


async def _key_page(request: Request, user: UiUser, ctx: AppContext, key_id: str,
                    status: int = 200, **extra: Any) -> Response:
    owner_id = user.principal.user_id
    key = await ctx.keys.get(key_id, owner_id)
    usage = await ctx.keys.daily_usage(key_id, owner_id, 30)
    audit = await list_audit(ctx.engine, key_id=key_id, limit=50)
    owner = await owner_row(ctx, owner_id)
    now = utcnow()
    extra.setdefault("edit", edit_values(key))
    extra.setdefault("renewal", {"expiry": "default", "expiry_date": ""})
    return render(request, "key.html", user, status, key=key,
                  state=key_state(key, now, owner), lost=lost_roles(key, user.principal.roles),
                  chart=usage_chart(usage, now.date()), audit=audit,
                  choices=expiry_choices(ctx.settings, now.date()),
                  renewable=key["status"] in RENEWABLE, errors=extra.pop("errors", {}), **extra)


@router.post("/keys/{key_id}/edit")
async def edit_key(request: Request, key_id: uuid.UUID, user: Posted, ctx: Ctx) -> Response:
    owner_id = user.principal.user_id
    key = await ctx.keys.get(str(key_id), owner_id)
    form = parse_key_edit(await request.form(), key, ctx.settings)
    errors = form.errors
    if form.changes is not None and form.changes == KeyChanges():
        return RedirectResponse(f"/keys/{key_id}?done=unchanged", status_code=303)
    if form.changes is not None:
        try:
            await ctx.keys.update(str(key_id), owner_id, form.changes, Actor.of(user.principal))
        except PolicyError as exc:
            errors = {FIELD_OF.get(exc.field or "", "edit"): sentence(str(exc))}
    if errors:
        return await _key_page(request, user, ctx, str(key_id), 422, errors=errors,
                               edit=form.values)
    return RedirectResponse(f"/keys/{key_id}?done=saved", status_code=303)


@router.post("/keys/{key_id}/renew")
async def renew_key(request: Request, key_id: uuid.UUID, user: Posted, ctx: Ctx) -> Response:
    values, errors, expires_at = parse_renewal(await request.form(), ctx.settings, utcnow())
    if not errors:
        try:
            await ctx.keys.renew(str(key_id), user.principal.user_id, expires_at,
                                 Actor.of(user.principal))
        except PolicyError as exc:
            errors = {"renew": sentence(str(exc))}
    if errors:
        errors = {"renew": errors.get("expiry") or errors.get("renew", "")}
        return await _key_page(request, user, ctx, str(key_id), 422, errors=errors,
                               renewal=values)
    return RedirectResponse(f"/keys/{key_id}?done=renewed", status_code=303)


def _overlap_options(ctx: AppContext) -> list[tuple[int, str]]:
    limit = ctx.settings.max_rotation_overlap_hour * 3600
    options = [(0, "None: the old key stops at once"), (3600, "1 hour"), (86400, "1 day"),
               (7 * 86400, "7 days")]
    return [option for option in options if option[0] <= limit]


@router.get("/keys/{key_id}/rotate")
async def rotate_form(request: Request, key_id: uuid.UUID, user: User, ctx: Ctx) -> Response:
    key = await ctx.keys.get(str(key_id), user.principal.user_id)
    return render(request, "key_rotate.html", user, key=key, options=_overlap_options(ctx))


@router.post("/keys/{key_id}/rotate")
async def rotate_key(request: Request, key_id: uuid.UUID, user: Posted, ctx: Ctx,
                     ui: Ui) -> Response:
    form = await request.form()
    allowed = {seconds for seconds, _label in _overlap_options(ctx)}
    raw = str(form.get("overlap") or "0")
    overlap = int(raw) if raw.isascii() and raw.isdigit() and int(raw) in allowed else -1
    key = await ctx.keys.get(str(key_id), user.principal.user_id)
    if overlap < 0:
        return render(request, "key_rotate.html", user, 422, key=key,
                      options=_overlap_options(ctx), error="Choose one of the overlap options.")
    try:
        created = await ctx.keys.rotate(str(key_id), user.principal.user_id, overlap,
                                        Actor.of(user.principal))
    except PolicyError as exc:
        return render(request, "key_rotate.html", user, 422, key=key,
                      options=_overlap_options(ctx), error=str(exc))
    return await _hand_off(ctx, ui, user, created, rotated=True)


@router.get("/keys/{key_id}/revoke")
async def revoke_form(request: Request, key_id: uuid.UUID, user: User, ctx: Ctx,
                      from_: Annotated[str, Query(alias="from", max_length=8)] = "") -> Response:
    key = await ctx.keys.get(str(key_id), user.principal.user_id)
    return render(request, "key_revoke.html", user, key=key, admin=False,
                  from_list=from_ == "list")


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: uuid.UUID, user: Posted, ctx: Ctx) -> Response:
    await ctx.keys.revoke(str(key_id), user.principal.user_id, Actor.of(user.principal),
                          "revoked by owner")
    if (await request.form()).get("from") == "list":  # revoked from the list: back to it
        return RedirectResponse("/keys?done=revoked", status_code=303)
    return RedirectResponse(f"/keys/{key_id}?done=revoked", status_code=303)
