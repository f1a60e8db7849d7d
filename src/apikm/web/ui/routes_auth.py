"""Sign-in, callback, sign-out and the landing page."""

from __future__ import annotations

import hmac
from dataclasses import asdict

from fastapi import APIRouter, Request, Response
from starlette.responses import RedirectResponse

from apikm.identity.owners import remember_owner
from apikm.web.ui.auth import Ctx, Ui
from apikm.web.ui.csrf import check_csrf
from apikm.web.ui.oidc import LoginRequest, SignInError, new_login_request
from apikm.web.ui.render import UiRoute, error_page, render
from apikm.web.ui.session import new_session

router = APIRouter(route_class=UiRoute, include_in_schema=False)
DEFAULT_NEXT = "/keys"


def safe_next(value: str | None) -> str:
    """Only a path on this site: no scheme, no host, no '//' or '/\\' tricks."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return DEFAULT_NEXT
    if len(value) > 500 or any(ch in value for ch in "\r\n\\"):
        return DEFAULT_NEXT
    return value


def site_url(request: Request, ui: Ui) -> str:
    """Where the browser reaches apikm: the public URL, else the address it used."""
    if ui.settings.public_url:
        return ui.settings.public_url
    return f"{request.url.scheme}://{request.url.netloc}"


@router.get("/")
async def home(request: Request, ui: Ui) -> Response:
    if ui.read_session(request) is not None:
        return RedirectResponse(DEFAULT_NEXT, status_code=303)
    return render(request, "home.html", None, configured=ui.oidc.configured)


@router.get("/login")
async def login(request: Request, ui: Ui, ctx: Ctx, next: str | None = None) -> Response:
    if not ui.oidc.configured:
        return error_page(request, 503, "Sign-in is not configured",
                          "The operator has to set APIKM_OIDC_CLIENT_SECRET.")
    meta = await ui.oidc.metadata(ctx.http)
    attempt = new_login_request(safe_next(next), f"{site_url(request, ui)}/auth/callback")
    ui.set_login(request, asdict(attempt))
    return RedirectResponse(ui.oidc.authorization_url(meta, attempt), status_code=303)


@router.get("/auth/callback")
async def callback(request: Request, ui: Ui, ctx: Ctx, code: str | None = None,
                   state: str | None = None, error: str | None = None,
                   error_description: str | None = None) -> Response:
    stored = ui.pop_login(request)
    if stored is None:
        raise SignInError("This sign-in took too long or started in another browser or at "
                          "another address. Please sign in again.")
    attempt = LoginRequest(**{k: str(v) for k, v in stored.items() if k != "exp"})
    if not state or not hmac.compare_digest(state.encode(), attempt.state.encode()):
        raise SignInError("The answer from Keycloak does not match this sign-in (state).")
    if error:
        raise SignInError(f"Keycloak did not sign you in: {error_description or error}.")
    if not code:
        raise SignInError("Keycloak sent no authorization code.")
    tokens = await ui.oidc.exchange_code(ctx.http, code, attempt)
    if tokens.id_token is None:
        raise SignInError("Keycloak sent no ID token; is the 'openid' scope allowed?")
    claims = await ui.oidc.validate_id_token(ctx.tokens.jwks, tokens.id_token, attempt.nonce)
    session = new_session(str(claims["sub"]), str(claims.get("preferred_username") or
                          claims["sub"]), ui.lifetime_seconds, tokens.refresh_token,
                          tokens.id_token)
    entry = await ui.remember_tokens(ctx, session, tokens)
    await remember_owner(ctx.engine, entry.principal)
    ui.set_session(request, session)
    return RedirectResponse(safe_next(attempt.next_path), status_code=303)


@router.post("/logout")
async def logout(request: Request, ui: Ui, ctx: Ctx) -> Response:
    session = ui.read_session(request)
    if session is None:
        return RedirectResponse("/signed-out", status_code=303)
    await check_csrf(request, session.csrf)
    await ui.ended.end(session)  # every replica refuses the cookie from now on
    ui.clear_session(request)
    back = f"{site_url(request, ui)}/signed-out"
    try:
        meta = await ui.oidc.metadata(ctx.http)
    except SignInError:
        return RedirectResponse("/signed-out", status_code=303)
    target = ui.oidc.end_session_url(meta, session.id_token, back)
    return RedirectResponse(target or "/signed-out", status_code=303)


@router.get("/signed-out")
async def signed_out(request: Request) -> Response:
    return render(request, "signed_out.html", None)
