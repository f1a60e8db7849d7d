"""Bad input to the key API: always a 4xx JSON answer that says what is wrong, never a 500,
and nothing stored is changed by it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from apikm.db import create_engine
from apikm.keys.tables import api_keys
from tests.support.apikm_server import ApikmServer
from tests.support.keys import new_key

pytestmark = pytest.mark.integration
Clients = Callable[[str], httpx.Client]


def assert_client_error(response: httpx.Response, status: int | None = None) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] and body["message"]
    assert "Traceback" not in response.text
    return body


@pytest.mark.parametrize("body", [
    {"name": 5},
    {"name": ""},
    {"name": "x" * 101},
    {"name": "bell\x07"},
    {"name": "esc\x1b[2J"},
    {"name": "rtl\u202eexe.txt"},
    {"name": "ok", "description": "nul\x00"},
    {"name": "ok", "description": "\x1b[31mred"},
    {"name": "ok", "roles": "analyst"},
    {"name": "ok", "roles": [1, 2]},
    {"name": "ok", "roles": [":read"]},
    {"name": "ok", "roles": [" analyst"]},
    {"name": "ok", "roles": ["analyst\n"]},
    {"name": "ok", "roles": ["geoserver:read "]},
    {"name": "ok", "allowed_networks": ["10.0.0.0/33"]},
    {"name": "ok", "allowed_networks": ["nonsense"]},
    {"name": "ok", "allowed_networks": "10.0.0.0/8"},
    {"name": "ok", "meta": ["not", "an", "object"]},
    {"name": "ok", "meta": {"blob": "x" * 5000}},
    {"name": "ok", "expires_at": "tomorrow"},
    {"name": "ok", "expires_at": "2030-01-01T00:00:00"},
    {"name": "ok", "expires_at": "1999-01-01T00:00:00Z"},
    {"name": "ok", "rate_limit": "fast"},
    {"name": "ok", "rate_limit": "0/minute"},
    {"name": "ok", "rate_limit": "99999999999999999999/year"},
    {"name": "ok", "rate_limit": "5 per 1000000 years"},
    {"name": "ok", "unknown_field": 1},
    {"name": "ok", "roles": ["analyst"] * 101},
])
def test_invalid_create_bodies(as_user: Clients, body: dict[str, Any]) -> None:
    alice = as_user("alice")
    before = len(alice.get("/v1/keys", params={"limit": 500}).json())
    assert_client_error(alice.post("/v1/keys", json=body))
    assert len(alice.get("/v1/keys", params={"limit": 500}).json()) == before


def test_messages_say_what_is_wrong(as_user: Clients) -> None:
    alice = as_user("alice")
    cidr = assert_client_error(alice.post("/v1/keys", json={
        "name": "n", "allowed_networks": ["10.0.0.0/33"]}), 422)
    assert cidr["field"] == "allowed_networks" and "10.0.0.0/33" in cidr["message"]
    meta = assert_client_error(alice.post("/v1/keys", json={
        "name": "n", "meta": {"blob": "x" * 5000}}), 422)
    assert meta["field"] == "meta" and "4096" in meta["message"]
    typed = assert_client_error(alice.post("/v1/keys", json={"name": 5}), 422)
    assert typed["details"][0]["field"] == "name"


def test_unicode_is_stored_faithfully(as_user: Clients) -> None:
    alice = as_user("alice")
    body = {"name": "clé d'accès 🔑 日本", "description": "Ünïcödé ✓",
            "meta": {"città": "Zürich", "emoji": "🛰️"}}
    created = alice.post("/v1/keys", json=body)
    assert created.status_code == 201, created.text
    read = alice.get(f"/v1/keys/{created.json()['id']}").json()
    assert read["name"] == body["name"] and read["meta"] == body["meta"]


@pytest.mark.parametrize("raw, content_type", [
    (b"{not json", "application/json"),
    (b"\xff\xfe", "application/json"),
    (b"name=x", "application/x-www-form-urlencoded"),
    (b"", "application/json"),
])
def test_unparseable_bodies(as_user: Clients, raw: bytes, content_type: str) -> None:
    assert_client_error(as_user("alice").post("/v1/keys", content=raw,
                                              headers={"content-type": content_type}))


def test_huge_body_is_refused_with_413(as_user: Clients) -> None:
    huge = {"name": "big", "description": "x" * 200_000}
    assert_client_error(as_user("alice").post("/v1/keys", json=huge), 413)


@pytest.mark.parametrize("key_id", ["not-a-uuid", "1", "%00", "' OR 1=1 --", "x" * 300])
def test_bad_ids(as_user: Clients, key_id: str) -> None:
    alice = as_user("alice")
    for response in (alice.get(f"/v1/keys/{key_id}"), alice.delete(f"/v1/keys/{key_id}"),
                     alice.patch(f"/v1/keys/{key_id}", json={"name": "x"})):
        assert_client_error(response)


@pytest.mark.parametrize("params", [{"status": "weird"}, {"limit": 0}, {"limit": 10_000},
                                    {"offset": -1}, {"limit": "many"}])
def test_bad_list_parameters(as_user: Clients, params: dict[str, Any]) -> None:
    assert_client_error(as_user("alice").get("/v1/keys", params=params), 422)


def test_bad_patch_and_rotate_bodies(as_user: Clients) -> None:
    alice = as_user("alice")
    key = alice.post("/v1/keys", json={"name": "p"}).json()
    assert_client_error(alice.patch(f"/v1/keys/{key['id']}", json={"name": None,
                                                                      "bogus": 1}), 422)
    assert_client_error(alice.post(f"/v1/keys/{key['id']}/rotate",
                                   json={"overlap_seconds": -5}), 422)
    assert_client_error(alice.post(f"/v1/keys/{key['id']}/rotate",
                                   json={"overlap_seconds": 10**9}), 422)
    assert alice.get(f"/v1/keys/{key['id']}").json()["name"] == "p"


def test_unknown_routes_and_methods_are_json(as_user: Clients) -> None:
    alice = as_user("alice")
    assert_client_error(alice.get("/v1/nothing-here"), 404)
    assert_client_error(alice.put("/v1/keys"), 405)


@pytest.mark.parametrize("raw", [b'{"name": "n", "meta": {"x": NaN}}',
                                 b'{"name": "n", "meta": {"x": [Infinity]}}'])
def test_nan_in_meta_is_refused(as_user: Clients, raw: bytes) -> None:
    body = assert_client_error(as_user("alice").post(
        "/v1/keys", content=raw, headers={"content-type": "application/json"}), 422)
    assert "NaN" in body["message"]


def test_blank_name_is_refused(as_user: Clients) -> None:
    assert_client_error(as_user("alice").post("/v1/keys", json={"name": "   "}), 422)


def nested(levels: int) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for _ in range(levels - 1):
        meta = {"a": meta}
    return meta


def test_deep_meta_is_refused_before_anything_is_stored(as_user: Clients) -> None:
    alice = as_user("alice")
    before = [k["id"] for k in alice.get("/v1/keys", params={"limit": 500}).json()]
    refused = assert_client_error(alice.post("/v1/keys", json={"name": "deep",
                                                               "meta": nested(300)}), 422)
    assert refused["field"] == "meta" and "8 levels" in refused["message"]
    assert [k["id"] for k in alice.get("/v1/keys", params={"limit": 500}).json()] == before
    created = alice.post("/v1/keys", json={"name": "eight", "meta": nested(8)})
    assert created.status_code == 201, created.text
    key_id = created.json()["id"]
    assert_client_error(alice.patch(f"/v1/keys/{key_id}", json={"meta": nested(9)}), 422)
    assert alice.get(f"/v1/keys/{key_id}").json()["meta"] == nested(8)


def test_listings_survive_deep_meta_stored_by_an_older_version(
        apikm: ApikmServer, as_user: Clients) -> None:
    alice, admin = as_user("alice"), as_user("admin")
    key_id = new_key(alice)["id"]
    asyncio.run(_store_meta(apikm.database_url, key_id, nested(300)))
    listed = alice.get("/v1/keys", params={"limit": 500})
    assert listed.status_code == 200, listed.text
    shown = next(k for k in listed.json() if k["id"] == key_id)["meta"]
    for _ in range(7):
        shown = shown["a"]
    assert shown["a"].startswith('{"a":')  # below the cap: the stored JSON, as text
    assert alice.get(f"/v1/keys/{key_id}").status_code == 200
    assert admin.get("/v1/admin/keys", params={"limit": 500}).status_code == 200
    fixed = alice.patch(f"/v1/keys/{key_id}", json={"meta": {"fixed": True}})
    assert fixed.status_code == 200 and fixed.json()["meta"] == {"fixed": True}


async def _store_meta(database_url: str, key_id: str, meta: dict[str, Any]) -> None:
    """Write meta as an older apikm (without the depth limit) would have."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.update(api_keys).where(api_keys.c.id == key_id)
                               .values(meta=meta))
    finally:
        await engine.dispose()


