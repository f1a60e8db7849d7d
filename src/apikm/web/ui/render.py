"""Templates, HTML error pages and the route class that gives every UI response the same
cookies, security headers and HTML (never JSON) errors."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import structlog
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse, RedirectResponse

from apikm import __version__
from apikm.db import utcnow
from apikm.keys.service import KeyNotFound
from apikm.web.errors import redactor_of
from apikm.web.ui.auth import AdminRequired, LoginRequired, UiUser, ui_state
from apikm.web.ui.csrf import CSRF_FIELD, CsrfRefused
from apikm.web.ui.oidc import SignInError
from apikm.web.ui.views import format_datetime, iso_utc, relative

log = structlog.get_logger(__name__)
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["dt"] = format_datetime
templates.env.filters["iso_utc"] = iso_utc
templates.env.globals.update(relative=relative, version=__version__, csrf_field=CSRF_FIELD)


# What an error page echoes of the input: a key pasted into the wrong field is shown as [key].
_ECHOED = ("errors", "error", "values", "message", "detail")


def render(request: Request, name: str, user: UiUser | None, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    if status_code >= 400:
        redact = redactor_of(request.app)
        context = {k: redact(v) if k in _ECHOED else v for k, v in context.items()}
    return templates.TemplateResponse(request, name, {"user": user, "now": utcnow(), **context},
                                      status_code=status_code)


def error_page(request: Request, status: int, title: str, message: str,
               user: UiUser | None = None, action: tuple[str, str] | None = None
               ) -> HTMLResponse:
    """``action``: (label, href) of the one thing the user can do next."""
    user = user or getattr(request.state, "ui_user", None)
    # ``detail``, not ``message``: base.html shows a ``message`` as a success notice.
    return render(request, "error.html", user, status, title=title, detail=message,
                  action=action, code=status)


def login_url(next_path: str) -> str:
    return f"/login?next={quote(next_path, safe='/')}"


def _security_headers(request: Request, response: Response) -> None:
    keycloak = urlsplit(ui_state(request).settings.keycloak_url)
    headers = response.headers
    # Logout is a form POST answered by a redirect to Keycloak, which form-action covers.
    headers.setdefault("Content-Security-Policy", (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        f"form-action 'self' {keycloak.scheme}://{keycloak.netloc}; frame-ancestors 'none'; "
        "base-uri 'none'; object-src 'none'"))
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    # Pages are personal and one of them shows a new key: nothing is cached, anywhere.
    headers.setdefault("Cache-Control", "no-store")


def _error_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, LoginRequired):
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method in ("GET", "HEAD"):
            return RedirectResponse(login_url(path), status_code=303)
        return error_page(request, 401, "Please sign in again",
                          "Your session has ended, so this change was not made.",
                          action=("Sign in", login_url(path)))
    if isinstance(exc, CsrfRefused):
        return error_page(request, 403, "Request refused",
                          "This form is missing its security token or was not sent from an "
                          "apikm page. Reload the page and try again.")
    if isinstance(exc, AdminRequired):
        role = ui_state(request).settings.admin_role
        return error_page(request, 403, "Administrators only",
                          f"This page needs the Keycloak role '{role}'.")
    if isinstance(exc, KeyNotFound | RequestValidationError):
        return error_page(request, 404, "Not found",
                          "There is no such key, or it is not yours.",
                          action=("Back to my keys", "/keys"))
    if isinstance(exc, SignInError):
        return error_page(request, 400, "Sign-in failed", str(exc),
                          action=("Sign in again", "/login"))
    log.error("unhandled UI error", path=request.url.path, error_type=type(exc).__name__)
    return error_page(request, 500, "Something went wrong",
                      "The error was logged. Please try again in a moment.")


class UiRoute(APIRoute):
    """Route class of the UI routers: HTML errors, queued cookies, security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def ui_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:  # every UI failure becomes a page, never JSON or a trace
                response = _error_response(request, exc)
            for cookie in getattr(request.state, "ui_cookies", []):
                response.set_cookie(**cookie)
            _security_headers(request, response)
            return response

        return ui_handler
