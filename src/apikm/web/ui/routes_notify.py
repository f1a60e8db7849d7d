"""Notification pages: a user's mail choices; the admins' defaults, webhook endpoints,
test deliveries and the delivery log."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.responses import RedirectResponse

from apikm.keys.policy import storable
from apikm.notify import outbox, preferences, rules
from apikm.notify.webhooks import EndpointError
from apikm.notify.worker import Notifier
from apikm.web.context import AppContext
from apikm.web.ui.auth import AdminUser, Ctx, UiUser, User
from apikm.web.ui.csrf import check_csrf
from apikm.web.ui.forms import sentence
from apikm.web.ui.render import UiRoute, error_page, render
from apikm.web.ui.routes_keys import owner_row

router = APIRouter(route_class=UiRoute, include_in_schema=False)
MAIL_ADDRESS = re.compile(r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+$")
Page = Annotated[int, Query(ge=1, le=10_000)]
LOG_PAGE = 50
DONE = {
    "saved": "Your choices were saved.",
    "defaults": "The defaults were saved. Users who chose for themselves keep their choices.",
    "enabled": "The endpoint was enabled.",
    "disabled": "The endpoint was disabled: it gets nothing until enabled again.",
    "deleted": "The endpoint was deleted.",
}


async def _checked_user(request: Request, user: User) -> UiUser:
    await check_csrf(request, user.csrf)
    return user


async def _checked_admin(request: Request, admin: AdminUser) -> UiUser:
    await check_csrf(request, admin.csrf)
    return admin


Posted = Annotated[UiUser, Depends(_checked_user)]
PostedAdmin = Annotated[UiUser, Depends(_checked_admin)]


def _topics(chosen: dict[str, bool]) -> list[dict[str, Any]]:
    return [{"name": name, "label": label, "on": chosen.get(name, True),
             "always": name in rules.ALWAYS} for name, label in rules.TOPICS.items()]


def _notifier(ctx: AppContext) -> Notifier:
    if ctx.notifier is None:  # only without an encryption key, where apikm does not start
        raise RuntimeError("notifications are not available")
    return ctx.notifier


# --- a user's choices ------------------------------------------------------------------------
@router.get("/settings/notifications")
async def my_notifications(request: Request, user: User, ctx: Ctx,
                           done: str | None = None) -> Response:
    chosen = await preferences.topics_of(ctx.engine, user.principal.user_id)
    owner = await owner_row(ctx, user.principal.user_id)
    return render(request, "notifications.html", user, topics=_topics(chosen),
                  email=(owner or {}).get("email") or user.principal.email,
                  mail_on=ctx.settings.smtp_url is not None, message=DONE.get(done or ""))


@router.post("/settings/notifications")
async def save_my_notifications(request: Request, user: Posted, ctx: Ctx) -> Response:
    form = await request.form()
    await preferences.save(ctx.engine, user.principal.user_id,
                           preferences.chosen(str(v) for v in form.getlist("topic")))
    return RedirectResponse("/settings/notifications?done=saved", status_code=303)


# --- admins ----------------------------------------------------------------------------------
async def _admin_page(request: Request, admin: UiUser, ctx: AppContext, status: int = 200,
                      **extra: Any) -> Response:
    notifier = _notifier(ctx)
    defaults = await preferences.topics_of(ctx.engine, None)
    endpoints = await notifier.endpoints.list()
    config = notifier.config
    return render(request, "admin_notifications.html", admin, status,
                  topics=_topics(defaults), endpoints=endpoints, event_types=rules.EVENT_TYPES,
                  smtp=config.smtp.describe() if config.smtp else None, sender=config.sender,
                  admin_emails=config.admin_emails, thresholds=config.thresholds,
                  worker_on=ctx.settings.notify_enabled, errors=extra.pop("errors", {}),
                  values=extra.pop("values", {}), **extra)


@router.get("/admin/notifications")
async def admin_notifications(request: Request, admin: AdminUser, ctx: Ctx,
                              done: str | None = None) -> Response:
    return await _admin_page(request, admin, ctx, message=DONE.get(done or ""))


@router.post("/admin/notifications/defaults")
async def save_defaults(request: Request, admin: PostedAdmin, ctx: Ctx) -> Response:
    form = await request.form()
    await preferences.save(ctx.engine, preferences.DEFAULTS,
                           preferences.chosen(str(v) for v in form.getlist("topic")))
    return RedirectResponse("/admin/notifications?done=defaults", status_code=303)


@router.post("/admin/webhooks")
async def add_webhook(request: Request, admin: PostedAdmin, ctx: Ctx) -> Response:
    form = await request.form()
    url, description = str(form.get("url") or ""), str(form.get("description") or "")
    events = [str(v) for v in form.getlist("events")]
    values = {"url": url, "description": description, "events": events}
    try:
        endpoint = await _notifier(ctx).endpoints.create(
            url, description, events, admin.principal.username,
            secret=str(form.get("secret") or "") or None)
    except EndpointError as exc:
        return await _admin_page(request, admin, ctx, 422, values=values,
                                 errors={exc.field: sentence(str(exc))})
    # The secret is shown on this page only; it is kept encrypted and never shown again.
    return render(request, "admin_webhook_created.html", admin, endpoint=endpoint)


@router.post("/admin/webhooks/{endpoint_id}/{action}")
async def change_webhook(request: Request, endpoint_id: uuid.UUID, action: str,
                         admin: PostedAdmin, ctx: Ctx) -> Response:
    endpoints = _notifier(ctx).endpoints
    if action == "test":
        return await _test(request, admin, ctx, "webhook", str(endpoint_id))
    if action in ("enable", "disable"):
        found = await endpoints.set_enabled(str(endpoint_id), action == "enable")
    elif action == "delete":
        found = await endpoints.delete(str(endpoint_id))
    else:
        return error_page(request, 404, "Not found", "There is no such action.", admin)
    if not found:
        return error_page(request, 404, "Not found", "There is no such webhook endpoint.",
                          admin, action=("Back to notifications", "/admin/notifications"))
    return RedirectResponse(f"/admin/notifications?done={action}d", status_code=303)


@router.post("/admin/notifications/test-mail")
async def test_mail(request: Request, admin: PostedAdmin, ctx: Ctx) -> Response:
    address = str((await request.form()).get("address") or "").strip()
    if not MAIL_ADDRESS.match(address) or len(address) > 255 or not storable(address):
        return await _admin_page(request, admin, ctx, 422, values={"address": address},
                                 errors={"address": "Enter a mail address such as "
                                                    "ops@example.org."})
    if ctx.settings.smtp_url is None:
        return await _admin_page(request, admin, ctx, 409, values={"address": address},
                                 errors={"address": "No SMTP server is configured "
                                                    "(APIKM_SMTP_URL)."})
    return await _test(request, admin, ctx, "email", address)


async def _test(request: Request, admin: UiUser, ctx: AppContext, channel: str,
                recipient: str) -> Response:
    notifier = _notifier(ctx)
    if channel == "webhook" and await notifier.endpoints.get(recipient) is None:
        return error_page(request, 404, "Not found", "There is no such webhook endpoint.",
                          admin, action=("Back to notifications", "/admin/notifications"))
    _, outcome = await notifier.send_test(channel, recipient, admin.principal.username)
    what = "Test mail" if channel == "email" else "Test webhook"
    if outcome.ok:
        code = f" (HTTP {outcome.status_code})" if channel == "webhook" else ""
        return await _admin_page(request, admin, ctx, message=f"{what} delivered{code}.")
    return await _admin_page(request, admin, ctx, 502, test_error=(
        f"{what} failed: {outcome.error or outcome.status_code}. See the delivery log."))


@router.get("/admin/deliveries")
async def deliveries(request: Request, admin: AdminUser, ctx: Ctx, page: Page = 1,
                     status: str = "all") -> Response:
    status = status if status in ("all", "pending", "sent", "failed") else "all"
    found = await outbox.delivery_log(ctx.engine, LOG_PAGE + 1, (page - 1) * LOG_PAGE,
                                      None if status == "all" else status)
    endpoints = {e.id: e for e in await _notifier(ctx).endpoints.list()}
    return render(request, "admin_deliveries.html", admin, rows=found[:LOG_PAGE],
                  endpoints=endpoints, page=page, more=len(found) > LOG_PAGE, status=status,
                  statuses=("all", "pending", "sent", "failed"))
