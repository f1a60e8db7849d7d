"""``/v1/admin/webhooks`` and ``/v1/admin/notifications``: webhook endpoints, test
deliveries and the delivery log, for holders of the admin role."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from apikm.notify import outbox
from apikm.notify.webhooks import Endpoint, EndpointError, EndpointStore
from apikm.web.api.deps import Admin, Ctx
from apikm.web.api.keys import Limit, Offset
from apikm.web.api.schemas import ERROR_RESPONSES
from apikm.web.context import AppContext
from apikm.web.errors import ApiError

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERROR_RESPONSES)


class WebhookIn(BaseModel):
    url: str = Field(max_length=2000, description="http(s) URL that receives the POSTs")
    description: str = Field("", max_length=255)
    events: list[str] = Field(default_factory=list, max_length=50,
                              description="event types; empty: every event")
    secret: str | None = Field(None, max_length=200, description="'whsec_' + base64; "
                               "default: a new random one, answered once")


class WebhookOut(BaseModel):
    id: str
    url: str
    description: str
    events: list[str]
    enabled: bool
    created_at: datetime
    created_by: str


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret, shown this once")


class WebhookPatch(BaseModel):
    enabled: bool


class TestResult(BaseModel):
    notification_id: int
    ok: bool
    status_code: int | None
    error: str


def _endpoints(ctx: AppContext) -> EndpointStore:
    if ctx.notifier is None:
        raise ApiError(503, "unavailable", "notifications are not available")
    return ctx.notifier.endpoints


def _out(endpoint: Endpoint) -> dict[str, Any]:
    return {k: getattr(endpoint, k) for k in WebhookOut.model_fields}


@router.get("/webhooks", response_model=list[WebhookOut])
async def list_webhooks(admin: Admin, ctx: Ctx) -> list[dict[str, Any]]:
    return [_out(e) for e in await _endpoints(ctx).list()]


@router.post("/webhooks", response_model=WebhookCreated, status_code=201)
async def add_webhook(body: WebhookIn, admin: Admin, ctx: Ctx) -> dict[str, Any]:
    try:
        endpoint = await _endpoints(ctx).create(body.url, body.description, body.events,
                                                admin.username, secret=body.secret)
    except EndpointError as exc:
        raise ApiError(422, "invalid_request", f"{exc.field}: {exc}", field=exc.field) from None
    return {**_out(endpoint), "secret": endpoint.secret}


@router.patch("/webhooks/{endpoint_id}", response_model=WebhookOut)
async def change_webhook(endpoint_id: uuid.UUID, body: WebhookPatch, admin: Admin,
                         ctx: Ctx) -> dict[str, Any]:
    store = _endpoints(ctx)
    if not await store.set_enabled(str(endpoint_id), body.enabled):
        raise ApiError(404, "not_found", "no such webhook endpoint")
    endpoint = await store.get(str(endpoint_id))
    assert endpoint is not None
    return _out(endpoint)


@router.delete("/webhooks/{endpoint_id}", status_code=204)
async def delete_webhook(endpoint_id: uuid.UUID, admin: Admin, ctx: Ctx) -> None:
    if not await _endpoints(ctx).delete(str(endpoint_id)):
        raise ApiError(404, "not_found", "no such webhook endpoint")


@router.post("/webhooks/{endpoint_id}/test", response_model=TestResult)
async def test_webhook(endpoint_id: uuid.UUID, admin: Admin, ctx: Ctx) -> dict[str, Any]:
    if await _endpoints(ctx).get(str(endpoint_id)) is None:
        raise ApiError(404, "not_found", "no such webhook endpoint")
    assert ctx.notifier is not None
    row_id, outcome = await ctx.notifier.send_test("webhook", str(endpoint_id), admin.username)
    return {"notification_id": row_id, "ok": outcome.ok, "status_code": outcome.status_code,
            "error": outcome.error}


@router.get("/notifications")
async def delivery_log(admin: Admin, ctx: Ctx,
                       status: Annotated[str | None, Query(pattern="^(pending|sent|failed)$")]
                       = None,
                       limit: Limit = 100, offset: Offset = 0) -> list[dict[str, Any]]:
    """Notifications, newest first, each with its delivery attempts."""
    return await outbox.delivery_log(ctx.engine, limit, offset, status)
