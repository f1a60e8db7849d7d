"""APIKM_SMTP_URL: schemes, TLS modes, credentials; the password never in an error or repr."""

from __future__ import annotations

import pytest

from apikm.config import ConfigError, load_settings
from apikm.notify.smtp import SmtpUrlError, parse_smtp_url


def test_plain_smtp_uses_starttls_when_offered() -> None:
    config = parse_smtp_url("smtp://mail.example.org")
    assert (config.host, config.port, config.tls, config.username) == (
        "mail.example.org", 25, "auto", None)


def test_credentials_and_options() -> None:
    config = parse_smtp_url("smtp://user%40x:p%2Fss@mail:587?starttls=true&cafile=/ca.pem")
    assert (config.username, config.password, config.port, config.tls, config.cafile) == (
        "user@x", "p/ss", 587, "starttls", "/ca.pem")
    assert "p/ss" not in repr(config) and "p/ss" not in config.describe()
    assert parse_smtp_url("smtp://mail?starttls=false").tls == "none"


def test_smtps_is_tls_on_port_465() -> None:
    config = parse_smtp_url("smtps://u:p@mail")
    assert (config.port, config.tls) == (465, "tls")


@pytest.mark.parametrize("url", ["http://mail", "smtp://", "smtp://u:hunter2@mail?starttls=maybe",
                                 "smtps://u:hunter2@mail?starttls=true",
                                 "smtp://u:hunter2@mail?tls=1", "smtp://u:hunter2@mail:99999"])
def test_bad_urls_are_refused_without_echoing_the_password(url: str) -> None:
    with pytest.raises(SmtpUrlError) as caught:
        parse_smtp_url(url)
    assert "hunter2" not in str(caught.value)


def test_settings_refuse_a_bad_url_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(smtp_url="smtp://u:hunter2@mail?starttls=maybe")
    assert "APIKM_SMTP_URL" in str(caught.value) and "hunter2" not in str(caught.value)


def test_expiry_warning_days_setting() -> None:
    assert load_settings(expiry_warning_days="1, 30,7").expiry_warning_days == [30, 7, 1]
    with pytest.raises(ConfigError):
        load_settings(expiry_warning_days="0")
