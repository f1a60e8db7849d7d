"""Error answers never echo an API key, whichever path produced them."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request

from apikm.keys.format import generate_key
from apikm.keys.policy import PolicyError, normalize_networks
from apikm.web.errors import KeyRedactor, install_error_handlers
from apikm.web.ui.render import render

KEY = generate_key("apikm").full
OTHER_PREFIX_KEY = generate_key("corp").full


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


def app_with(prefix: str = "apikm") -> FastAPI:
    app = FastAPI()
    install_error_handlers(app, prefix)

    @app.post("/networks")
    async def networks(body: list[str]) -> list[str]:
        return normalize_networks(body)

    @app.post("/strict")
    async def strict(body: Strict) -> str:
        return body.name

    @app.get("/raise")
    async def raise_(text: str) -> None:
        raise PolicyError(f"bad {text!r}", field="x")

    return app


@pytest.mark.parametrize(("text", "redacted"), [
    (KEY, "[key]"), (f"'{KEY}'", "'[key]'"), (f"1{KEY}", "1[key]"), (f"{KEY}xyz", "[key]"),
    (f"a {KEY} b {KEY}", "a [key] b [key]"), ("apikm_short", "apikm_short"),
    ("nothing here", "nothing here"),
])
def test_redactor_replaces_every_key_shaped_run(text: str, redacted: str) -> None:
    assert KeyRedactor("apikm").text(text) == redacted


def test_redactor_walks_extras() -> None:
    redact = KeyRedactor("apikm")
    assert redact({"details": [{"field": KEY, "message": f"x {KEY}"}], KEY: 1, "n": 2}) == {
        "details": [{"field": "[key]", "message": "x [key]"}], "[key]": 1, "n": 2}


def test_policy_messages_quoting_a_key_do_not_echo_it() -> None:
    with TestClient(app_with()) as client:
        for value in (KEY, f"1{KEY}", f"{KEY}/32"):
            response = client.post("/networks", json=[value])
            assert response.status_code == 422
            assert KEY not in response.text and "[key]" in response.text
        assert KEY not in client.get("/raise", params={"text": KEY}).text


def test_validation_errors_naming_a_key_do_not_echo_it() -> None:
    with TestClient(app_with()) as client:
        response = client.post("/strict", json={"name": "n", KEY: 1})
        assert response.status_code == 422
        assert KEY not in response.text and "[key]" in response.text


def test_the_configured_prefix_is_the_one_redacted() -> None:
    with TestClient(app_with("corp")) as client:
        response = client.post("/networks", json=[OTHER_PREFIX_KEY])
        assert OTHER_PREFIX_KEY not in response.text and "[key]" in response.text


def test_ui_error_pages_do_not_echo_a_key() -> None:
    app = app_with()
    request = Request({"type": "http", "app": app, "method": "POST", "path": "/keys/new",
                       "headers": [], "query_string": b""})
    page = render(request, "error.html", None, 422, title="Refused", code=422, action=None,
                  message=f"{KEY!r} is not an IP network", values={"networks": KEY})
    assert KEY not in page.body.decode() and "[key]" in page.body.decode()
