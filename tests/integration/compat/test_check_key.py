"""``GET /auth/check_key`` as RS-PYTHON's rs-server uses it, against the real service.

Two clients: ``RsServerClient`` does exactly what rs-server's ``apikey_security`` does over
HTTP, for every way the old service took a key (header, query, ``/k/<key>/`` path) and every
kind of key (valid, wrong, missing, revoked, expired); and rs-server's own package from
PyPI (``rs-server-common``), run for real in a process of its own.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from apikm.compat.check_key import MISSING, WRONG
from tests.integration.compat.conftest import KcUser, Users, client_address
from tests.support.apikeymanager import RsServerClient, UacError, run_real_client
from tests.support.apikm_server import ApikmServer

pytestmark = pytest.mark.integration
EXACT_FIELDS = {"user_id", "user_login", "iam_roles", "config"}

# How the old service took a key; each returns the check's response.
Way = Callable[[ApikmServer, str], httpx.Response]
WAYS: dict[str, Way] = {
    "header": lambda s, key: httpx.get(f"{s.url}/auth/check_key", headers=_h({"x-api-key": key})),
    "query": lambda s, key: httpx.get(f"{s.url}/auth/check_key", params={"api-key": key},
                                      headers=_h({})),
    "path": lambda s, key: httpx.get(f"{s.url}/k/{key}/auth/check_key", headers=_h({})),
}
_ADDRESS: dict[str, str] = {}


def _h(headers: dict[str, str]) -> dict[str, str]:
    # One client address for this module's failures, away from other modules' counts.
    address = _ADDRESS.setdefault("this", client_address())
    return {**headers, "X-Forwarded-For": address}


def old_style_key(server: ApikmServer, user: KcUser, config: dict[str, Any]) -> str:
    with user.client(server) as client:
        response = client.get("/auth/api_key/new",
                              params={"name": "rs-server", "config": _json(config)})
    assert response.status_code == 200, response.text
    key = response.json()
    assert isinstance(key, str)
    return key


def _json(value: object) -> str:
    import json

    return json.dumps(value)


@pytest.mark.parametrize("way", sorted(WAYS))
def test_valid_key_answers_exactly_the_old_fields(compat_server: ApikmServer, users: Users,
                                                  way: str) -> None:
    user = users.make(("analyst", "editor"))
    key = old_style_key(compat_server, user, {"project": "s1", "quota": 3})
    response = WAYS[way](compat_server, key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == EXACT_FIELDS
    assert body["user_id"] == user.id
    assert body["user_login"] == user.username
    assert {"analyst", "editor"} <= set(body["iam_roles"])  # realm roles by plain name
    assert body["config"] == {"project": "s1", "quota": 3}
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("way", ["header", "query"])
def test_missing_key_is_403_with_the_old_detail(compat_server: ApikmServer, way: str) -> None:
    response = WAYS[way](compat_server, "")
    assert response.status_code == 403
    assert response.json() == {"detail": MISSING}


def test_missing_key_in_the_path_form_is_404_as_before(compat_server: ApikmServer) -> None:
    response = httpx.get(f"{compat_server.url}/k//auth/check_key", headers=_h({}))
    assert response.status_code == 404


@pytest.mark.parametrize("way", sorted(WAYS))
@pytest.mark.parametrize("wrong", ["wrong-apikey", str(uuid.uuid4()),
                                   "apikm_" + "A" * 42])
def test_wrong_key_is_403_with_the_old_detail(compat_server: ApikmServer, way: str,
                                              wrong: str) -> None:
    response = WAYS[way](compat_server, wrong)
    # The old service's /k/ pattern took only [-a-z0-9]: "wrong-apikey" fits it and was
    # checked (403); apikm takes apikm keys in the path as well, so every wrong key is a 403.
    assert response.status_code == 403
    assert response.json() == {"detail": WRONG}
    assert response.headers["x-apikm-code"] in ("MALFORMED", "NOT_FOUND")


@pytest.mark.parametrize("way", sorted(WAYS))
def test_revoked_and_expired_keys_are_403_with_the_old_detail(
        compat_server: ApikmServer, users: Users, way: str) -> None:
    user = users.make()
    revoked = old_style_key(compat_server, user, {})
    with user.client(compat_server) as client:
        assert client.get("/auth/api_key/revoke", params={"api-key": revoked}).status_code == 200
        soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        expiring = client.post("/v1/keys", json={"name": "short", "all_roles": True,
                                                 "expires_at": soon})
        assert expiring.status_code == 201, expiring.text
    expired = expiring.json()["key"]
    assert WAYS[way](compat_server, expired).status_code == 200
    time.sleep(2.2)
    for key, code in ((revoked, "REVOKED"), (expired, "EXPIRED")):
        response = WAYS[way](compat_server, key)
        assert response.status_code == 403
        assert response.json() == {"detail": WRONG}
        assert response.headers["x-apikm-code"] == code


def test_rs_server_client_sees_what_it_saw_before(compat_server: ApikmServer,
                                                  users: Users) -> None:
    """rs-server's logic, call by call: no key, a good key, a wrong one, a revoked one."""
    user = users.make(("analyst",))
    key = old_style_key(compat_server, user, {"bucket": "rs-cadip"})
    client = RsServerClient(f"{compat_server.url}/auth/check_key")
    assert client.check("") is None
    info = client.check(key)
    assert info is not None
    assert info.user_login == user.username
    assert "analyst" in info.iam_roles
    assert info.config == {"bucket": "rs-cadip"}
    with pytest.raises(UacError) as wrong:
        client.check(str(uuid.uuid4()))
    assert (wrong.value.status, wrong.value.detail) == (403, f"UAC manager: {WRONG}")
    with user.client(compat_server) as owner:
        owner.get("/auth/api_key/revoke", params={"api-key": key}).raise_for_status()
    with pytest.raises(UacError) as revoked:
        client.check(key)
    assert revoked.value.status == 403


