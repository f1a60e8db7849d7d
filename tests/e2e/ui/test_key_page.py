"""The key page edits every field a key owner may change and renews the key (issue 14,
point 5); the create form's date, applications and metadata errors (point 9)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from playwright.sync_api import expect

from tests.e2e.ui.conftest import ThrowawayUser
from tests.e2e.ui.test_ui import OpenAs, create_key, key_id_of, verify
from tests.support.apikm_server import ApikmServer

pytestmark = pytest.mark.integration


def test_the_key_page_edits_every_field_with_clear_errors(
        new_user_session: OpenAs, throwaway_user: ThrowawayUser,
        ui_server: ApikmServer) -> None:
    carol = new_user_session(throwaway_user.username, throwaway_user.password)
    page = carol.page
    key = create_key(carol, "cron", ["analyst"])
    key_id = key_id_of(page)
    carol.go(f"/keys/{key_id}")

    # Every problem at once, each next to its field, what was typed kept.
    page.get_by_label("Name").fill("")
    page.get_by_label("Allowed networks").fill("10.0.0.0/8\nnope")
    page.get_by_label("Metadata (JSON)").fill('{"project": ndvi}')
    page.get_by_label("Rate limit").fill("lots")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#name-error")).to_contain_text("Give the key a name")
    expect(page.locator("#networks-error")).to_contain_text("nope")
    expect(page.locator("#meta-error")).to_have_text(
        'Metadata must be a JSON object, e.g. {"project": "ndvi"}; error at line 1, column 13.')
    expect(page.locator("#rate_limit-error")).to_contain_text("not a rate limit such as")
    assert page.input_value("#rate_limit") == "lots"
    carol.shot("key-page-edit-errors")
    assert verify(ui_server, key)["valid"] is True  # nothing was changed

    page.get_by_label("Name").fill("cron on the NAS")
    page.get_by_label("Description").fill("nightly NDVI export")
    page.get_by_label("Allowed networks").fill("10.0.0.0/8")
    page.get_by_label("Metadata (JSON)").fill('{"project": "ndvi"}')
    page.get_by_label("Rate limit").fill("100 per minute")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#done-notice")).to_contain_text("Your changes were saved.")
    expect(page.get_by_role("heading", name="cron on the NAS")).to_be_visible()
    expect(page.locator("main")).to_contain_text("nightly NDVI export")
    assert page.input_value("#rate_limit") == "100/minute"
    # The key answers with the new metadata, and only from its new network.
    assert verify(ui_server, key)["code"] == "IP_NOT_ALLOWED"
    page.get_by_label("Allowed networks").fill("127.0.0.0/8")
    page.get_by_label("Rate limit").fill("")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#done-notice")).to_contain_text("Your changes were saved.")
    answer = verify(ui_server, key)
    assert answer["valid"] is True and answer["meta"] == {"project": "ndvi"}
    expect(page.locator(".facts")).not_to_contain_text("100/minute")  # limit cleared
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#done-notice")).to_have_text("Nothing was changed.")
    # The forms need their CSRF token, and nobody else's token touches this key.
    base = carol.base_url
    for action in ("edit", "renew"):
        refused = carol.context.request.post(f"{base}/keys/{key_id}/{action}",
                                             form={"name": "forged", "expiry": "90"})
        assert refused.status == 403, action
    bob = new_user_session("bob")
    token = bob.page.locator('input[name="csrf_token"]').first.get_attribute("value") or ""
    for action in ("edit", "renew"):
        other = bob.context.request.post(f"{base}/keys/{key_id}/{action}",
                                         form={"csrf_token": token, "name": "bob's now",
                                               "expiry": "90"})
        assert other.status == 404, action
    carol.go(f"/keys/{key_id}")
    expect(page.get_by_role("heading", name="cron on the NAS")).to_be_visible()
    audit = page.locator("table.audit tbody")
    expect(audit.locator(".action-update")).to_have_count(2)  # not the no-op
    expect(audit).to_contain_text("allowed_networks")


def test_renew_gives_a_new_expiry_within_the_policy(
        new_user_session: OpenAs, throwaway_user: ThrowawayUser,
        ui_server: ApikmServer) -> None:
    carol = new_user_session(throwaway_user.username, throwaway_user.password)
    page = carol.page
    key = create_key(carol, "renew me", ["analyst"], expiry="7")
    key_id = key_id_of(page)
    carol.go(f"/keys/{key_id}")
    expect(page.locator(".notice-warn")).to_contain_text("Renew it below")

    # A date past the policy's maximum: refused, naming the last allowed day in words.
    too_late = (datetime.now(UTC) + timedelta(days=400)).date()
    page.fill("#expiry_date", too_late.isoformat())  # what the native date input sends
    assert page.is_checked('input[name="expiry"][value="date"]')
    page.get_by_role("button", name="Renew key").click()
    error = page.locator("#renew-error")
    expect(error).to_contain_text("Keys can live at most 365 days: pick ")
    assert "YYYY" not in error.inner_text()
    last = (datetime.now(UTC) + timedelta(hours=24 * 365)).date()
    expect(error).to_contain_text(f"{last.day} {last:%B %Y}")
    before = verify(ui_server, key)["expires_at"]

    page.check('input[name="expiry"][value="90"]')
    page.get_by_role("button", name="Renew key").click()
    expect(page.locator("#done-notice")).to_contain_text("The key was renewed")
    after = verify(ui_server, key)  # the same secret, a later expiry
    assert after["valid"] is True and after["expires_at"] > before
    assert datetime.fromisoformat(after["expires_at"]) > datetime.now(UTC) + timedelta(days=89)
    expect(page.locator(".notice-warn")).to_have_count(0)  # no longer expiring soon
    expect(page.locator("table.audit tbody tr").first).to_contain_text("renew")
    page.reload()  # POST -> 303 -> GET: a reload renews nothing again
    expect(page.locator("table.audit .action-renew")).to_have_count(1)
    carol.shot("key-page-renewed")


def test_the_create_form_speaks_the_users_language(new_user_session: OpenAs) -> None:
    alice = new_user_session("alice")
    page = alice.page
    alice.go("/keys/new")
    assert page.get_attribute("#expiry_date", "type") == "date"
    # Applications by their Keycloak display name, not the admin's client description.
    expect(page.locator(".role-group-title").filter(has_text="GeoServer")).to_have_count(1)
    expect(page.locator("main")).not_to_contain_text("Resource server")
    help_text = page.inner_text("#expiry-help")
    assert "YYYY" not in help_text
    page.get_by_label("Name").fill("too long")
    page.fill("#expiry_date", (date.today() + timedelta(days=800)).isoformat())
    page.get_by_role("button", name="Create key").click()
    error = page.inner_text("#expiry-error")
    assert error.startswith("Keys can live at most 365 days: pick ")
    last_day = help_text.split("until ", 1)[1].split(")", 1)[0]
    assert last_day in error  # the help and the error name the same day, the same way
