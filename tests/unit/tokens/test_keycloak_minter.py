"""keycloak exchange mode without a Keycloak: what apikm refuses itself, and Keycloak answers
that are no token. (Against the real Keycloak: tests/integration/tokens/test_exchange.py.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from apikm.cluster.tables import cluster_events
from apikm.config import Settings
from apikm.db import create_engine, metadata
from apikm.encryption import new_key_spec, parse_encryption_keys
from apikm.tokens.exchange import KeycloakMinter, OAuthError
from apikm.tokens.keycloak_grant import KeycloakGrant
from apikm.tokens.signing import SigningKeys
from apikm.tokens.tables import signing_keys
from tests.unit.verify.test_rules import RECORD

FULL = replace(RECORD, granted_roles=RECORD.owner_roles)  # carries all its owner's roles


async def minter(tmp_path: Path, answer: httpx.Response) -> tuple[KeycloakMinter, list[str]]:
    asked: list[str] = []
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'apikm.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: metadata.create_all(c, tables=[signing_keys, cluster_events]))
    keys = SigningKeys(engine, parse_encryption_keys(new_key_spec()), "ES256")
    await keys.start()  # the client assertion is signed with a real key

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return answer

    settings = Settings(_env_file=None, exchange_mode="keycloak",  # type: ignore[call-arg]
                        exchange_client_secret=SecretStr("s"))
    http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return KeycloakMinter(KeycloakGrant(settings, http, keys)), asked


async def test_a_narrowed_key_gets_no_token_and_keycloak_is_not_asked(tmp_path: Path) -> None:
    keycloak, asked = await minter(tmp_path, httpx.Response(200, json={"access_token": "t"}))
    assert RECORD.effective_roles != RECORD.owner_roles
    with pytest.raises(OAuthError) as info:
        await keycloak.mint(RECORD)
    assert (info.value.status, info.value.error) == (400, "invalid_request")
    assert "APIKM_EXCHANGE_MODE=apikm" in info.value.description
    assert asked == []
    issued = await keycloak.mint(FULL)
    assert issued.access_token == "t" and asked


@pytest.mark.parametrize("answer", [
    httpx.Response(200, text="<html>maintenance</html>"),
    httpx.Response(200, json=["not", "a", "token"]),
    httpx.Response(200, json={"token_type": "Bearer"}),
    httpx.Response(200, json={"access_token": "", "expires_in": 60}),
    httpx.Response(200, json={"access_token": "t", "expires_in": "soon"}),
    httpx.Response(400, json=["odd"]),
])
async def test_answers_that_are_no_token_are_503s_not_500s(tmp_path: Path,
                                                           answer: httpx.Response) -> None:
    keycloak, _ = await minter(tmp_path, answer)
    with pytest.raises(OAuthError) as info:
        await keycloak.mint(FULL)
    assert info.value.status in (400, 503) and info.value.error != "server_error"
