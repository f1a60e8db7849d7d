"""Request-scoped helpers for the FastAPI routes (not used on the verification hot path)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from apikm.identity.principal import Principal
from apikm.web.context import AppContext
from apikm.web.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="A Keycloak access token")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="apikm"'}


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    ctx = get_ctx(request)
    if credentials is None or not credentials.credentials:
        raise ApiError(401, "unauthorized", "a Keycloak access token is required "
                       "(Authorization: Bearer ...)", headers=_CHALLENGE)
    client_ip = ctx.addresses.resolve(request.scope)
    return await ctx.tokens.validate(credentials.credentials, client_ip)


async def current_admin(user: Annotated[Principal, Depends(current_user)],
                        request: Request) -> Principal:
    role = get_ctx(request).settings.admin_role
    if not user.has_role(role):
        raise ApiError(403, "forbidden", f"this needs the Keycloak role '{role}'")
    return user


Ctx = Annotated[AppContext, Depends(get_ctx)]
User = Annotated[Principal, Depends(current_user)]
Admin = Annotated[Principal, Depends(current_admin)]
