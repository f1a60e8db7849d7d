"""APIKeyManager's setting names beside apikm's."""

from __future__ import annotations

from datetime import timedelta

import pytest

from apikm.config import ConfigError, load_settings


def test_old_keycloak_names_are_read() -> None:
    settings = load_settings(oidc_endpoint="https://sso.example.org/", oidc_realm="rspy")
    assert settings.keycloak_url == "https://sso.example.org"
    assert settings.issuer == "https://sso.example.org/realms/rspy"


def test_conflicting_old_and_new_names_stop_apikm_naming_both() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(oidc_realm="rspy", keycloak_realm="demo")
    assert "APIKM_OIDC_REALM" in str(refused.value)
    assert "APIKM_KEYCLOAK_REALM" in str(refused.value)
    same = load_settings(oidc_realm="demo", keycloak_realm="demo")  # agreeing is fine
    assert same.keycloak_realm == "demo"


@pytest.mark.parametrize("given", ["project, site", '["project", "site"]'])
def test_oauth2_attributes_as_csv_or_json(given: str) -> None:
    assert load_settings(oauth2_attributes=given).oauth2_attributes == ["project", "site"]


@pytest.mark.parametrize("given", ["bad name", '["ok", 3]', "[not json"])
def test_bad_attribute_names_are_refused(given: str) -> None:
    with pytest.raises(ConfigError, match="APIKM_OAUTH2_ATTRIBUTES"):
        load_settings(oauth2_attributes=given)


def test_sync_freq_minus_one_means_no_full_pass_and_no_default_staleness() -> None:
    settings = load_settings(keycloak_sync_freq=-1)
    assert settings.max_staleness is None
    kept = load_settings(keycloak_sync_freq=-1, max_staleness="2h")
    assert kept.max_staleness == timedelta(hours=2)
    with pytest.raises(ConfigError, match="APIKM_KEYCLOAK_SYNC_FREQ"):
        load_settings(keycloak_sync_freq=0)


def test_root_path_and_cors() -> None:
    assert load_settings(root_path="/apikm/").root_path == "/apikm"
    with pytest.raises(ConfigError, match="APIKM_ROOT_PATH"):
        load_settings(root_path="apikm")
    with pytest.raises(ConfigError, match="APIKM_CORS_ORIGINS_REGEX"):
        load_settings(cors_origins_regex="([")
