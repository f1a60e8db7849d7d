"""``apikm serve --host/--port`` are the settings, so the published URLs name that port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from apikm import cli
from apikm.config import get_settings
from apikm.encryption import new_key_spec


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    import granian
    import uvicorn

    ran: dict[str, Any] = {}

    class Server:  # granian, captured instead of serving
        def __init__(self, target: str, **options: Any) -> None:
            ran.update(options, host=options["address"], server="granian")

        def serve(self) -> None:
            ran["served"] = True

    def run(*args: Any, **options: Any) -> None:  # uvicorn, the default
        ran.update(options, server="uvicorn", served=True)

    monkeypatch.setattr(granian, "Granian", Server)
    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.delenv("APIKM_SERVER", raising=False)
    for name in ("APIKM_HOST", "APIKM_PORT", "APIKM_PUBLIC_URL", "APIKM_ENCRYPTION_KEY",
                 "APIKM_PEPPERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APIKM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("APIKM_DATABASE_URL", f"sqlite:///{tmp_path / 'apikm.db'}")
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    yield ran
    os.environ.pop("APIKM_HOST", None)  # set by the command itself
    os.environ.pop("APIKM_PORT", None)
    os.environ.pop("APIKM_WORKERS", None)
    get_settings.cache_clear()


def test_port_option_feeds_the_settings_and_the_issuer(serve: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "--port", "18003", "--no-migrate"])
    assert result.exit_code == 0, result.output
    assert serve["port"] == 18003 and serve["host"] == "127.0.0.1" and serve["served"]
    assert serve["server"] == "uvicorn"
    assert os.environ["APIKM_PORT"] == "18003"  # worker processes read it too
    assert get_settings().base_url == "http://127.0.0.1:18003"


def test_granian_on_request_gets_the_same_settings(serve: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "--server", "granian", "--port", "18004",
                                          "--workers", "2", "--no-migrate"])
    assert result.exit_code == 0, result.output
    assert serve["server"] == "granian" and serve["port"] == 18004 and serve["workers"] == 2
    assert get_settings().base_url == "http://127.0.0.1:18004"


def test_an_unknown_server_is_refused(serve: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "--server", "gunicorn", "--no-migrate"])
    assert result.exit_code == 2 and "--server must be granian or uvicorn" in result.output
    assert "served" not in serve


def test_a_wildcard_host_without_public_url_is_pointed_out(serve: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "--host", "0.0.0.0", "--no-migrate"])
    assert result.exit_code == 0
    assert "APIKM_PUBLIC_URL is not set" in result.output
    assert get_settings().base_url == "http://0.0.0.0:8000"


@pytest.mark.parametrize("missing", ["APIKM_ENCRYPTION_KEY", "APIKM_PEPPERS"])
def test_postgresql_without_shared_secrets_does_not_start(
        serve: dict[str, Any], monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.setenv("APIKM_DATABASE_URL", "postgresql://apikm@127.0.0.1:1/apikm")
    monkeypatch.setenv("APIKM_PEPPERS", "p1:" + "x" * 32)
    monkeypatch.setenv("APIKM_ENCRYPTION_KEY", new_key_spec())
    monkeypatch.delenv(missing)
    result = CliRunner().invoke(cli.app, ["serve", "--no-migrate"])
    assert result.exit_code == 2 and serve == {}
    assert f"{missing} is not set" in result.output and "every replica" in result.output
