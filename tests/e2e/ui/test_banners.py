"""Errors look like errors (issue 14, point 4): an error page is a red card, never the
green notice that reports a finished action."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.ui.conftest import ThrowawayUser
from tests.e2e.ui.test_ui import OpenAs, create_key, key_id_of

pytestmark = pytest.mark.integration
RED_SOFT = "rgb(253, 236, 234)"  # --bad-soft
GREEN_SOFT = "rgb(227, 245, 236)"  # --ok-soft


def background(page: Page, selector: str) -> str:
    color: str = page.eval_on_selector(selector, "e => getComputedStyle(e).backgroundColor")
    return color


def test_errors_are_red_and_successes_green(new_user_session: OpenAs,
                                           throwaway_user: ThrowawayUser) -> None:
    # A user of its own: alice's keys are counted by other tests.
    alice = new_user_session(throwaway_user.username, throwaway_user.password)
    page = alice.page
    alice.go(f"/keys/{uuid.uuid4()}")
    expect(page.locator("#error")).to_contain_text("There is no such key")
    expect(page.locator(".notice-ok")).to_have_count(0)
    assert page.content().count("There is no such key") == 1
    assert background(page, "#error") == RED_SOFT
    alice.shot("error-not-found")

    create_key(alice, "banner test", ["analyst"])
    key_id = key_id_of(page)
    alice.go(f"/keys/{key_id}/revoke")
    page.get_by_role("button", name="Revoke key").click()
    expect(page.locator("#done-notice")).to_contain_text("The key was revoked.")
    assert background(page, "#done-notice") == GREEN_SOFT
    expect(page.locator("#error")).to_have_count(0)
