"""OpenAPI for the bare Starlette routes, so ``/docs`` documents ``/v1/verify`` too."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from apikm.verify.codes import Code

VERIFY_REQUEST = {
    "type": "object",
    "required": ["key"],
    "properties": {
        "key": {"type": "string", "description": "the API key to check"},
        "required_roles": {"type": "array", "items": {"type": "string"},
                           "description": "all must be effective roles of the key"},
        "client_ip": {"type": "string", "description": "address the key was presented from"},
    },
}
VERIFY_RESPONSE = {
    "type": "object",
    "properties": {
        "valid": {"type": "boolean"},
        "code": {"type": "string", "enum": [code.value for code in Code]},
        "message": {"type": "string"},
        "key_id": {"type": "string"},
        "user": {"type": "object"},
        "roles": {"type": "array", "items": {"type": "string"}},
        "groups": {"type": "array", "items": {"type": "string"}},
        "meta": {"type": "object"},
        "expires_at": {"type": "string", "format": "date-time"},
        "missing_roles": {"type": "array", "items": {"type": "string"}},
    },
}


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
                          "400": {"description": "invalid request body"}},
        }}
        app.openapi_schema = document
        return document

    app.openapi = schema  # type: ignore[method-assign]
