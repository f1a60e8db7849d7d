"""keycloak exchange mode without a Keycloak: what apikm asks Keycloak for, what it refuses
itself, and Keycloak answers it must not hand out. (Against the real Keycloak:
tests/integration/tokens/test_keycloak_narrowed.py.)"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.cluster.tables import cluster_events
from apikm.config import Settings
from apikm.db import create_engine, metadata
from apikm.encryption import new_key_spec, parse_encryption_keys
from apikm.tokens import narrowing
from apikm.tokens.exchange import KeycloakMinter, OAuthError
from apikm.tokens.keycloak_grant import KeycloakGrant
from apikm.tokens.signing import SigningKeys
from apikm.tokens.tables import signing_keys
from tests.unit.verify.test_rules import RECORD

ENDS = datetime.now(UTC) + timedelta(hours=1)
# effective roles: analyst, geo:read (geo:write granted but no longer held by the owner)
KEY = replace(RECORD, expires_at=ENDS)


def fake_jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def token_answer(realm: list[str], clients: dict[str, list[str]], exp: float = ENDS.timestamp(),
                 aud: str | list[str] = "geo") -> httpx.Response:
    claims = {"exp": int(exp), "aud": aud, "realm_access": {"roles": realm},
              "resource_access": {c: {"roles": r} for c, r in clients.items()}}
    return httpx.Response(200, json={"access_token": fake_jwt(claims), "expires_in": 300,
                                     "scope": "openid"})


NARROW = token_answer(["analyst"], {"geo": ["read"]})


Minter = tuple[KeycloakMinter, list[dict[str, list[str]]]]
Make = Callable[[httpx.Response], Awaitable[Minter]]


@pytest.fixture
async def minter(tmp_path: Path) -> AsyncIterator[Make]:
    """Builds a minter whose Keycloak gives ``answer``; records the forms it was sent."""
    engines: list[AsyncEngine] = []

    async def make(answer: httpx.Response) -> Minter:
        asked: list[dict[str, list[str]]] = []
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / f'apikm{len(engines)}.db'}")
        engines.append(engine)
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: metadata.create_all(
                c, tables=[signing_keys, cluster_events]))
        keys = SigningKeys(engine, parse_encryption_keys(new_key_spec()), "ES256")
        await keys.start()  # the client assertion is signed with a real key

        def handle(request: httpx.Request) -> httpx.Response:
            asked.append(parse_qs(request.content.decode()))
            return answer

        settings = Settings(_env_file=None, exchange_mode="keycloak",  # type: ignore[call-arg]
                            exchange_client_secret=SecretStr("s"), keycloak_idp_alias="ak",
                            token_audience=["apikm"])
        http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
        return KeycloakMinter(KeycloakGrant(settings, http, keys), settings), asked

    yield make
    for engine in engines:
        await engine.dispose()


def claims_of(assertion: str) -> dict[str, Any]:
    return narrowing.unverified_claims(assertion)


async def test_asks_for_the_keys_role_scopes_and_hands_out_a_narrow_token(
        minter: Make) -> None:
    keycloak, asked = await minter(NARROW)
    issued = await keycloak.mint(KEY)
    assert narrowing.roles_beyond(narrowing.unverified_claims(issued.access_token),
                                  KEY.effective_roles) == frozenset()
    scope = asked[0]["scope"][0].split()
    assert scope == ["openid", "ak.role.analyst", "ak.role.geo:read", "ak.aud.apikm"]
    assertion = claims_of(asked[0]["assertion"][0])
    assert assertion["sub"] == "u1" and assertion["exp"] <= ENDS.timestamp()


async def test_assertion_ends_with_the_key(minter: Make) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=20)
    keycloak, asked = await minter(token_answer(["analyst"], {"geo": ["read"]},
                                                          exp=soon.timestamp()))
    await keycloak.mint(replace(KEY, expires_at=soon))
    assert claims_of(asked[0]["assertion"][0])["exp"] == int(soon.timestamp())


async def test_a_token_wider_than_the_key_is_refused_and_counted(minter: Make) -> None:
    before = narrowing.TOKENS_REFUSED.labels("wider_roles")._value.get()
    keycloak, _ = await minter(token_answer(["analyst", "other"], {"geo": ["read"]}))
    with pytest.raises(OAuthError) as info:
        await keycloak.mint(KEY)
    assert (info.value.status, info.value.error) == (400, "invalid_scope")
    assert "does not carry" in info.value.description
    assert narrowing.TOKENS_REFUSED.labels("wider_roles")._value.get() == before + 1
    # a client role the key lacks counts as much as a realm role
    keycloak, _ = await minter(token_answer(["analyst"], {"geo": ["read", "write"]}))
    with pytest.raises(OAuthError):
        await keycloak.mint(KEY)


async def test_a_token_outliving_the_key_is_refused(minter: Make) -> None:
    later = ENDS + timedelta(minutes=5)
    keycloak, _ = await minter(token_answer(["analyst"], {}, exp=later.timestamp()))
    with pytest.raises(OAuthError) as info:
        await keycloak.mint(KEY)
    assert info.value.status == 503 and "outlive" in info.value.description


async def test_fewer_roles_than_the_key_are_fine(minter: Make) -> None:
    """The owner lost a role Keycloak already knows of: narrower is never refused."""
    keycloak, _ = await minter(token_answer([], {}))
    assert (await keycloak.mint(KEY)).access_token


@pytest.mark.parametrize(("key", "audience", "scope", "error"), [
    (replace(KEY, granted_roles=frozenset({"realm-management:view-users"}),
             owner_roles=frozenset({"realm-management:view-users"})), None, None,
     "invalid_scope"),
    (KEY, None, "profile ak.role.other", "invalid_scope"),
    (KEY, None, "ak.aud.elsewhere", "invalid_scope"),
    (KEY, "stac", None, "invalid_target"),
])
async def test_refused_without_asking_keycloak(minter: Make, key: Any, audience: str | None,
                                               scope: str | None, error: str) -> None:
    keycloak, asked = await minter(NARROW)
    with pytest.raises(OAuthError) as info:
        await keycloak.mint(key, audience, scope)
    assert (info.value.status, info.value.error) == (400, error)
    assert asked == []


async def test_audience_asked_for_replaces_the_configured_one(minter: Make) -> None:
    keycloak, asked = await minter(NARROW)
    await keycloak.mint(KEY, "geo", "email")
    assert asked[0]["scope"][0].split() == ["openid", "email", "ak.role.analyst",
                                            "ak.role.geo:read", "ak.aud.geo"]


async def test_keycloak_without_a_role_scope_says_so(minter: Make) -> None:
    keycloak, _ = await minter(httpx.Response(
        400, json={"error": "invalid_scope", "error_description": "Invalid scopes: ..."}))
    with pytest.raises(OAuthError) as info:
        await keycloak.mint(KEY)
    assert (info.value.status, info.value.error) == (400, "invalid_scope")
    assert "apikm keycloak setup" in info.value.description


@pytest.mark.parametrize("answer", [
    httpx.Response(200, text="<html>maintenance</html>"),
    httpx.Response(200, json=["not", "a", "token"]),
    httpx.Response(200, json={"token_type": "Bearer"}),
    httpx.Response(200, json={"access_token": "", "expires_in": 60}),
    httpx.Response(200, json={"access_token": "t", "expires_in": "soon"}),
    httpx.Response(200, json={"access_token": "not.a.jwt", "expires_in": 60}),
    httpx.Response(400, json=["odd"]),
])
async def test_answers_that_are_no_token_are_503s_not_500s(minter: Make,
                                                           answer: httpx.Response) -> None:
    keycloak, _ = await minter(answer)
    with pytest.raises(OAuthError) as info:
        await keycloak.mint(KEY)
    assert info.value.status in (400, 503) and info.value.error != "server_error"


def test_role_scope_names_are_one_per_role() -> None:
    names = {narrowing.role_scope_name("a", r)
             for r in ("x y", "x%20y", "x:y", "x\\y", 'x"y', "é")}
    assert len(names) == 6
    assert all(n.isascii() and " " not in n and '"' not in n and "\\" not in n for n in names)
    assert narrowing.role_scope_name("apikm", "geoserver:read") == "apikm.role.geoserver:read"
    assert narrowing.inexpressible_roles(["broker:read-token", "analyst",
                                          narrowing.LINK_ROLE, "x" * 300], "a") == [
        "broker:read-token", "x" * 300]
