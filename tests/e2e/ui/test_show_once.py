"""Show once, reload safely (issue 14, point 3): create and rotate answer their POST with a
redirect; the page it leads to shows the secret once, and a reload neither shows it again
nor makes another key."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.ui.conftest import ThrowawayUser
from tests.e2e.ui.test_ui import KEY_PATTERN, OpenAs, verify
from tests.support.apikm_server import ApikmServer

pytestmark = pytest.mark.integration
CREATED_URL = re.compile(r"/keys/([0-9a-f-]{36})/created\?h=[\w-]+$")


def test_reloading_after_create_or_rotate_makes_and_shows_nothing(
        new_user_session: OpenAs, throwaway_user: ThrowawayUser,
        ui_server: ApikmServer) -> None:
    carol = new_user_session(throwaway_user.username, throwaway_user.password)
    page = carol.page
    carol.go("/keys/new")
    page.get_by_label("Name").fill("reload me")
    page.check('input[name="roles"][value="analyst"]')
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name="Your new key is ready")).to_be_visible()
    found = CREATED_URL.search(page.url)
    assert found, page.url  # the form's POST answered with a redirect
    key_id, shown_at = found.group(1), page.url
    key = page.input_value("#new-key")
    assert KEY_PATTERN.match(key)

    # Another user holding the URL gets "not found", and does not use up the hand-off.
    bob = new_user_session("bob")
    bob.page.goto(shown_at)
    expect(bob.page.get_by_role("heading", name="Not found")).to_be_visible()
    assert key not in bob.page.content()

    page.reload()
    expect(page.get_by_role("heading", name="This key was already shown")).to_be_visible()
    assert key not in page.content()
    carol.shot("key-already-shown")
    carol.go("/keys")
    expect(page.locator("tbody tr")).to_have_count(1)  # the reload made no second key
    assert verify(ui_server, key)["valid"] is True

    carol.go(f"/keys/{key_id}/rotate")
    page.get_by_role("button", name="Rotate key").click()
    expect(page.get_by_role("heading", name="Your key was rotated")).to_be_visible()
    assert CREATED_URL.search(page.url)
    rotated = page.input_value("#new-key")
    assert rotated != key and verify(ui_server, rotated)["valid"] is True
    page.reload()
    expect(page.get_by_role("heading", name="This key was already shown")).to_be_visible()
    assert rotated not in page.content()
    page.go_back()  # the rotate form, not a re-post
    assert verify(ui_server, rotated)["valid"] is True  # not rotated a second time
    carol.go("/keys")
    expect(page.locator("tbody tr")).to_have_count(1)


def test_the_hand_off_url_shows_nothing_without_its_token(ui_server: ApikmServer) -> None:
    # Without a session: sign-in first, the secret never.
    response = httpx.get(f"{ui_server.url}/keys/00000000-0000-0000-0000-000000000000/created"
                         "?h=x", follow_redirects=False, timeout=10)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
