"""Who is using the UI: the session cookie, turned into a ``Principal`` with current roles."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Annotated, Any

from fastapi import Depends, Request

from apikm.config import Settings
from apikm.encryption import encryption_keys
from apikm.identity.principal import Principal
from apikm.identity.tokens import InvalidToken
from apikm.web.context import AppContext
from apikm.web.ui.ended import EndedSessions
from apikm.web.ui.oidc import OidcClient, SessionEnded, TokenSet
from apikm.web.ui.roles import RoleCatalog
from apikm.web.ui.session import (
    LOGIN_COOKIE,
    LOGIN_TTL_SECONDS,
    SECURE_SESSION_COOKIE,
    SESSION_COOKIE,
    AccessCache,
    CachedAccess,
    CookieCodec,
    Session,
    SessionCodec,
    parse_session_secrets,
)

# Refresh a little before Keycloak's expiry so a token never dies mid-request.
EXPIRY_MARGIN_SECONDS = 15.0


class LoginRequired(Exception):
    """No usable session: GET requests go to the sign-in, others get 401."""


def cookie_secrets(settings: Settings) -> list[bytes]:
    """``APIKM_SESSION_SECRET`` when set, else derived from ``APIKM_ENCRYPTION_KEY``: every
    replica then reads every other's sign-in and session cookies with no secret of its own."""
    spec = settings.session_secret
    if spec is not None:
        return parse_session_secrets(spec.get_secret_value())
    return encryption_keys(settings).derive("ui-cookies")


class UiState:
    """Everything the UI keeps for the life of the process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.encryption = encryption_keys(settings)  # show-once hand-offs (handoff.py)
        secrets_ = cookie_secrets(settings)
        self.sessions = SessionCodec(secrets_)
        self.logins = CookieCodec(secrets_, "login")
        self.cache = AccessCache()
        self.lifetime_seconds = settings.session_lifetime_minutes * 60
        self.ended = EndedSessions(self.cache, self.lifetime_seconds)
        self.oidc = OidcClient(settings)
        self.roles = RoleCatalog(settings, self.oidc)
        self.secure = settings.base_url.startswith("https://")
        self.cookie_name = SECURE_SESSION_COOKIE if self.secure else SESSION_COOKIE

    # --- cookies -------------------------------------------------------------------------
    def read_session(self, request: Request) -> Session | None:
        value = request.cookies.get(self.cookie_name)
        session = self.sessions.decode(value) if value else None
        if session is None or self.cache.is_ended(session.sid):
            return None
        return session

    def set_session(self, request: Request, session: Session) -> None:
        queue_cookie(request, key=self.cookie_name, value=self.sessions.encode(session),
                     path="/", httponly=True, samesite="lax", secure=self.secure)

    def clear_session(self, request: Request) -> None:
        queue_cookie(request, key=self.cookie_name, value="", max_age=0, path="/",
                     httponly=True, samesite="lax", secure=self.secure)

    def set_login(self, request: Request, payload: dict[str, Any]) -> None:
        payload = {**payload, "exp": time.time() + LOGIN_TTL_SECONDS}
        queue_cookie(request, key=LOGIN_COOKIE, value=self.logins.encode(payload),
                     path="/auth", max_age=LOGIN_TTL_SECONDS, httponly=True, samesite="lax",
                     secure=self.secure)

    def pop_login(self, request: Request) -> dict[str, Any] | None:
        value = request.cookies.get(LOGIN_COOKIE)
        queue_cookie(request, key=LOGIN_COOKIE, value="", max_age=0, path="/auth",
                     httponly=True, samesite="lax", secure=self.secure)
        payload = self.logins.decode(value) if value else None
        if payload is None or float(payload.get("exp", 0)) < time.time():
            return None
        return payload

    # --- tokens --------------------------------------------------------------------------
    async def remember_tokens(self, ctx: AppContext, session: Session,
                              tokens: TokenSet) -> CachedAccess:
        principal = await ctx.tokens.validate(tokens.access_token)
        if principal.user_id != session.user_id:
            raise InvalidToken("token belongs to another user")
        now = time.time()
        entry = CachedAccess(access_token=tokens.access_token, principal=principal,
                             valid_until=now + tokens.expires_in - EXPIRY_MARGIN_SECONDS)
        self.cache.put(session.sid, entry)
        return entry


def queue_cookie(request: Request, **cookie: Any) -> None:
    """Cookies set by dependencies; ``UiRoute`` puts them on whatever response is returned."""
    pending: list[dict[str, Any]] = getattr(request.state, "ui_cookies", [])
    pending.append(cookie)
    request.state.ui_cookies = pending


def ui_state(request: Request) -> UiState:
    state: UiState = request.app.state.ui
    return state


def app_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


@dataclass(frozen=True)
class UiUser:
    principal: Principal
    session: Session
    access_token: str
    is_admin: bool

    @property
    def csrf(self) -> str:
        return self.session.csrf


async def _access(request: Request, session: Session, fresh: bool) -> tuple[Session,
                                                                             CachedAccess]:
    ui, ctx = ui_state(request), app_context(request)

    entry = None if fresh else ui.cache.get(session.sid)
    if entry is not None:
        return session, entry
    async with ui.cache.lock(session.sid):
        entry = None if fresh else ui.cache.get(session.sid)
        if entry is not None:
            return session, entry
        try:
            tokens = await ui.oidc.refresh(ctx.http, session.refresh_token)
            session = session.with_tokens(tokens.refresh_token, tokens.id_token)
            entry = await ui.remember_tokens(ctx, session, tokens)
        except (SessionEnded, InvalidToken):
            ui.cache.end(session)
            ui.clear_session(request)
            raise LoginRequired from None
        ui.set_session(request, session)
        return session, entry


async def _current_user(request: Request, fresh: bool) -> UiUser:
    ui, ctx = ui_state(request), app_context(request)
    session = ui.read_session(request)
    if session is None:
        raise LoginRequired
    session, entry = await _access(request, session, fresh)
    principal = replace(entry.principal, client_ip=ctx.addresses.resolve(request.scope))
    user = UiUser(principal=principal, session=session, access_token=entry.access_token,
                  is_admin=principal.has_role(ctx.settings.admin_role))
    request.state.ui_user = user  # error pages still show who is signed in
    return user


async def current_user(request: Request) -> UiUser:
    return await _current_user(request, fresh=False)


async def current_user_fresh(request: Request) -> UiUser:
    """For the pages that grant rights: roles as Keycloak has them this very moment.

    One refresh round trip per create form and per create; keys are made rarely, and a
    role withdrawn a minute ago must not be granted from a four-minute-old token.
    """
    return await _current_user(request, fresh=True)


class AdminRequired(Exception):
    pass


async def current_admin(user: Annotated[UiUser, Depends(current_user)]) -> UiUser:
    if not user.is_admin:
        raise AdminRequired
    return user


User = Annotated[UiUser, Depends(current_user)]
FreshUser = Annotated[UiUser, Depends(current_user_fresh)]
AdminUser = Annotated[UiUser, Depends(current_admin)]
Ctx = Annotated[AppContext, Depends(app_context)]
Ui = Annotated[UiState, Depends(ui_state)]
