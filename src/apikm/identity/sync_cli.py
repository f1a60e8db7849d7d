"""``apikm sync``: run the Keycloak sync without the web service, or one pass for cron."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated, NoReturn

import typer

from apikm.config import ConfigError, Settings, get_settings
from apikm.db import create_engine
from apikm.identity.admin_client import KeycloakError, KeycloakRefused
from apikm.identity.sync import LeaseHeld, PassReport, SyncWorker, worker_from_settings


def sync_command(
    once: Annotated[bool, typer.Option("--once", help="one full pass over every key owner, "
                                       "then exit: for cron")] = False,
    migrate: Annotated[bool, typer.Option(help="apply database migrations first")] = True,
) -> None:
    """Keep keys in step with Keycloak (what `apikm serve` does in the background).

    Useful with APIKM_SYNC_ENABLED=false on the web replicas. Exit codes: 0 done (or another
    replica holds the sync lease), 1 Keycloak or the database failed, 2 configuration or
    missing service-account roles.
    """
    settings = _settings()
    if settings.oidc_client_secret is None:
        _fail(2, "APIKM_OIDC_CLIENT_SECRET is not set: the sync signs in as the service "
                 "account of APIKM_OIDC_CLIENT_ID")
    if migrate:
        from apikm.migrations import upgrade

        if settings.effective_database_url.startswith("sqlite"):
            settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        upgrade(settings.effective_database_url)
    try:
        report = asyncio.run(_run(settings, once))
    except LeaseHeld as exc:
        typer.echo(f"sync skipped: {exc} is syncing right now")
        return
    except KeycloakRefused as exc:
        _fail(2, str(exc))
    except KeycloakError as exc:
        _fail(1, f"sync failed: {exc}")
    if report is not None:
        typer.echo(f"synced {report.owners} owners in {report.seconds:.2f}s: "
                   f"{report.changed} changed, {report.failed} failed")
        if report.failed:
            raise typer.Exit(1)


async def _run(settings: Settings, once: bool) -> PassReport | None:
    engine = create_engine(settings.effective_database_url)
    # Other processes keep a short cache TTL, so there is nothing of theirs to clear here.
    worker = worker_from_settings(settings.model_copy(update={"sync_enabled": True}), engine,
                                  on_change=lambda _kind, _ref: None)
    assert worker is not None  # the secret was checked above
    try:
        if once:
            return await worker.run_once()
        await _until_signalled(worker)
        return None
    finally:
        await worker.stop()
        await engine.dispose()


async def _until_signalled(worker: SyncWorker) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker.start()
    await stop.wait()


def _settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        _fail(2, str(exc))


def _fail(code: int, message: str) -> NoReturn:
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(code)
