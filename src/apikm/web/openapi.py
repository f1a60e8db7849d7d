"""OpenAPI for the bare Starlette routes, so ``/docs`` documents ``/v1/verify`` too."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from apikm.verify.codes import Code

_STRINGS = {"type": "array", "items": {"type": "string"}}
VERIFY_REQUEST = {
    "type": "object",
    "required": ["key"],
    "properties": {
        "key": {"type": "string", "description": "the API key to check"},
        "required_roles": {"type": "array", "maxItems": 100,
                           "items": {"type": "string", "minLength": 1, "maxLength": 255},
                           "description": "all must be effective roles of the key"},
        "client_ip": {"anyOf": [{"type": "string", "format": "ipv4"},
                                {"type": "string", "format": "ipv6"}],
                      "description": "address the key was presented from (heeded from "
                                     "trusted proxies only)"},
    },
}
VERIFY_RESPONSE = {
    "type": "object",
    "required": ["valid", "code"],
    "properties": {
        "valid": {"type": "boolean"},
        "code": {"type": "string", "enum": [code.value for code in Code]},
        "message": {"type": "string", "description": "why the key is not valid"},
        "reason": {"type": "string", "description": "REVOKED: by whom, or rotated"},
        "missing_roles": _STRINGS,
        "retry_after": {"type": "integer", "description": "RATE_LIMITED: seconds"},
        "key_id": {"type": "string"},
        "key_name": {"type": "string"},
        "public_id": {"type": "string"},
        "user": {"type": "object", "required": ["id", "username"], "properties": {
            "id": {"type": "string"}, "username": {"type": "string"},
            "email": {"type": ["string", "null"]}}},
        "roles": _STRINGS,
        "groups": _STRINGS,
        "meta": {"type": "object"},
        "expires_at": {"type": "string", "format": "date-time"},
    },
}
ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def add_verify_to_openapi(app: FastAPI) -> None:
    def schema() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(title=app.title, version=app.version,
                               description=app.description, routes=app.routes)
        document["paths"]["/v1/verify"] = {"post": {
            "tags": ["verify"],
            "summary": "Verify an API key",
            "description": "Always 200 with a `code`; 400 for a body that is not valid.",
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": VERIFY_REQUEST}}},
            "responses": {"200": {"description": "verification outcome",
                                  "content": {"application/json": {"schema": VERIFY_RESPONSE}}},
                          "400": _error("the body is not a valid verification request"),
                          "413": _error("the body is too large"),
                          "503": _error("the database or the limiter cannot answer; retry")},
        }}
        app.openapi_schema = document
        return document

    app.openapi = schema  # type: ignore[method-assign]
