"""``apikm.client`` against a live apikm (and a real upstream for the exchanged token)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from apikm.client import APIKeyAuth, ExchangeFailed, MissingKey, TokenExchangeAuth
from apikm.devstack.keycloak import StackInfo
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.echo import echo_server
from tests.support.keys import create_key, user_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def short_tokens_apikm(keycloak: StackInfo) -> Iterator[ApikmServer]:
    with apikm_server(None, keycloak.base_url, token_ttl_seconds="30") as server:
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with echo_server() as url:
        yield url


@pytest.fixture
def bob_key(short_tokens_apikm: ApikmServer, token: Callable[[str], str]) -> str:
    key, _ = create_key(user_client(short_tokens_apikm.url, token("bob")), ["stac:read"])
    return key


def _subject(server: ApikmServer, bearer: str) -> str:
    keys = KeySet.import_key_set(httpx.get(f"{server.url}/.well-known/jwks.json").json())
    claims = jwt.decode(bearer.removeprefix("Bearer "), keys).claims
    assert claims["iss"] == server.url
    return str(claims["preferred_username"])


def test_api_key_auth_with_httpx_and_requests(short_tokens_apikm: ApikmServer, bob_key: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"{short_tokens_apikm.url}/v1/auth"
    assert httpx.get(url, auth=APIKeyAuth(bob_key)).headers["X-Auth-User"] == "bob"
    custom = APIKeyAuth(bob_key, header="X-API-Key")
    assert requests.get(url, auth=custom, timeout=30).headers["X-Auth-User"] == "bob"
    monkeypatch.setenv("APIKM_API_KEY", bob_key)
    from_environment = APIKeyAuth()
    assert requests.get(url, auth=from_environment, timeout=30).status_code == 200
    assert httpx.get(url, auth=from_environment).status_code == 200
    assert bob_key not in repr(from_environment)


def test_wrong_or_missing_key(short_tokens_apikm: ApikmServer,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APIKM_API_KEY", raising=False)
    with pytest.raises(MissingKey, match="APIKM_API_KEY"):
        APIKeyAuth()
    wrong = httpx.get(f"{short_tokens_apikm.url}/v1/auth", auth=APIKeyAuth("apikm_wrong"))
    assert wrong.status_code == 401


def test_exchange_auth_sends_a_jwt_and_refreshes_it(short_tokens_apikm: ApikmServer,
                                                    upstream: str, bob_key: str) -> None:
    # 30 s tokens, refreshed 27 s early: the second request after 3 s needs a new one.
    auth = TokenExchangeAuth(short_tokens_apikm.url, bob_key, refresh_margin=29)
    first = httpx.get(f"{upstream}/a", auth=auth).json()["headers"]["authorization"]
    assert _subject(short_tokens_apikm, first) == "bob"
    same = requests.get(f"{upstream}/b", auth=auth, timeout=30).json()["headers"]
    assert same["authorization"] == first
    time.sleep(3.2)
    refreshed = httpx.get(f"{upstream}/c", auth=auth).json()["headers"]["authorization"]
    assert refreshed != first and _subject(short_tokens_apikm, refreshed) == "bob"
    assert bob_key not in repr(auth)


def test_exchange_auth_async_and_retry_after_401(short_tokens_apikm: ApikmServer,
                                                 upstream: str, bob_key: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKM_API_KEY", bob_key)
    monkeypatch.setenv("APIKM_URL", short_tokens_apikm.url)
    auth = TokenExchangeAuth()

    async def call() -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.get(f"{upstream}/once/x", auth=auth)

    # The upstream refuses the first token it sees: the auth exchanges again and retries.
    response = asyncio.run(call())
    assert response.status_code == 200
    assert _subject(short_tokens_apikm, response.json()["headers"]["authorization"]) == "bob"


def test_exchange_auth_reports_a_revoked_key(short_tokens_apikm: ApikmServer, upstream: str,
                                             token: Callable[[str], str]) -> None:
    client = user_client(short_tokens_apikm.url, token("bob"))
    key, created = create_key(client, ["analyst"])
    client.delete(f"/v1/keys/{created['id']}")
    with pytest.raises(ExchangeFailed) as failure:
        httpx.get(f"{upstream}/x", auth=TokenExchangeAuth(short_tokens_apikm.url, key))
    assert failure.value.error == "invalid_grant" and failure.value.status == 400
