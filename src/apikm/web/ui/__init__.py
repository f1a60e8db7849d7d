"""The web UI: Keycloak sign-in, personal keys, usage, administration (server-rendered).

``install(app, settings)`` mounts it under ``/`` next to the API; its paths (``/``,
``/login``, ``/auth/callback``, ``/logout``, ``/signed-out``, ``/keys...``, ``/settings...``,
``/admin...``, ``/static``) stay clear of ``/v1``, ``/oauth``, ``/.well-known``, ``/docs`` and
the ops routes.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from apikm.config import Settings
from apikm.web.ui import routes_admin, routes_auth, routes_keys, routes_notify
from apikm.web.ui.auth import UiState
from apikm.web.ui.render import HERE


def install(app: FastAPI, settings: Settings) -> None:
    app.state.ui = UiState(settings)
    app.include_router(routes_auth.router)
    app.include_router(routes_keys.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_notify.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
