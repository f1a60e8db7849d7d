"""The web UI in a real browser (Debian's Chromium), against the real Keycloak and apikm.

Each person signs in through Keycloak's own login page in a browser profile of their own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.ui.conftest import ThrowawayUser, UserSession, sign_in_through_keycloak
from tests.support.apikm_server import ApikmServer

pytestmark = pytest.mark.integration

KEY_PATTERN = re.compile(r"^apikm_[0-9A-Za-z]{42}$")
OpenAs = Callable[..., UserSession]


def verify(server: ApikmServer, key: str) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/v1/verify", json={"key": key}, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def create_key(user: UserSession, name: str, roles: list[str], expiry: str = "default") -> str:
    """Fill the create form like a person would; returns the key shown once."""
    page = user.page
    user.go("/keys/new")
    page.get_by_label("Name").fill(name)
    page.check(f'input[name="expiry"][value="{expiry}"]')
    for role in roles:
        page.check(f'input[name="roles"][value="{role}"]')
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name="Your new key is ready")).to_be_visible()
    return page.input_value("#new-key")


def key_id_of(page: Page) -> str:
    href = page.get_attribute("#done", "href") or ""
    assert href.startswith("/keys/")
    return href.removeprefix("/keys/")


def use_count_on_page(user: UserSession, key_id: str) -> int:
    user.go(f"/keys/{key_id}")
    return int(user.page.inner_text("#use-count"))


def wait_for_use_count(user: UserSession, key_id: str, expected: int) -> int:
    # Usage is written in batches (every 0.5 s in these tests), never per request.
    deadline = time.monotonic() + 15
    count = use_count_on_page(user, key_id)
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        count = use_count_on_page(user, key_id)
    return count


def test_alice_creates_copies_uses_rotates_and_revokes_a_key(
        new_user_session: OpenAs, ui_server: ApikmServer) -> None:
    alice = new_user_session("alice")
    page = alice.page
    alice.go("/keys/new")
    expect(page.locator('input[name="roles"][value="geoserver:read"]')).to_be_visible()
    alice.shot("create-form", docs=True)

    page.get_by_label("Name").fill("QGIS on my laptop")
    page.get_by_label("Description").fill("Flood maps from GeoServer and the STAC catalogue")
    page.check('input[name="roles"][value="geoserver:read"]')
    page.check('input[name="roles"][value="stac:read"]')
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name="Your new key is ready")).to_be_visible()

    # Copy it with the page's button, as a person would, and read the clipboard back.
    page.click("#copy-key")
    expect(page.locator('[data-copy-status="new-key"]')).to_have_text("Copied to the clipboard.")
    key = page.evaluate("navigator.clipboard.readText()")
    assert KEY_PATTERN.match(key)
    assert key == page.input_value("#new-key")
    for snippet in ("snippet-curl", "snippet-url", "snippet-python", "snippet-env"):
        assert key in page.inner_text(f"#{snippet}")
    assert f"APIKM_API_KEY={key}" in page.inner_text("#snippet-env")
    url_snippet = page.inner_text("#snippet-url")
    # The configured gateways (APIKM_GATEWAY_URLS), the key joined to each URL's own query.
    assert f"https://data.example.net/path/to/raster.tif?apikey={key}" in url_snippet
    assert f"https://maps.example.net/wms?service=WMS&apikey={key}" in url_snippet
    assert "data.example.org" not in page.inner_text("main")
    assert page.inner_text("#snippet-python").startswith("# pip install ")
    alice.shot("copy-your-key", docs=True)
    key_id = key_id_of(page)

    result = verify(ui_server, key)
    assert result["valid"] is True
    assert result["user"]["username"] == "alice"
    assert result["roles"] == ["geoserver:read", "stac:read"]

    # The key page shows the use count rising after use (the one verification above first).
    before = wait_for_use_count(alice, key_id, 1)
    assert before == 1
    for _ in range(3):
        assert verify(ui_server, key)["valid"] is True
    assert wait_for_use_count(alice, key_id, before + 3) == before + 3
    expect(page.locator("#last-used")).to_contain_text("127.0.0.1")
    alice.shot("key-page")

    # Rotate with an overlap: the new key works and so does the old one, for now.
    page.get_by_role("link", name="Rotate").click()
    page.get_by_label("1 hour").check()
    alice.shot("rotate-form")
    page.get_by_role("button", name="Rotate key").click()
    expect(page.get_by_role("heading", name="Your key was rotated")).to_be_visible()
    rotated = page.input_value("#new-key")
    assert KEY_PATTERN.match(rotated) and rotated != key
    assert rotated[:14] == key[:14]  # same public id: the key keeps its identity
    assert verify(ui_server, rotated)["valid"] is True
    assert verify(ui_server, key)["valid"] is True

    # Revoke, with a confirmation step; both secrets stop working and the page says why.
    alice.go(f"/keys/{key_id}")
    page.get_by_role("link", name="Revoke").click()
    expect(page.get_by_role("heading", name=re.compile("Revoke"))).to_be_visible()
    alice.shot("revoke-confirm")
    page.get_by_role("button", name="Revoke key").click()
    expect(page.locator("#why-stopped")).to_contain_text("Revoked")
    expect(page.locator("#why-stopped")).to_contain_text("by alice")
    alice.shot("key-revoked")
    assert verify(ui_server, rotated)["code"] == "REVOKED"
    assert verify(ui_server, key)["valid"] is False

    # The list: filters, expiring keys highlighted, the revoked key with its reason.
    create_key(alice, "Nightly cron job", ["analyst"], expiry="7")
    create_key(alice, "Jupyter notebooks", ["stac:read", "analyst"], expiry="90")
    alice.go("/keys")
    expect(page.locator("tr.row-warn")).to_contain_text("Nightly cron job")
    expect(page.locator("tr.row-warn")).to_contain_text("Expires soon")
    alice.shot("key-list", docs=True)
    alice.go("/keys?status=revoked")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody")).to_contain_text("QGIS on my laptop")
    alice.go("/keys?status=active")
    expect(page.locator("tbody tr")).to_have_count(2)
    expect(page.locator("tbody")).not_to_contain_text("QGIS on my laptop")


def test_create_form_explains_errors(new_user_session: OpenAs) -> None:
    alice = new_user_session("alice")
    page = alice.page
    alice.go("/keys/new")
    page.get_by_text("Restrictions and metadata").click()
    page.get_by_label("Allowed networks").fill("10.0.0.0/8\nnot-a-network")
    page.get_by_label("Metadata (JSON)").fill("{not json")
    page.check('input[name="roles"][value="editor"]')
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#form-errors")).to_be_visible()
    expect(page.locator("#name-error")).to_contain_text("Give the key a name")
    expect(page.locator("#meta-error")).to_have_text(
        'Metadata must be a JSON object, e.g. {"project": "ndvi"}; error at line 1, column 2.')
    expect(page.locator("#networks-error")).to_contain_text("CIDR")
    # What was typed and ticked survives the round trip.
    assert page.is_checked('input[name="roles"][value="editor"]')
    assert "not-a-network" in page.input_value("#networks")
    alice.shot("create-form-errors")

    page.get_by_label("Name").fill("Office only")
    page.get_by_label("Allowed networks").fill("10.0.0.0/8\n2001:db8::/32")
    page.get_by_label("Metadata (JSON)").fill('{"project": "flood-maps"}')
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name="Your new key is ready")).to_be_visible()
    expect(page.locator(".secret-card")).to_contain_text("10.0.0.0/8, 2001:db8::/32")


def test_keys_carry_only_the_roles_the_user_holds_now(
        new_user_session: OpenAs, throwaway_user: ThrowawayUser) -> None:
    carol = new_user_session(throwaway_user.username, throwaway_user.password)
    carol.go("/keys/new")
    expect(carol.page.locator('input[name="roles"][value="editor"]')).to_have_count(1)
    token = carol.page.locator('input[name="csrf_token"]').first.get_attribute("value") or ""

    # Keycloak takes "editor" away; the form stops offering it at once ...
    throwaway_user.remove_realm_role("editor")
    carol.go("/keys/new")
    expect(carol.page.locator('input[name="roles"][value="analyst"]')).to_have_count(1)
    expect(carol.page.locator('input[name="roles"][value="editor"]')).to_have_count(0)
    # ... and a hand-made request for it is refused, though the token is right.
    refused = carol.context.request.post(
        f"{carol.base_url}/keys/new",
        form={"csrf_token": token, "name": "sneaky", "expiry": "default", "roles": "editor"})
    assert refused.status == 422
    assert "only grant roles you hold" in refused.text()

    # Keycloak disables the user: the apikm session ends with the Keycloak one.
    throwaway_user.disable()
    carol.go("/keys/new")
    expect(carol.page.locator("#username")).to_be_visible()  # Keycloak's login form again


def test_bob_cannot_see_alices_keys(new_user_session: OpenAs, ui_server: ApikmServer) -> None:
    alice = new_user_session("alice")
    alice_key = create_key(alice, "Alice's private key", ["geoserver:write"])
    alice_key_id = key_id_of(alice.page)

    bob = new_user_session("bob")
    expect(bob.page.locator("main")).not_to_contain_text("Alice's private key")
    # Alice's roles are not offered to bob: his form lists only his own.
    bob.go("/keys/new")
    expect(bob.page.locator('input[name="roles"][value="stac:read"]')).to_have_count(1)
    expect(bob.page.locator('input[name="roles"][value="geoserver:write"]')).to_have_count(0)
    for path in (f"/keys/{alice_key_id}", f"/keys/{alice_key_id}/rotate",
                 f"/keys/{alice_key_id}/revoke"):
        response = bob.page.goto(ui_server.url + path)
        assert response is not None and response.status == 404, path
    bob.shot("not-found")
    # Not even a correctly formed POST with bob's own CSRF token touches alice's key.
    token = bob.page.locator('input[name="csrf_token"]').first.get_attribute("value")
    refused = bob.context.request.post(f"{ui_server.url}/keys/{alice_key_id}/revoke",
                                       form={"csrf_token": token or ""})
    assert refused.status == 404
    assert verify(ui_server, alice_key)["valid"] is True
    # And bob is no administrator.
    response = bob.page.goto(ui_server.url + "/admin/keys")
    assert response is not None and response.status == 403


def test_admin_sees_and_revokes_bobs_key(new_user_session: OpenAs,
                                         ui_server: ApikmServer) -> None:
    bob = new_user_session("bob")
    bob_key = create_key(bob, "Bob's STAC script", ["stac:read"])
    bob_key_id = key_id_of(bob.page)

    admin = new_user_session("admin")
    page = admin.page
    admin.go("/admin/keys?user=bob")
    row = page.locator(f'tr[data-key-id="{bob_key_id}"]')
    expect(row).to_contain_text("bob")
    expect(row).to_contain_text("Bob's STAC script")
    admin.shot("admin-keys")
    row.get_by_role("link", name=re.compile("Revoke")).click()
    page.get_by_role("button", name="Revoke key").click()  # no reason yet
    expect(page.get_by_role("alert").filter(has_text="Give a reason")).to_be_visible()
    page.get_by_label("Reason").fill("Leaked in a public notebook")
    admin.shot("admin-revoke")
    page.get_by_role("button", name="Revoke key").click()
    expect(page.get_by_role("status")).to_contain_text("The key was revoked.")
    assert verify(ui_server, bob_key)["code"] == "REVOKED"

    # Bob learns who revoked his key and why.
    bob.go(f"/keys/{bob_key_id}")
    expect(bob.page.locator("#why-stopped")).to_contain_text("by admin")
    expect(bob.page.locator("#why-stopped")).to_contain_text("Leaked in a public notebook")

    admin.go("/admin/audit")
    first = page.locator("tbody tr").first
    expect(first).to_contain_text("revoke")
    expect(first).to_contain_text("Leaked in a public notebook")
    expect(first).to_contain_text("Bob's STAC script")
    admin.shot("admin-audit")


def test_a_post_without_the_csrf_token_is_refused(new_user_session: OpenAs,
                                                  ui_server: ApikmServer) -> None:
    alice = new_user_session("alice")
    form = {"name": "Forged", "expiry": "default", "roles": "analyst"}
    missing = alice.context.request.post(f"{ui_server.url}/keys/new", form=form)
    assert missing.status == 403
    assert "security token" in missing.text()
    wrong = alice.context.request.post(f"{ui_server.url}/keys/new",
                                       form={**form, "csrf_token": "x" * 43})
    assert wrong.status == 403
    logout = alice.context.request.post(f"{ui_server.url}/logout", form={})
    assert logout.status == 403
    alice.go("/keys")
    expect(alice.page.locator("main")).not_to_contain_text("Forged")
    expect(alice.page.get_by_role("button", name="Sign out")).to_be_visible()
    # The same request with the page's token goes through, so the 403 was the token's doing.
    token = alice.page.locator('input[name="csrf_token"]').first.get_attribute("value")
    accepted = alice.context.request.post(f"{ui_server.url}/keys/new",
                                          form={**form, "csrf_token": token or ""})
    assert accepted.status == 200
    assert "Your new key is ready" in accepted.text()


def test_session_cookie_is_protected_and_logout_ends_the_session(
        new_user_session: OpenAs, ui_server: ApikmServer) -> None:
    alice = new_user_session("alice")
    cookie = next(c for c in alice.context.cookies() if c["name"] == "apikm_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["secure"] is False  # plain http here; https public URLs get Secure
    assert "alice" not in cookie["value"]  # encrypted, not just signed

    alice.page.get_by_role("button", name="Sign out").click()
    alice.page.wait_for_url(f"{ui_server.url}/signed-out")
    expect(alice.page.get_by_role("heading", name="You are signed out")).to_be_visible()
    alice.shot("signed-out")
    assert not [c for c in alice.context.cookies() if c["name"] == "apikm_session"]
    # Keycloak's session ended too: the next visit asks for the password again.
    alice.go("/keys")
    expect(alice.page.locator("#username")).to_be_visible()
    assert alice.page.url.startswith(ui_server.env["APIKM_KEYCLOAK_URL"])

    # A copy of the old cookie is worth nothing after logout.
    replay = httpx.get(f"{ui_server.url}/keys", cookies={"apikm_session": cookie["value"]},
                       follow_redirects=False, timeout=10)
    assert replay.status_code == 303
    assert replay.headers["location"].startswith("/login")


def test_sign_in_refuses_a_forged_callback(browser: Browser, ui_server: ApikmServer) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        # No sign-in was started in this browser: a callback is refused.
        response = page.goto(f"{ui_server.url}/auth/callback?code=abc&state=xyz")
        assert response is not None and response.status == 400
        # A sign-in was started, but the state does not match it.
        page.goto(f"{ui_server.url}/login?next=/keys")
        expect(page.locator("#username")).to_be_visible()
        response = page.goto(f"{ui_server.url}/auth/callback?code=abc&state=forged")
        assert response is not None and response.status == 400
        expect(page.locator("main")).to_contain_text("does not match this sign-in")
        # A real sign-in still works afterwards, and lands where it was asked to.
        page.goto(f"{ui_server.url}/login?next=/keys/new")
        sign_in_through_keycloak(page, "bob", "bob")
        page.wait_for_url(f"{ui_server.url}/keys/new")
    finally:
        context.close()


def test_pages_need_a_session(ui_server: ApikmServer) -> None:
    with httpx.Client(base_url=ui_server.url, follow_redirects=False, timeout=10) as client:
        home = client.get("/")
        assert home.status_code == 200 and "Sign in with Keycloak" in home.text
        assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
        for path in ("/keys", "/keys/new", "/admin/keys", "/admin/audit"):
            response = client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] == f"/login?next={path}"
        login = client.get("/login")
        assert login.status_code == 303
        target = httpx.URL(login.headers["location"])
        assert target.params["code_challenge_method"] == "S256"
        assert target.params["state"] and target.params["nonce"]
        assert target.params["redirect_uri"] == f"{ui_server.url}/auth/callback"
        assert client.post("/keys/new", data={"name": "x"}).status_code == 401


def test_a_key_can_be_made_with_the_keyboard_alone_and_pages_fit_a_phone(
        new_user_session: OpenAs, ui_server: ApikmServer) -> None:
    dana = new_user_session("dana")
    page = dana.page
    dana.go("/keys/new")
    page.focus("#name")
    page.keyboard.type("Keyboard only")
    page.keyboard.press("Tab")  # description
    page.keyboard.press("Tab")  # the expiry choices: arrows move between them
    page.keyboard.press("ArrowRight")  # 7 days
    # Tab on through the date field (Chromium stops at its day, month and year parts).
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.name") == "roles":
            break
    focused = page.evaluate("document.activeElement.value")
    page.keyboard.press("Space")
    page.focus("#name")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Your new key is ready")).to_be_visible()
    result = verify(ui_server, page.input_value("#new-key"))
    assert result["roles"] == [focused]
    assert result["expires_at"] < (datetime.now(UTC) + timedelta(days=7, minutes=1)).isoformat()

    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/keys", "/keys/new"):
        dana.go(path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways on a phone by {overflow}px"
        dana.shot("phone" + path.replace("/", "-"))
