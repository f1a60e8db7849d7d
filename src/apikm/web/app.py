"""The app factory: ``create_app()`` wires settings, context, routes and middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from apikm import __version__
from apikm.config import Settings, get_settings
from apikm.identity.sync import start_or_explain
from apikm.logs import configure_logging
from apikm.tokens.services import build_token_services
from apikm.web import oauth, ops, ui
from apikm.web.api import admin, keys
from apikm.web.api.verify import verify_endpoint
from apikm.web.context import build_context
from apikm.web.errors import install_error_handlers
from apikm.web.middleware import AccessLog, LimitBodySize
from apikm.web.openapi import add_verify_to_openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json, settings.key_prefix)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = build_context(settings)
        app.state.ctx = ctx
        app.state.tokens = build_token_services(settings, ctx.verifier, ctx.http)
        ctx.usage.start()
        start_or_explain(ctx.sync, settings)
        try:
            yield
        finally:
            await ctx.close()

    app = FastAPI(title="apikm", version=__version__, lifespan=lifespan,
                  description="Personal API keys for Keycloak users.")
    install_error_handlers(app)
    # The hot path and ops endpoints are plain Starlette routes: no parameter machinery.
    app.add_route("/v1/verify", verify_endpoint, methods=["POST"])
    app.add_route("/healthz", ops.healthz, methods=["GET"])
    app.add_route("/readyz", ops.readyz, methods=["GET"])
    app.add_route("/metrics", ops.metrics, methods=["GET"])
    oauth.add_routes(app, settings)
    app.include_router(keys.router)
    app.include_router(admin.router)
    ui.install(app, settings)  # the web UI under / (templates, static, sign-in)
    add_verify_to_openapi(app)
    app.add_middleware(LimitBodySize, max_bytes=settings.max_body_bytes,
                       exempt_prefixes=("/v1/auth",))
    if settings.access_log:
        app.add_middleware(AccessLog)
    return app


def app_factory() -> Any:
    """Entry point for ``uvicorn --factory apikm.web.app:app_factory``."""
    return create_app()
