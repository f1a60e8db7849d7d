"""The OpenAPI document says what the API answers, errors included."""

from __future__ import annotations

from typing import Any

import pytest

from apikm.config import Settings
from apikm.web.app import create_app


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    gateway = create_app(Settings(_env_file=None))  # type: ignore[call-arg]
    doc: dict[str, Any] = gateway.app.openapi()  # type: ignore[attr-defined]
    return doc


def test_key_api_errors_are_documented_as_they_are_sent(document: dict[str, Any]) -> None:
    error = {"$ref": "#/components/schemas/Error"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/") or path == "/v1/verify":
            continue
        for method, operation in operations.items():
            for status in ("401", "422"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == error, (method, path, status)


def test_verify_is_documented_as_served(document: dict[str, Any]) -> None:
    verify = document["paths"]["/v1/verify"]["post"]
    ok = verify["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["required"] == ["valid", "code"]
    assert {"reason", "retry_after", "key_name", "public_id"} <= set(ok["properties"])
    body = verify["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["required_roles"]["maxItems"] == 100
    assert set(verify["responses"]) == {"200", "400", "413", "503"}
