"""Signing in to apikm's web UI without a browser: httpx through Keycloak's real login form."""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

import httpx

_FORM_ACTION = re.compile(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', re.S)
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_LOOPBACK = ("127.0.0.1", "localhost", "localhost.local", "::1", "[::1]")


def browser_client() -> httpx.Client:
    """Cookies per host, not per port, as a browser keeps them; and, as a browser does for
    http://127.0.0.1 (a trustworthy origin), ``Secure`` cookies sent there too: Keycloak
    marks its login cookies ``Secure``, which httpx would otherwise keep to itself."""
    client = httpx.Client(timeout=30)

    def loopback_is_secure(_response: httpx.Response) -> None:
        for cookie in client.cookies.jar:
            if cookie.domain in _LOOPBACK:
                cookie.secure = False

    client.event_hooks["response"].append(loopback_is_secure)
    return client


def sign_in(browser: httpx.Client, start_url: str, finish_url: str, username: str,
            password: str, next_path: str = "/keys") -> httpx.Response:
    """Start the sign-in at ``start_url``; Keycloak's answer is delivered to ``finish_url``
    (as a load balancer might send it to another replica). -> the callback's response."""
    to_keycloak = browser.get(f"{start_url}/login", params={"next": next_path})
    assert to_keycloak.status_code == 303, to_keycloak.text
    form = browser.get(to_keycloak.headers["location"], follow_redirects=True)
    action = _FORM_ACTION.search(form.text)
    assert action, form.text[:2000]
    back = browser.post(html.unescape(action.group(1)),
                        data={"username": username, "password": password, "credentialId": ""})
    assert back.status_code == 302, back.text[:2000]
    callback = urlsplit(back.headers["location"])
    assert f"{callback.scheme}://{callback.netloc}" == start_url
    return browser.get(f"{finish_url}{callback.path}?{callback.query}")
