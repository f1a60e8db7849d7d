"""The app factory: ``create_app()`` wires settings, context, routes and middleware.

The outermost ASGI app is ``Gateway``: it answers the gateway path (``/v1/auth``,
``/v1/verify``) itself and passes every other request to the FastAPI app below.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from apikm import __version__
from apikm.compat import routes as compat_routes
from apikm.config import Settings, get_settings
from apikm.identity.sync import start_or_explain
from apikm.logs import configure_logging
from apikm.tokens.services import build_token_services
from apikm.web import oauth, ops, ui
from apikm.web.api import admin, keys, leaks
from apikm.web.api import notify as notify_api
from apikm.web.context import build_context
from apikm.web.errors import install_error_handlers
from apikm.web.gateway import Gateway
from apikm.web.middleware import AccessLog, LimitBodySize
from apikm.web.openapi import add_verify_to_openapi
from apikm.web.ui.auth import UiState


def create_app(settings: Settings | None = None) -> Gateway:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json, settings.key_prefix)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = build_context(settings)
        app.state.ctx = gateway.ctx = ctx
        tokens = build_token_services(settings, ctx.verifier, ctx.http, ctx.engine)
        app.state.tokens = tokens
        gateway.upstream = tokens.upstream
        ui_state: UiState = app.state.ui
        # Subscribed before the bus starts, loaded after: no change falls in between.
        ctx.bus.subscribe(tokens.keys.on_event)
        ctx.bus.subscribe(ui_state.ended.on_event)
        try:
            await ctx.start()
            await tokens.keys.start()
            await ui_state.ended.start(ctx.engine, ctx.bus)
            start_or_explain(ctx.sync, settings)
            # Everything built so far (framework, routes, settings, pools) lives as long as
            # the process: move it out of the collector's sight, so a full collection walks
            # only what requests allocate. Without this, full passes over the few hundred
            # thousand start-up objects stalled the gateway path for 30-80 ms every few seconds.
            gc.collect()
            gc.freeze()
            yield
        finally:
            gateway.log.close()
            await ui_state.ended.stop()
            await tokens.keys.stop()
            await ctx.close()

    app = FastAPI(title="apikm", version=__version__, lifespan=lifespan,
                  description="Personal API keys for Keycloak users.")
    install_error_handlers(app, settings.key_prefix)
    # Ops endpoints are plain Starlette routes: no parameter machinery.
    app.add_route("/healthz", ops.healthz, methods=["GET"])
    app.add_route("/readyz", ops.readyz, methods=["GET"])
    app.add_route("/metrics", ops.metrics, methods=["GET"])
    oauth.add_routes(app, settings)
    app.include_router(keys.router)
    app.include_router(admin.router)
    app.include_router(notify_api.router)
    leaks.install(app, settings)  # POST /v1/leaks
    if settings.compat_api:  # APIKeyManager's /auth/... and /health/status
        compat_routes.install(app, settings)
    ui.install(app, settings)  # the web UI under / (templates, static, sign-in)
    add_verify_to_openapi(app)
    if settings.cors_origins_regex:  # APIKM_CORS_ORIGINS_REGEX (bearer tokens, no cookies)
        app.add_middleware(CORSMiddleware, allow_origin_regex=settings.cors_origins_regex,
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["authorization", "content-type", "x-api-key"])
    app.add_middleware(LimitBodySize, max_bytes=settings.max_body_bytes,
                       path_limits={leaks.PATH: settings.leak_report_max_bytes})
    if settings.access_log:
        app.add_middleware(AccessLog)
    gateway = Gateway(app, settings)
    return gateway


def app_factory() -> Any:
    """Entry point for ``uvicorn --factory apikm.web.app:app_factory``."""
    return create_app()
