"""Revoke straight from the list (issue 14, point 5), after a confirmation, and back to the
list; a rotated key's overlap secret then answers REVOKED too."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.ui.conftest import ThrowawayUser
from tests.e2e.ui.test_ui import OpenAs, create_key, key_id_of, verify
from tests.support.apikm_server import ApikmServer

pytestmark = pytest.mark.integration


def test_revoke_from_the_list_stops_both_secrets(new_user_session: OpenAs,
                                                 throwaway_user: ThrowawayUser,
                                                 ui_server: ApikmServer) -> None:
    carol = new_user_session(throwaway_user.username, throwaway_user.password)
    page = carol.page
    old = create_key(carol, "cron on the NAS", ["analyst"])
    key_id = key_id_of(page)
    carol.go(f"/keys/{key_id}/rotate")
    page.get_by_label("1 hour").check()
    page.get_by_role("button", name="Rotate key").click()
    new = page.input_value("#new-key")
    assert verify(ui_server, old)["valid"] and verify(ui_server, new)["valid"]

    carol.go("/keys")
    page.get_by_role("link", name="Revoke cron on the NAS").click()
    expect(page.get_by_role("heading", name="Revoke “cron on the NAS”?")).to_be_visible()
    page.get_by_role("button", name="Revoke key").click()
    page.wait_for_url(f"{ui_server.url}/keys?done=revoked")
    expect(page.locator("#done-notice")).to_contain_text("The key was revoked.")
    row = page.locator(f'tr[data-key-id="{key_id}"]')
    expect(row).to_contain_text("Revoked")
    expect(row.get_by_role("link", name="Revoke cron on the NAS")).to_have_count(0)
    for secret in (old, new):  # the overlap secret too: REVOKED, not NOT_FOUND
        assert verify(ui_server, secret)["code"] == "REVOKED"
