"""``/v1/admin/webhooks`` and ``/v1/admin/notifications``: admins only, clear 4xx answers
for bad input, and the signing secret answered once, never listed."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_webhook_endpoints_through_the_api(as_user: Callable[[str], httpx.Client]) -> None:
    admin, alice = as_user("admin"), as_user("alice")
    assert alice.get("/v1/admin/webhooks").status_code == 403
    assert alice.post("/v1/admin/webhooks", json={"url": "https://x.example"}).status_code == 403
    for body in ({"url": "ftp://x"}, {"url": "http://["}, {"url": "https://x", "secret": "nope"},
                 {"url": "https://x", "events": ["key.bogus"]}, {"url": "https://x\u0000"},
                 {"events": []}):
        answer = admin.post("/v1/admin/webhooks", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.headers["content-type"].startswith("application/json")
    made = admin.post("/v1/admin/webhooks", json={
        "url": "http://127.0.0.1:9/never", "description": "api test", "events": ["key.leaked"]})
    assert made.status_code == 201, made.text
    created = made.json()
    assert created["secret"].startswith("whsec_")
    listed = admin.get("/v1/admin/webhooks")
    assert listed.status_code == 200
    mine = [e for e in listed.json() if e["id"] == created["id"]]
    assert mine == [{k: v for k, v in created.items() if k != "secret"}]
    assert created["secret"] not in listed.text
    tested = admin.post(f"/v1/admin/webhooks/{created['id']}/test")
    assert tested.status_code == 200
    assert tested.json()["ok"] is False and tested.json()["error"]  # nobody listens on :9
    log = admin.get("/v1/admin/notifications", params={"status": "failed"}).json()
    assert any(n["id"] == tested.json()["notification_id"] for n in log)
    assert admin.get("/v1/admin/notifications", params={"status": "nope"}).status_code == 422
    patched = admin.patch(f"/v1/admin/webhooks/{created['id']}", json={"enabled": False})
    assert patched.status_code == 200 and patched.json()["enabled"] is False
    assert admin.delete(f"/v1/admin/webhooks/{created['id']}").status_code == 204
    assert admin.delete(f"/v1/admin/webhooks/{created['id']}").status_code == 404
    assert admin.post(f"/v1/admin/webhooks/{created['id']}/test").status_code == 404
