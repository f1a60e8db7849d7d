"""Every page at phone width (375 px, issue 14, point 8): nothing scrolls sideways, the
chart's labels stay readable, the audit rows are not cut off, the show-once key is shown
whole, and secrets are set in a font that tells I/l/1 and O/0 apart."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.ui.conftest import ThrowawayUser, UserSession
from tests.e2e.ui.test_ui import OpenAs, create_key, key_id_of, verify
from tests.support.apikm_server import ApikmServer

pytestmark = pytest.mark.integration
PHONE = {"width": 375, "height": 812}
READABLE_PX = 10


def assert_fits(page: Page, what: str) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{what} scrolls sideways on a phone by {overflow}px"


def visit(user: UserSession, path: str, name: str) -> None:
    user.go(path)
    assert_fits(user.page, path)
    user.shot(f"phone-{name}")


def test_every_page_fits_a_phone(new_user_session: OpenAs, throwaway_user: ThrowawayUser,
                                 ui_server: ApikmServer) -> None:
    carol = new_user_session(throwaway_user.username, throwaway_user.password)
    page = carol.page
    page.set_viewport_size(PHONE)
    key = create_key(carol, "a phone-made key with a long name to wrap", ["analyst", "editor"])
    assert_fits(page, "the show-once page")
    page.locator("#new-key").scroll_into_view_if_needed()
    carol.shot("phone-copy-your-key", docs=True, docs_full_page=False)
    field = page.locator("#new-key")
    # The whole key is in view: no part hidden beyond the field's edges.
    sizes = field.evaluate("e => [e.scrollWidth, e.clientWidth, e.scrollHeight, e.clientHeight]")
    assert sizes[0] <= sizes[1] and sizes[2] <= sizes[3], sizes
    assert field.input_value() == key
    style = field.evaluate("e => [getComputedStyle(e).fontFamily, "
                           "getComputedStyle(e).fontVariantNumeric]")
    assert "DejaVu Sans Mono" in style[0] and style[1] == "slashed-zero", style
    page.click("#copy-key")
    expect(page.locator('[data-copy-status="new-key"]')).to_have_text("Copied to the clipboard.")
    key_id = key_id_of(page)
    for _ in range(3):
        verify(ui_server, key)

    visit(carol, f"/keys/{key_id}", "key")
    labels = page.locator(".chart text.axis")
    heights = labels.evaluate_all("all => all.map(e => e.getBoundingClientRect().height)")
    assert heights and min(heights) >= READABLE_PX, heights
    chart = page.locator(".chart-scroll")
    assert chart.evaluate("e => e.scrollWidth > e.clientWidth")  # scrolls inside its card
    for cell in page.locator("table.audit td").all():  # stacked rows, nothing cut off
        box = cell.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    for path, name in ((f"/keys/{key_id}/rotate", "rotate"),
                       (f"/keys/{key_id}/revoke", "revoke"), ("/keys", "keys"),
                       ("/keys/new", "new-key")):
        visit(carol, path, name)

    admin = new_user_session("admin")
    admin.page.set_viewport_size(PHONE)
    for path, name in (("/admin/keys", "admin-keys"), ("/admin/audit", "admin-audit"),
                       (f"/admin/keys/{key_id}/revoke", "admin-revoke")):
        visit(admin, path, name)
