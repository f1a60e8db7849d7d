"""Admin pages (issue 14, point 10): find a key by what a leak gives you (its hint, its public
id, the whole key), keep the filters across a revoke, filter and page the audit log, link
its events to the keys, show times in the viewer's time zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from apikm.keys.tables import audit_events
from tests.e2e.ui.conftest import ThrowawayUser
from tests.e2e.ui.test_ui import OpenAs
from tests.support.apikm_server import ApikmServer
from tests.support.keycloak_tokens import password_grant
from tests.support.keys import new_key, user_client

pytestmark = pytest.mark.integration


def api_as(user: ThrowawayUser, server: ApikmServer) -> httpx.Client:
    issuer = f"{server.env['APIKM_KEYCLOAK_URL']}/realms/{server.env['APIKM_KEYCLOAK_REALM']}"
    token = password_grant(issuer, user.username, user.password)["access_token"]
    return user_client(server.url, str(token))


def test_admin_finds_a_leaked_key_and_keeps_the_filters(
        new_user_session: OpenAs, throwaway_user: ThrowawayUser,
        ui_server: ApikmServer) -> None:
    with api_as(throwaway_user, ui_server) as carol:
        leaked = new_key(carol, name="leaked in a notebook")
        other = new_key(carol, name="still fine")
        new_key(carol, name="also fine")
    admin = new_user_session("admin")
    page = admin.page
    admin.go("/admin/keys")
    rows = page.locator("table.keys tbody tr")
    for text in (leaked["key"], leaked["hint"], leaked["hint"].removesuffix("..."),
                 leaked["public_id"]):
        page.get_by_label("Key", exact=True).fill(text)
        page.get_by_role("button", name="Search").click()
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("leaked in a notebook")
        assert leaked["key"] not in unquote(page.url)  # a whole key never enters a URL
        assert f"key={leaked['public_id']}" in page.url
    assert leaked["key"] not in ui_server.log_text()
    admin.shot("admin-search-by-key")
    page.get_by_label("Key", exact=True).fill("not a key at all")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#search-error")).to_contain_text("not a key")

    # Filter by user and status, revoke one: back on the same filtered list.
    page.get_by_label("Key", exact=True).fill("")
    page.get_by_label("User").fill(throwaway_user.username)
    page.select_option("#status", "active")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(3)
    filtered = page.url
    page.locator(f'tr[data-key-id="{other["id"]}"]').get_by_role("link",
                                                                 name=re.compile("Revoke")).click()
    page.get_by_label("Reason").fill("Rotated out after the notebook leak")
    page.get_by_role("button", name="Revoke key").click()
    expect(page.locator("#done-notice")).to_contain_text("The key was revoked.")
    assert page.url.startswith(filtered + "&done=revoked"), page.url
    assert page.input_value("#user") == throwaway_user.username
    assert page.input_value("#status") == "active"
    expect(rows).to_have_count(2)  # still the active keys of this user: the revoked one left
    expect(page.locator("table.keys")).to_contain_text("also fine")


def test_the_audit_log_filters_pages_and_links_in_local_time(
        new_user_session: OpenAs, throwaway_user: ThrowawayUser,
        ui_server: ApikmServer) -> None:
    with api_as(throwaway_user, ui_server) as carol:
        busy = new_key(carol, name="busy key")
        for i in range(51):  # 52 events of one key: more than a page (50)
            carol.patch(f"/v1/keys/{busy['id']}",
                        json={"description": f"change {i}"}).raise_for_status()
        carol.delete(f"/v1/keys/{busy['id']}").raise_for_status()
    # An action apikm has no word for yet (a colleague's new event): offered all the same.
    database = sa.create_engine(ui_server.database_url.replace("+aiosqlite", ""))
    with database.begin() as db:
        actions = set(db.scalars(sa.select(audit_events.c.action).distinct()))
        assert "leak_reported" not in actions
        db.execute(sa.insert(audit_events).values(
            at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), action="leak_reported",
            actor_id="scanner", actor_name="scanner", key_id=busy["id"], details={}))
    database.dispose()

    admin = new_user_session("admin", timezone_id="Asia/Tokyo")
    page = admin.page
    admin.go("/admin/audit")
    options = page.locator("#action option").all_inner_texts()
    assert set(options) == {"All actions"} | actions | {"leak_reported"}

    page.get_by_label("Key").fill(busy["key"])  # the whole key: its public id is looked up
    page.get_by_role("button", name="Filter").click()
    assert busy["key"] not in unquote(page.url) and f"key={busy['public_id']}" in page.url
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(50)
    expect(rows.first).to_contain_text("leak_reported")  # newest first
    expect(rows.nth(1)).to_contain_text("revoke")
    page.get_by_role("link", name="Older →").click()
    expect(rows).to_have_count(4)  # 51 updates + create + revoke + leak_reported = 54
    assert f"key={busy['public_id']}" in page.url and "page=2" in page.url
    expect(page.locator("table.audit .action-create")).to_have_count(1)

    page.select_option("#action", "revoke")
    page.get_by_label("User").fill(throwaway_user.username)
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    admin.shot("admin-audit-filtered")
    # Times: UTC in the markup, the viewer's zone (here Tokyo) on the page.
    moment = rows.first.locator("time")
    stamp = moment.get_attribute("datetime") or ""
    assert stamp.endswith("Z")
    tokyo = datetime.fromisoformat(stamp).astimezone(ZoneInfo("Asia/Tokyo"))
    expect(moment).to_contain_text(tokyo.strftime("%H:%M"))
    expect(moment).to_contain_text("GMT+9")
    # The event links to its key.
    rows.first.get_by_role("link", name="busy key").click()
    expect(page.locator("table.keys tbody tr")).to_have_count(1)
    expect(page.locator("table.keys")).to_contain_text(busy["hint"])


def test_a_whole_key_in_the_audit_url_is_shown_as_its_public_id(
        new_user_session: OpenAs, throwaway_user: ThrowawayUser,
        ui_server: ApikmServer) -> None:
    """A link someone built by hand (or an old bookmark): the page and its paging links
    carry the public id, never the key."""
    with api_as(throwaway_user, ui_server) as carol:
        leaked = new_key(carol, name="pasted into a URL")
    admin = new_user_session("admin")
    admin.go(f"/admin/audit?key={leaked['key']}")
    page = admin.page
    expect(page.locator("table.audit tbody tr")).to_have_count(1)  # its create event
    assert page.input_value("#key") == leaked["public_id"]
    assert leaked["key"] not in page.content()