def test_a_key_pasted_into_the_wrong_place_is_never_echoed(apikm: ApikmServer,
                                                           as_user: Clients) -> None:
    alice = as_user("alice")
    key = new_key(alice)["key"]
    answers = [
        alice.post("/v1/keys", json={"name": "n", "allowed_networks": [key]}),
        alice.post("/v1/keys", json={"name": "n", "allowed_networks": [f"10.0.0.0/8{key}"]}),
        alice.post("/v1/keys", json={"name": "n", "roles": [key]}),
        alice.post("/v1/keys", json={"name": "n", key: "where does this go"}),
        httpx.post(f"{apikm.url}/oauth/token", content=f"{key}=1&{key}=2",
                   headers={"content-type": "application/x-www-form-urlencoded"}),
    ]
    for response in answers:
        assert 400 <= response.status_code < 500, response.text
        assert key not in response.text and "[key]" in response.text, response.text


def test_text_postgresql_cannot_hold_is_answered_not_crashed_on(as_user: Clients) -> None:
    """NUL in a filter or a reason used to reach PostgreSQL and come back as a 500."""
    admin = as_user("admin")
    assert admin.get("/v1/admin/audit", params={"key_id": "\x00"}).json() == []
    assert admin.get("/v1/admin/audit", params={"owner_id": "a\x00b"}).json() == []
    assert admin.get("/v1/admin/keys", params={"owner_id": "\x00"}).json() == []
    key = new_key(as_user("bob"))
    refused = assert_client_error(admin.delete(f"/v1/admin/keys/{key['id']}",
                                               params={"reason": "bad\x00reason"}), 422)
    assert refused["field"] == "reason"
    assert admin.get(f"/v1/admin/keys/{key['id']}").json()["status"] == "active"
    revoked = admin.delete(f"/v1/admin/keys/{key['id']}", params={"reason": " leaked "})
    assert revoked.status_code == 200 and revoked.json()["revoked_reason"] == "leaked"
