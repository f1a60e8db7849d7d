"""Fixtures for the browser tests: the real apikm, the real Keycloak, Debian's Chromium.

The demo realm's ``apikm`` client only redirects to port 8000; the server under test runs on
a free port, so its exact URLs are added to the client through Keycloak's admin API for the
duration of the tests (``sign_in_allowed``), and only those URLs are removed afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from apikm.devstack import keycloak as devstack
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.keycloak_tokens import DEMO_PASSWORDS, admin_token
from tests.support.keycloak_users import sign_in_allowed

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEMO_CLIENT_SECRET = "apikm-demo-secret"
# What the snippets show (APIKM_GATEWAY_URLS): a plain base URL and a WMS URL with a query.
GATEWAY_URLS = ("https://data.example.net", "https://maps.example.net/wms?service=WMS")


@pytest.fixture(scope="session")
def keycloak() -> devstack.StackInfo:
    return devstack.up()


@pytest.fixture(scope="session")
def ui_server(keycloak: devstack.StackInfo) -> Iterator[ApikmServer]:
    with apikm_server(None, keycloak.base_url, oidc_client_secret=DEMO_CLIENT_SECRET,
                      session_secret=secrets.token_urlsafe(48), rate_limit="100/minute",
                      gateway_urls=",".join(GATEWAY_URLS)) as server:
        with sign_in_allowed(keycloak.base_url, server.url, realm=keycloak.realm):
            yield server


# Module scope, not session: the sync API keeps an event loop running in the main thread
# while it is open, which would break every later test that calls asyncio.run().
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@dataclass
class UserSession:
    """One person in their own browser profile (cookies are per context)."""

    username: str
    context: BrowserContext
    page: Page
    base_url: str

    def go(self, path: str) -> None:
        self.page.goto(self.base_url + path)

    def shot(self, name: str, docs: bool = False, docs_full_page: bool = True) -> None:
        """Screenshot to test-artifacts/ (always) and docs/screenshots/ (README pictures;
        ``docs_full_page=False``: the visible screen only, to keep the file small)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        if docs:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"),
                                 full_page=docs_full_page)


def sign_in_through_keycloak(page: Page, username: str, password: str) -> None:
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#kc-login")


@pytest.fixture
def new_user_session(browser: Browser, ui_server: ApikmServer) -> Iterator[
        Callable[..., UserSession]]:
    contexts: list[BrowserContext] = []

    def open_as(username: str, password: str | None = None,
                timezone_id: str | None = None) -> UserSession:
        context = browser.new_context(viewport={"width": 1280, "height": 860},
                                      base_url=ui_server.url, timezone_id=timezone_id)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=ui_server.url)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(ui_server.url + "/login")
        sign_in_through_keycloak(page, username, password or DEMO_PASSWORDS[username])
        page.wait_for_url(f"{ui_server.url}/keys")
        return UserSession(username, context, page, ui_server.url)

    yield open_as
    for context in contexts:
        context.close()


@dataclass
class ThrowawayUser:
    """A Keycloak user of this test alone (alice, bob, admin and dana are shared)."""

    username: str
    password: str
    user_id: str
    admin: httpx.Client

    def remove_realm_role(self, role: str) -> None:
        rep = self.admin.get(f"/roles/{role}").raise_for_status().json()
        self.admin.request("DELETE", f"/users/{self.user_id}/role-mappings/realm",
                           json=[rep]).raise_for_status()

    def disable(self) -> None:
        self.admin.put(f"/users/{self.user_id}", json={"enabled": False}).raise_for_status()


@pytest.fixture
def throwaway_user(keycloak: devstack.StackInfo) -> Iterator[ThrowawayUser]:
    username = f"ui-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    with httpx.Client(base_url=f"{keycloak.base_url}/admin/realms/{keycloak.realm}",
                      headers={"Authorization": f"Bearer {admin_token(keycloak.base_url)}"},
                      timeout=30) as admin:
        created = admin.post("/users", json={
            "username": username, "enabled": True, "email": f"{username}@example.org",
            "emailVerified": True, "firstName": "Carol", "lastName": "Throwaway",
            "credentials": [{"type": "password", "value": password, "temporary": False}]})
        created.raise_for_status()
        user_id = created.headers["location"].rsplit("/", 1)[-1]
        try:
            roles = [admin.get(f"/roles/{r}").raise_for_status().json()
                     for r in ("analyst", "editor")]
            admin.post(f"/users/{user_id}/role-mappings/realm", json=roles).raise_for_status()
            yield ThrowawayUser(username, password, user_id, admin)
        finally:
            admin.delete(f"/users/{user_id}")
