"""``apikm import apikeymanager --from <database URL> [--dry-run]``."""

from __future__ import annotations

import asyncio
import getpass
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from apikm.compat.importer import (
    ImportRefused,
    OldKey,
    Report,
    read_old_keys,
    run_import,
    safe_url,
)
from apikm.config import ConfigError, Settings
from apikm.keys.service import Actor

import_app = typer.Typer(help="Import keys from another key manager.", no_args_is_help=True)


@import_app.command("apikeymanager")
def import_apikeymanager(
    source: Annotated[str, typer.Option(
        "--from", help="the APIKeyManager database: sqlite:///path/to/file.db or "
        "postgresql://user:password@host:5432/db (TimescaleDB too)")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="report what would be imported; change nothing")] = False,
    show: Annotated[int, typer.Option(help="list at most this many keys per outcome")] = 20,
) -> None:
    """Import CS Group APIKeyManager's keys: their holders keep using them unchanged.

    Idempotent (a second run skips what is imported). Revoked and expired keys are skipped,
    never-expiring ones get the longest lifetime; the report says which and why."""
    from apikm.cli import _migrate, _settings

    settings = _settings()
    err = Console(stderr=True)
    try:
        rows = asyncio.run(read_old_keys(source))
    except ImportRefused as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    typer.echo(f"{len(rows)} keys in {safe_url(source)}")
    if not dry_run:
        _migrate(settings)
    try:
        report = asyncio.run(_run(settings, rows, dry_run))
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    print_report(report, show)


async def _run(settings: Settings, rows: list[OldKey], dry_run: bool) -> Report:
    from apikm.db import create_engine
    from apikm.web.context import key_policy

    engine = create_engine(settings.effective_database_url)
    actor = Actor("cli", f"import by {getpass.getuser()}")
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("import", total=len(rows))
            return await run_import(engine, rows, key_policy(settings), actor, dry_run,
                                    progress=lambda n: bar.advance(task, n))
    finally:
        await engine.dispose()


def print_report(report: Report, show: int) -> None:
    verb = "would import" if report.dry_run else "imported"
    typer.echo(f"{verb} {len(report.imported)} keys, skipped {len(report.skipped)}; "
               f"{report.owners_added} owners new to apikm")
    noted = [o for o in report.imported if o.notes]
    if noted:
        typer.echo(f"\n{verb} with changes ({len(noted)}):")
        for outcome in noted[:show]:
            for note in outcome.notes:
                typer.echo(f"  {outcome.ref}  {outcome.user}: {note}")
        if len(noted) > show:
            typer.echo(f"  ... and {len(noted) - show} more (--show)")
    if report.skipped:
        typer.echo("\nskipped:")
        for reason, count in sorted(report.skip_reasons().items()):
            typer.echo(f"  {count:>6}  {reason}")
        for outcome in report.skipped[:show]:
            typer.echo(f"  {outcome.ref}  {outcome.user}: {outcome.reason}")
        if len(report.skipped) > show:
            typer.echo(f"  ... and {len(report.skipped) - show} more (--show)")
    if report.dry_run:
        typer.echo("\ndry run: nothing was written")
    elif report.imported:
        typer.echo("\nimported keys work at once (uuid4 keys, /auth/check_key, /v1/verify, "
                   "/v1/auth); each moves to apikm's pepper at its first use. Their owners "
                   "are confirmed by the Keycloak sync (APIKM_OIDC_CLIENT_SECRET).")
