"""Liveness, readiness and Prometheus metrics (bare Starlette endpoints)."""

from __future__ import annotations

import httpx
import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from apikm.identity.sync import sync_disabled_reason
from apikm.web.context import AppContext


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the database answers. Keycloak is reported, not required: verification keeps
    answering from synced state while Keycloak is away, so a Keycloak outage must not take
    every replica out of the load balancer."""
    ctx: AppContext = request.app.state.ctx
    checks = {"database": await _database_ok(ctx), "keycloak": await _keycloak_ok(ctx)}
    ready = checks["database"]
    sync = await ctx.sync.report() if ctx.sync is not None else {
        "state": "off", "reason": sync_disabled_reason(ctx.settings)}
    # Change events (cache invalidation across replicas) are reported, not required: while
    # they cannot be read, cached answers live one second, so answers stay right.
    return JSONResponse({"status": "ready" if ready else "not ready",
                         "checks": {k: "ok" if v else "failing" for k, v in checks.items()},
                         "sync": sync, "events": ctx.bus.status()},
                        status_code=200 if ready else 503)


async def _database_ok(ctx: AppContext) -> bool:
    try:
        async with ctx.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception:
        return False
    return True


async def _keycloak_ok(ctx: AppContext) -> bool:
    try:
        response = await ctx.http.get(
            f"{ctx.settings.issuer}/.well-known/openid-configuration", timeout=2.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def metrics(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
