from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from apikm.config import Settings
from apikm.web.ui.csrf import tokens_match
from apikm.web.ui.oidc import OidcClient, ProviderMetadata, code_challenge, new_login_request

META = ProviderMetadata("https://kc.example/auth", "https://kc.example/token",
                        "https://kc.example/logout")


def client() -> OidcClient:
    return OidcClient(Settings(_env_file=None, oidc_client_secret="s"))  # type: ignore[call-arg]


def test_pkce_challenge_matches_rfc_7636_appendix_b() -> None:
    assert code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == \
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_the_authorization_request_carries_state_nonce_and_an_s256_challenge() -> None:
    login = new_login_request("/keys", "http://127.0.0.1:8000/auth/callback")
    assert 43 <= len(login.verifier) <= 128
    query = parse_qs(urlsplit(client().authorization_url(META, login)).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["code_challenge"] == [code_challenge(login.verifier)]
    assert query["state"] == [login.state] and query["nonce"] == [login.nonce]
    assert query["response_type"] == ["code"] and query["scope"] == ["openid"]
    assert "code_verifier" not in query
    assert new_login_request("/", "x").state != login.state


def test_logout_goes_to_keycloak_with_the_id_token_hint() -> None:
    url = client().end_session_url(META, "id.token.value", "http://127.0.0.1:8000/signed-out")
    assert url is not None
    query = parse_qs(urlsplit(url).query)
    assert query["id_token_hint"] == ["id.token.value"]
    assert query["post_logout_redirect_uri"] == ["http://127.0.0.1:8000/signed-out"]


def test_csrf_tokens_must_be_present_and_equal() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abc", "abd")
    assert not tokens_match("abc", "")
    assert not tokens_match("", "")
