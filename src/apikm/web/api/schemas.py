"""Request and response bodies of the key API (what /docs shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

from apikm.keys import policy
from apikm.keys.service import KeyChanges, NewKey

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                        max_length=policy.MAX_NAME),
                 AfterValidator(policy.check_name), Field(examples=["gdal on my laptop"])]
Description = Annotated[str, Field(max_length=policy.MAX_DESCRIPTION),
                        AfterValidator(policy.check_description)]
Role = Annotated[str, Field(min_length=1, max_length=255, examples=["geoserver:read"])]
Network = Annotated[str, Field(min_length=1, max_length=64, examples=["10.0.0.0/8"])]
RateLimit = Annotated[str, Field(max_length=32, examples=["100/minute"])]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description = ""
    roles: list[Role] = Field(default_factory=list, max_length=100,
                              description="realm roles, and client roles as client_id:role")
    expires_at: AwareDatetime | None = Field(None, description="default from policy")
    allowed_networks: list[Network] = Field(default_factory=list,
                                            max_length=policy.MAX_NETWORKS)
    meta: dict[str, Any] = Field(default_factory=dict)
    rate_limit: RateLimit | None = None
    all_roles: bool = Field(False, description="carry all of your current roles and follow "
                            "them in Keycloak (then give no roles); an operator may turn this "
                            "off")

    def to_domain(self) -> NewKey:
        return NewKey(name=self.name, description=self.description, roles=self.roles,
                      expires_at=self.expires_at, allowed_networks=self.allowed_networks,
                      meta=self.meta, rate_limit=self.rate_limit, all_roles=self.all_roles)


class KeyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description | None = None
    roles: list[Role] | None = Field(None, max_length=100, description="can only shrink")
    expires_at: AwareDatetime | None = Field(None, description="can only come closer")
    allowed_networks: list[Network] | None = Field(None, max_length=policy.MAX_NETWORKS)
    meta: dict[str, Any] | None = None
    rate_limit: RateLimit | None = Field(None, description="null removes the limit")

    def to_domain(self) -> KeyChanges:
        clear = "rate_limit" in self.model_fields_set and self.rate_limit is None
        return KeyChanges(name=self.name, description=self.description, roles=self.roles,
                          expires_at=self.expires_at, allowed_networks=self.allowed_networks,
                          meta=self.meta, rate_limit=self.rate_limit, clear_rate_limit=clear)


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_seconds: int = Field(0, ge=0, description="how long the old secret keeps working")


class KeyOut(BaseModel):
    id: str
    public_id: str
    hint: str
    owner_id: str
    name: str
    description: str
    roles: list[str]
    allowed_networks: list[str]
    meta: dict[str, Any]
    rate_limit: str | None
    status: str = Field(description="active, expired, suspended or revoked")
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    rotated_at: datetime | None
    previous_secret_expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoked_reason: str | None
    last_used_at: datetime | None
    last_used_ip: str | None
    use_count: int
    all_roles: bool = Field(False, description="the key carries all of its owner's current "
                            "roles (roles: those held at creation)")
    imported_from: str | None = Field(None, description="'apikeymanager' for imported keys")
    generation: int = Field(1, description="secret generation: 1 at creation, +1 per rotation")
    secret_hint: str = Field("", description="public id and the last characters of the "
                             "current secret: which secret a tool holds")


class KeyWithSecret(KeyOut):
    key: str = Field(description="the API key itself: shown this once, store it now")


class DailyUsage(BaseModel):
    day: str
    count: int


class AuditEvent(BaseModel):
    id: int
    at: datetime
    action: str
    actor_id: str
    actor_name: str
    actor_ip: str | None
    key_id: str | None
    owner_id: str | None
    details: dict[str, Any]


class Me(BaseModel):
    user_id: str
    username: str
    email: str | None
    roles: list[str] = Field(description="roles you may grant to a key")
    groups: list[str]
    is_admin: bool


class FieldError(BaseModel):
    field: str
    message: str


class Error(BaseModel):
    """Every error of the key API (never HTML, never a trace)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="a stable code, e.g. invalid_request, policy_violation, "
                                   "roles_refused, not_found, invalid_token")
    message: str = Field(description="what is wrong, for a person")
    field: str | None = Field(None, description="the request field a policy refused")
    details: list[FieldError] | None = Field(None, description="fields that are not valid")
    refused: list[str] | None = Field(None, description="roles that cannot be granted")


def _error(description: str) -> dict[str, Any]:
    return {"model": Error, "description": description}


# Documented on every key API route, so clients (and the fuzz test) know their shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("the body cannot be read"),
    401: _error("no valid Keycloak access token"),
    403: _error("not allowed (admin role missing, or roles the caller does not hold)"),
    404: _error("no such key, or not yours"),
    409: _error("the caller's key limit is reached"),
    413: _error("the body is too large"),
    422: _error("the request is not valid, or a policy refused it"),
}
