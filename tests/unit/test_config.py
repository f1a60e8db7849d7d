from __future__ import annotations

import pytest

from apikm.config import ConfigError, load_settings, normalize_database_url


def test_defaults_keep_the_older_apikeymanager_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APIKM_DEFAULT_APIKEY_TTL_HOUR", raising=False)
    settings = load_settings(_env_file=None)
    assert settings.default_apikey_ttl_hour == 360
    assert settings.keycloak_sync_freq == 300
    assert settings.rate_limit == "20/minute"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKM_DEFAULT_APIKEY_TTL_HOUR", "24")
    monkeypatch.setenv("APIKM_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1")
    settings = load_settings(_env_file=None)
    assert settings.default_apikey_ttl_hour == 24
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.168.1.1/32"]
    assert settings.client_ip_header == "x-forwarded-for"
    monkeypatch.setenv("APIKM_CLIENT_IP_HEADER", " X-Real-IP")
    assert load_settings(_env_file=None).client_ip_header == "x-real-ip"


@pytest.mark.parametrize("name, value", [
    ("APIKM_RATE_LIMIT", "lots"),
    ("APIKM_KEY_PREFIX", "Bad_Prefix"),
    ("APIKM_PORT", "70000"),
    ("APIKM_TRUSTED_PROXIES", "10.0.0.0/99"),
    ("APIKM_KEYCLOAK_URL", "keycloak:8080"),
    ("APIKM_DEFAULT_APIKEY_TTL_HOUR", "-1"),
    ("APIKM_CLIENT_IP_HEADER", "forwarded"),
])
def test_wrong_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str,
                                        value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None)
    assert name in str(info.value)


def test_default_ttl_above_maximum_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKM_DEFAULT_APIKEY_TTL_HOUR", "100")
    monkeypatch.setenv("APIKM_MAX_APIKEY_TTL_HOUR", "10")
    with pytest.raises(ConfigError, match="APIKM_DEFAULT_APIKEY_TTL_HOUR"):
        load_settings(_env_file=None)


def test_plain_database_urls_get_async_drivers() -> None:
    assert normalize_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert normalize_database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalize_database_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalize_database_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"
