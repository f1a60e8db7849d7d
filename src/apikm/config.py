"""Settings: every knob is an ``APIKM_*`` environment variable, ``.env`` is read when present.

Names kept from the older CS Group APIKeyManager keep their meaning:
``APIKM_DATABASE_URL``, ``APIKM_DEFAULT_APIKEY_TTL_HOUR``, ``APIKM_KEYCLOAK_SYNC_FREQ``
(``-1``: no periodic full pass), ``APIKM_RATE_LIMIT``, ``APIKM_OIDC_CLIENT_ID/SECRET``, and
(``apikm.compat.settings``) ``APIKM_OIDC_ENDPOINT`` + ``APIKM_OIDC_REALM``,
``APIKM_OAUTH2_ATTRIBUTES``, ``APIKM_ROOT_PATH``, ``APIKM_CORS_ORIGINS_REGEX``,
``APIKM_SHOW_TECHNICAL_ENDPOINTS``.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from limits import parse as parse_rate_limit
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from apikm.identity.sync_rules import parse_duration

KEY_PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]{1,15}$")


def _split_csv(value: object) -> object:
    """Let list settings be written as ``a,b,c`` (friendlier than JSON in an env file)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="APIKM_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- service -------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="worker processes of apikm serve")
    public_url: str = Field("", description="External base URL; default http://host:port")
    gateway_urls: Annotated[list[str], NoDecode] = Field(
        [], description="URLs of the services behind apikm's gateways, shown to key owners "
        "in the ready-to-paste snippets ('https://maps.example.org/wms?service=WMS,...'); "
        "default: APIKM_PUBLIC_URL")
    data_dir: Path = Path("var")
    database_url: str = ""
    log_level: str = "INFO"
    log_json: bool = False
    access_log: bool = Field(True, description="log requests of the key API, UI and ops routes")
    gateway_access_log: Literal["denials", "all", "off"] = Field(
        "denials", description="which /v1/auth and /v1/verify requests to log (the gateway "
        "in front logs every request; denials are always worth a line)")
    max_body_bytes: int = Field(64 * 1024, ge=1024)

    # --- keys ----------------------------------------------------------------------------
    key_prefix: str = "apikm"
    peppers: SecretStr | None = Field(
        None, description="'id:secret,id:secret'; the first one hashes new keys"
    )
    default_apikey_ttl_hour: int = Field(360, ge=1)
    max_apikey_ttl_hour: int = Field(24 * 365, ge=1)
    max_keys_per_user: int = Field(100, ge=1)
    max_meta_bytes: int = Field(4096, ge=2)
    max_rotation_overlap_hour: int = Field(24 * 7, ge=0)

    # --- Keycloak / OIDC -----------------------------------------------------------------
    keycloak_url: str = "http://127.0.0.1:8080"
    keycloak_realm: str = "demo"
    oidc_client_id: str = "apikm"
    oidc_client_secret: SecretStr | None = None
    oidc_audience: str = "apikm"
    admin_role: str = "apikm-admin"
    token_leeway_seconds: int = Field(30, ge=0, le=300, description="clock skew allowed")
    keycloak_sync_freq: int = Field(300, description="seconds between full sync passes; "
                                    "-1: none (events only), as in APIKeyManager")

    # --- Keycloak sync (identity/sync.py) ------------------------------------------------
    keycloak_admin_url: str = Field("", description="Keycloak base URL for the admin API "
                                    "(sync); default APIKM_KEYCLOAK_URL")
    sync_enabled: bool = True
    sync_follow_events: bool = Field(True, description="poll admin/user events between "
                                     "full passes")
    sync_event_interval: float = Field(1.0, ge=0.2, le=60)
    sync_concurrency: int = Field(8, ge=1, le=64)
    max_staleness: timedelta | None = Field(
        timedelta(hours=1), description="e.g. 1h; then STALE. Not enforced by default when "
        "APIKM_KEYCLOAK_SYNC_FREQ is -1 (no full pass confirms owners)")
    revoke_disabled_after: timedelta = Field(timedelta(hours=24), description="e.g. 24h")

    # --- secrets shared by every replica (encryption.py) ---------------------------------
    encryption_key: SecretStr | None = Field(
        None, description="'id:key,id:older-key' (32 random bytes each, base64url): encrypts "
        "the signing keys in the database, derives the UI cookie secrets; the first "
        "encrypts. Required with PostgreSQL; default with SQLite: a 0600 file under "
        "APIKM_DATA_DIR")

    # --- web UI sessions -----------------------------------------------------------------
    session_secret: SecretStr | None = Field(
        None, description="'secret,older-secret' for session cookies; the first one encrypts. "
        "Default: derived from APIKM_ENCRYPTION_KEY")
    session_lifetime_minutes: int = Field(480, ge=5, le=7 * 24 * 60)

    # --- verification --------------------------------------------------------------------
    rate_limit: str = "20/minute"
    rate_limit_storage: str = "memory://"
    trusted_proxies: Annotated[list[str], NoDecode] = ["127.0.0.1/32", "::1/128"]
    client_ip_header: Literal["x-forwarded-for", "x-real-ip"] = Field(
        "x-forwarded-for", description="the one header whose client address is believed from "
        "trusted proxies (the configs in deploy/ set X-Forwarded-For); the other is ignored")
    cache_ttl_seconds: float = Field(5.0, ge=0, description="backstop lifetime of a cached "
                                     "key; changes reach every replica's cache at once")
    cache_max_keys: int = Field(100_000, ge=100)
    usage_flush_seconds: float = Field(5.0, gt=0)
    revoke_on_secret_reuse: bool = Field(False, description="revoke a key when a secret its "
                                         "rotation retired is presented after the overlap "
                                         "(the owner and admins are alerted either way)")

    # --- forward auth (/v1/auth) ---------------------------------------------------------
    auth_header: Annotated[list[str], NoDecode] = Field(
        ["X-API-Key"], description="request headers that may carry the key, in order")
    auth_query_param: str = Field("apikey", min_length=1, max_length=64,
                                  description="query parameter of the original URI")
    auth_realm: str = Field("apikm", description="realm named in WWW-Authenticate")
    auth_upstream_jwt: bool = Field(False, description="mint a JWT for the upstream request "
                                    "on every route (else only with ?jwt=1)")

    # --- tokens: exchange, signing, introspection ----------------------------------------
    exchange_mode: Literal["apikm", "keycloak"] = "apikm"
    token_ttl_seconds: int = Field(300, ge=30, le=86400)
    token_audience: Annotated[list[str], NoDecode] = Field(
        ["apikm"], description="aud of apikm-signed tokens, besides the key's clients")
    signing_alg: Literal["ES256", "RS256"] = "ES256"
    keycloak_idp_alias: str = Field("apikm", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    # The confidential client that posts JWT Authorization Grants in keycloak mode. Its own
    # client (default apikm-exchange), because linking owners needs manage-users, which the
    # read-only sync account (APIKM_OIDC_CLIENT_ID) must not have.
    exchange_client_id: str = "apikm-exchange"
    exchange_client_secret: SecretStr | None = None
    introspect_networks: Annotated[list[str], NoDecode] = ["127.0.0.1/32", "::1/128"]
    introspect_role: str = "apikm-introspect"

    # --- notifications (apikm.notify) ----------------------------------------------------
    notify_enabled: bool = Field(True, description="run the notification worker (mails, "
                                 "webhooks) in apikm serve; one replica at a time delivers")
    smtp_url: SecretStr | None = Field(
        None, description="smtp://user:password@host:port (STARTTLS when offered; "
        "?starttls=true requires it, ?starttls=false never), smtps://... for TLS; "
        "?cafile=/path trusts a private CA. Unset: no mail")
    smtp_from: str = Field("apikm <apikm@localhost>", description="From: of every mail")
    smtp_timeout_seconds: float = Field(15.0, gt=0, le=300)
    admin_emails: Annotated[list[str], NoDecode] = Field(
        [], description="addresses that get the security alerts (new network, secret "
        "reuse, leak, limit tripped)")
    expiry_warning_days: Annotated[list[int], NoDecode] = Field(
        [30, 7, 1], description="days before expiry to warn a key's owner, e.g. '30,7,1'")
    notify_interval_seconds: float = Field(2.0, gt=0, le=300,
                                           description="how often the worker looks for work")
    notify_max_attempts: int = Field(8, ge=1, le=50, description="deliveries tried before "
                                     "a notification is marked failed")
    notify_retry_seconds: float = Field(30.0, gt=0, le=3600, description="first retry "
                                        "delay; doubled at each attempt, at most an hour")
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120)

    # --- leak reports (apikm.leaks) -------------------------------------------------------
    leak_report_keys: str = Field(
        "", description="public keys GitHub signs secret scanning reports with: JSON or the "
        "path of a JSON file, GitHub's /meta/public_keys/secret_scanning document or "
        "{\"<key identifier>\": \"<PEM>\"}; read at start, never fetched. Empty: only "
        "admins may report")
    leak_report_max_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024,
                                       description="largest body of POST /v1/leaks")

    # --- CS Group APIKeyManager compatibility (apikm.compat) -----------------------------
    compat_api: bool = Field(True, description="serve APIKeyManager's API: /auth/check_key, "
                             "/auth/api_key/..., /auth/me, /health/status, /k/<key>/...")
    allow_all_roles_keys: bool = Field(True, description="keys may carry all of their "
                                       "owner's current roles (opt-in per key)")
    oauth2_attributes: Annotated[list[str], NoDecode] = Field(
        [], description="Keycloak user attributes synced with each owner and returned on "
        "verification ('a,b' or a JSON list)")
    auth_attribute_headers: bool = Field(False, description="forward auth answers the "
                                         "attributes as X-Auth-Attr-<name> headers")
    # APIKeyManager's names (only read; see _apikeymanager_names):
    oidc_endpoint: str = Field("", description="old name of APIKM_KEYCLOAK_URL")
    oidc_realm: str = Field("", description="old name of APIKM_KEYCLOAK_REALM")
    root_path: str = Field("", description="path prefix apikm is served under, e.g. /apikm")
    cors_origins_regex: str = Field("", description="browser origins allowed by CORS "
                                    "(a regular expression); empty: no CORS")
    show_technical_endpoints: bool = Field(False, description="list /health/status in the "
                                           "OpenAPI document")

    @field_validator("trusted_proxies", "introspect_networks", "auth_header",
                     "token_audience", "gateway_urls", "admin_emails", "expiry_warning_days",
                     mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("oauth2_attributes", mode="before")
    @classmethod
    def _attribute_names(cls, value: object) -> object:
        from apikm.compat.settings import attribute_names

        return attribute_names(value)

    @field_validator("expiry_warning_days")
    @classmethod
    def _warning_days(cls, value: list[int]) -> list[int]:
        if any(day < 1 or day > 365 for day in value):
            raise ValueError("days must be between 1 and 365, e.g. '30,7,1'")
        return sorted(set(value), reverse=True)

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        from apikm.notify.smtp import parse_smtp_url

        if value is not None and value.get_secret_value():
            parse_smtp_url(value.get_secret_value())  # SmtpUrlError: ValueError, no password
        return value if value is not None and value.get_secret_value() else None

    @field_validator("keycloak_sync_freq")
    @classmethod
    def _sync_freq(cls, value: int) -> int:
        if value != -1 and value < 5:
            raise ValueError("must be at least 5 seconds, or -1 for no periodic full pass")
        return value

    @field_validator("root_path")
    @classmethod
    def _root_path(cls, value: str) -> str:
        from apikm.compat.settings import check_root_path

        return check_root_path(value)

    @field_validator("cors_origins_regex")
    @classmethod
    def _cors(cls, value: str) -> str:
        if value:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _apikeymanager_names(self) -> Settings:
        from apikm.compat.settings import apply_old_names

        apply_old_names(self)
        return self

    @field_validator("trusted_proxies", "introspect_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(item, strict=False)) for item in value]

    @field_validator("client_ip_header", mode="before")
    @classmethod
    def _header_name(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not KEY_PREFIX_PATTERN.match(value):
            raise ValueError("must be 2-16 lowercase letters or digits, starting with a letter")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        try:
            parse_rate_limit(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit such as '20/minute': {exc}") from None
        return value

    @field_validator("encryption_key")
    @classmethod
    def _encryption_key(cls, value: SecretStr | None) -> SecretStr | None:
        from apikm.encryption import parse_encryption_keys

        if value is not None:
            parse_encryption_keys(value.get_secret_value())  # EncryptionKeyError: ValueError
        return value

    @field_validator("leak_report_keys")
    @classmethod
    def _leak_keys(cls, value: str) -> str:
        from apikm.leaks.signatures import load_public_keys

        load_public_keys(value)  # LeakKeysError (a ValueError) names what is wrong
        return value

    @field_validator("max_staleness", "revoke_disabled_after", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str | int | float) else value

    @field_validator("keycloak_url", "public_url", "keycloak_admin_url", "oidc_endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("gateway_urls")
    @classmethod
    def _gateway_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://[^/\s?#]+[^\s]*$", url):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _staleness(self) -> Settings:
        if self.keycloak_sync_freq == -1 and "max_staleness" not in self.model_fields_set:
            self.max_staleness = None  # nothing confirms owners on a schedule
        if self.max_staleness is None:
            return self
        if self.max_staleness.total_seconds() <= 0:
            raise ValueError("APIKM_MAX_STALENESS must be positive")
        if (self.sync_enabled and self.keycloak_sync_freq != -1
                and self.max_staleness.total_seconds() <= self.keycloak_sync_freq):
            raise ValueError("APIKM_MAX_STALENESS must be longer than APIKM_KEYCLOAK_SYNC_FREQ "
                             "(every full pass confirms each owner once)")
        return self

    @model_validator(mode="after")
    def _ttl_policy(self) -> Settings:
        if self.default_apikey_ttl_hour > self.max_apikey_ttl_hour:
            raise ValueError(
                "APIKM_DEFAULT_APIKEY_TTL_HOUR must not exceed APIKM_MAX_APIKEY_TTL_HOUR"
            )
        return self

    # --- derived values ------------------------------------------------------------------
    @property
    def issuer(self) -> str:
        return f"{self.keycloak_url}/realms/{self.keycloak_realm}"

    @property
    def effective_keycloak_admin_url(self) -> str:
        return self.keycloak_admin_url or self.keycloak_url

    @property
    def effective_database_url(self) -> str:
        return normalize_database_url(
            self.database_url or f"sqlite:///{(self.data_dir / 'apikm.db').resolve()}"
        )

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def effective_gateway_urls(self) -> list[str]:
        return self.gateway_urls or [self.base_url]


def normalize_database_url(url: str) -> str:
    """Accept the plain URLs people write and pick the async drivers apikm ships with."""
    for plain, asynchronous in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return asynchronous + url[len(plain) :]
    return url


class ConfigError(Exception):
    """Configuration that cannot start apikm; the message names the variables."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = "APIKM_" + "_".join(str(p) for p in error["loc"]).upper() if error["loc"] else ""
            lines.append(f"  {name or 'settings'}: {error['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