def test_real_rs_server_common_package(compat_server: ApikmServer, users: Users) -> None:
    """rs-server-common 0.2 from PyPI, its own ``apikey_security``, against apikm."""
    user = users.make(("analyst",))
    key = old_style_key(compat_server, user, {"owner": "ops"})
    revoked = old_style_key(compat_server, user, {})
    with user.client(compat_server) as owner:
        owner.get("/auth/api_key/revoke", params={"api-key": revoked}).raise_for_status()
    try:
        answers = run_real_client(f"{compat_server.url}/auth/check_key",
                                  [key, "", str(uuid.uuid4()), revoked])
    except RuntimeError as exc:  # PyPI out of reach: the HTTP-contract test above still runs
        pytest.skip(str(exc))
    good, absent, wrong, gone = answers
    assert good["ok"] is True
    info = good["info"]
    assert info["user_login"] == user.username
    assert "analyst" in info["iam_roles"]
    assert {"owner": "ops"} in info.values()  # the config, under the package's field name
    assert absent == {"ok": True, "info": None}
    assert wrong == {"ok": False, "status": 403, "detail": f"UAC manager: {WRONG}"}
    assert gone == {"ok": False, "status": 403, "detail": f"UAC manager: {WRONG}"}


def test_failed_checks_are_limited_good_checks_are_not(compat_server: ApikmServer,
                                                       users: Users) -> None:
    """The old service allowed 20 checks a minute per address, good or bad; apikm counts
    failed checks only (APIKM_RATE_LIMIT, 30/minute here): a busy rs-server is never
    throttled, a guesser is, and then its good keys are refused too."""
    user = users.make()
    key = old_style_key(compat_server, user, {})
    busy = {"x-api-key": key, "X-Forwarded-For": client_address()}
    for _ in range(45):  # more than either limit
        assert httpx.get(f"{compat_server.url}/auth/check_key", headers=busy).status_code == 200
    guesser = client_address()
    # Guesses at apikm keys count (uuid4s count only once imported keys exist).
    statuses = [httpx.get(f"{compat_server.url}/auth/check_key", headers={
        "x-api-key": f"apikm_{secrets.token_hex(21)}", "X-Forwarded-For": guesser}).status_code
        for _ in range(31)]
    assert statuses[:30] == [403] * 30
    assert statuses[30] == 429
    blocked = httpx.get(f"{compat_server.url}/auth/check_key",
                        headers={"x-api-key": key, "X-Forwarded-For": guesser})
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    assert "retry in" in blocked.json()["detail"]
    # rs-server forwards the status and the detail
    assert set(blocked.json()) == {"detail"}


def test_check_key_method_and_database_shape(compat_server: ApikmServer) -> None:
    response = httpx.post(f"{compat_server.url}/auth/check_key", headers=_h({}))
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
