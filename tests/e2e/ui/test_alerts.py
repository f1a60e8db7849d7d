"""A key's alerts on its page, and a badge in the key list (issue 13); the secret generation
on the key page (issue 14, point 5)."""

from __future__ import annotations

import time

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.ui.conftest import ThrowawayUser
from tests.e2e.ui.test_ui import OpenAs, create_key, key_id_of, verify
from tests.support.apikm_server import ApikmServer
from tests.support.keys import age_key

pytestmark = pytest.mark.integration


def test_key_page_lists_alerts_and_the_list_shows_a_badge(
        new_user_session: OpenAs, throwaway_user: ThrowawayUser,
        ui_server: ApikmServer) -> None:
    carol = new_user_session(throwaway_user.username, throwaway_user.password)
    page = carol.page
    old = create_key(carol, "laptop gdal", ["analyst"])
    key_id = key_id_of(page)
    quiet = create_key(carol, "quiet key", ["analyst"])
    quiet_id = key_id_of(page)
    assert verify(ui_server, quiet)["valid"]
    carol.go(f"/keys/{key_id}")
    expect(page.locator("#secret-generation")).to_contain_text(f"generation 1, ends …{old[-4:]}")
    carol.go(f"/keys/{key_id}/rotate")
    page.get_by_label("None: the old key stops at once").check()
    page.get_by_role("button", name="Rotate key").click()
    new = page.input_value("#new-key")

    age_key(ui_server, key_id)  # past its first day: a new network is worth an alert
    gateway = httpx.get(f"{ui_server.url}/v1/auth", headers={
        "X-API-Key": new, "X-Forwarded-For": "198.51.100.23"}, timeout=10)
    assert gateway.status_code == 200
    answer = httpx.post(f"{ui_server.url}/v1/verify", timeout=10,
                        json={"key": old, "client_ip": "203.0.113.9"}).json()
    assert answer["code"] == "REVOKED" and answer["reason"] == "rotated"

    deadline = time.monotonic() + 15  # alerts are written in batches (every 0.5 s here)
    while True:
        carol.go(f"/keys/{key_id}")
        if page.locator("#alerts tbody tr").count() >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    alerts = page.locator("#alerts")
    expect(alerts.locator('tr[data-action="secret_reuse"]')).to_contain_text("203.0.113.9")
    expect(alerts.locator('tr[data-action="secret_reuse"]')).to_contain_text("generation 1")
    expect(alerts.locator('tr[data-action="new_network"]')).to_contain_text("198.51.100.0/24")
    expect(page.locator("#secret-generation")).to_contain_text(f"generation 2, ends …{new[-4:]}")
    expect(page.locator("table.generations")).to_contain_text(old[-4:])
    carol.shot("key-alerts")

    carol.go("/keys")
    expect(page.locator(f'tr[data-key-id="{key_id}"] .alert-badge')).to_have_text("2 alerts")
    expect(page.locator(f'tr[data-key-id="{quiet_id}"] .alert-badge')).to_have_count(0)
    carol.shot("key-list-alerts")
