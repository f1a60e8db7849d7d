"""Notification pages in a real browser: a user chooses which mails they get; an admin adds
a webhook endpoint (secret shown once), sends a test delivery that a receiver verifies with
the Standard Webhooks library, sees it in the delivery log, and deletes the endpoint."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from playwright.sync_api import expect
from standardwebhooks import Webhook

from tests.e2e.ui.conftest import ThrowawayUser
from tests.e2e.ui.test_ui import OpenAs
from tests.support.http_server import serve_in_thread

pytestmark = pytest.mark.integration


def test_a_user_chooses_which_mails_they_get(new_user_session: OpenAs,
                                             throwaway_user: ThrowawayUser) -> None:
    carol = new_user_session(throwaway_user.username, throwaway_user.password)
    page = carol.page
    page.get_by_role("link", name="Notifications").click()
    expect(page.get_by_role("heading", name="Notifications")).to_be_visible()
    expect(page.locator("#my-email")).to_have_text(f"{throwaway_user.username}@example.org")
    created = page.get_by_label("A key of mine was created")
    expired = page.get_by_label("A key of mine expired")
    leaked = page.get_by_label("A key of mine was reported leaked (and revoked)")
    expect(created).to_be_checked()
    expect(leaked).to_be_checked()
    expect(leaked).to_be_disabled()  # possible misuse is always mailed
    created.uncheck()
    expired.uncheck()
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#done-notice")).to_have_text("Your choices were saved.")
    page.reload()
    expect(page.get_by_label("A key of mine was created")).not_to_be_checked()
    expect(page.get_by_label("A key of mine expired")).not_to_be_checked()
    expect(page.get_by_label("A key of mine expires soon")).to_be_checked()
    carol.shot("notifications-settings")


@pytest.fixture
def receiver() -> Iterator[tuple[dict[str, Any], str]]:
    state: dict[str, Any] = {"secret": "", "got": []}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with lock:
                state["got"].append(Webhook(state["secret"]).verify(
                    body, dict(self.headers.items())))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    with serve_in_thread(Handler) as url:
        yield state, url + "/hooks/apikm"


def test_an_admin_adds_a_webhook_and_sends_a_test(new_user_session: OpenAs,
                                                  receiver: tuple[dict[str, Any], str]) -> None:
    state, url = receiver
    admin = new_user_session("admin")
    page = admin.page
    page.get_by_role("link", name="Webhooks & mail").click()
    expect(page.get_by_role("heading", name="Notifications", exact=True)).to_be_visible()
    form = page.locator("#add-webhook")
    form.get_by_label("URL").fill(url)
    form.get_by_label("Description").fill("e2e receiver")
    form.get_by_label("key.expiring").check()
    form.get_by_role("button", name="Add endpoint").click()
    expect(page.get_by_role("heading", name="Webhook endpoint added")).to_be_visible()
    secret = page.input_value("#webhook-secret")
    assert secret.startswith("whsec_")
    state["secret"] = secret
    admin.shot("notifications-webhook-created")
    page.get_by_role("link", name="Done").click()

    row = page.locator("#webhooks tr", has_text=url)
    expect(row).to_contain_text("key.expiring")
    expect(row).not_to_contain_text(secret)  # never shown again
    row.get_by_role("button", name=f"Send test: {url}").click()
    expect(page.locator("#done-notice")).to_have_text("Test webhook delivered (HTTP 204).")
    assert state["got"][-1]["type"] == "test"
    assert state["got"][-1]["data"]["actor"]["name"] == "admin"
    admin.shot("notifications-admin", docs=True)

    page.get_by_role("link", name="Delivery log").click()
    logged = page.locator("#deliveries tr", has_text=url).first
    expect(logged).to_contain_text("Sent")
    expect(logged).to_contain_text("ok 204")

    page.get_by_role("link", name="Webhooks & mail").click()
    page.locator("#webhooks tr", has_text=url).get_by_role("button",
                                                           name=f"Delete: {url}").click()
    expect(page.locator("#done-notice")).to_have_text("The endpoint was deleted.")
    expect(page.locator("#webhooks tr", has_text=url)).to_have_count(0)
