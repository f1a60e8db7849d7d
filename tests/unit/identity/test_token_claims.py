from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from apikm.identity.tokens import InvalidToken, TokenValidator

ISSUER = "https://kc.example.org/realms/demo"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "sub": "u1", "exp": now + 60, "iat": now, "aud": ["apikm"],
            "typ": "Bearer", **overrides}


@pytest.fixture
def validator() -> TokenValidator:
    return TokenValidator(ISSUER, "apikm", httpx.AsyncClient(), leeway=0)


def test_access_token_claims_pass(validator: TokenValidator) -> None:
    validator._check_claims(claims())
    validator._check_claims(claims(aud="account", azp="apikm"))


@pytest.mark.parametrize("bad, message", [
    ({"typ": "ID"}, "not an access token"),
    ({"typ": None}, "not an access token"),
    ({"aud": "account", "azp": "other"}, "audience"),
    ({"iss": "https://evil.example.org/realms/demo"}, "iss"),
    ({"exp": int(time.time()) - 5}, "expired"),
    ({"sub": None}, "sub"),
])
def test_bad_claims_are_refused(validator: TokenValidator, bad: dict[str, Any],
                                message: str) -> None:
    values = {k: v for k, v in claims(**bad).items() if v is not None}
    with pytest.raises(InvalidToken, match=message):
        validator._check_claims(values)
