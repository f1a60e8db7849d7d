"""``apikm keys scan [FILE|-] [--revoke] [--json]``: find apikm keys in text (a log, a dump,
a repository export), check each (checksum first, then lookup) and optionally revoke them as
leaked, as a leak report would."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from apikm.config import Settings
from apikm.keys.service import Actor
from apikm.leaks.handler import Checked, LeakHandler
from apikm.leaks.reports import Outcome, Reported
from apikm.leaks.scan import Found, find_keys_in

PROGRESS_BYTES = 1024 * 1024  # show progress for inputs larger than this (or stdin)
SOURCE = "apikm keys scan"
# The order of the summary line.
STATUSES = ("active", "expired", "suspended", "revoked", "rotated away", "unknown",
            "bad checksum")


def keys_scan(
    file: Annotated[str, typer.Argument(help="the text to scan; - for standard input")] = "-",
    revoke: Annotated[bool, typer.Option(
        "--revoke", help="revoke every key found (reason 'leaked') and record the leak "
        "for its owner and the admins")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Find apikm keys in a file and say whose they are and whether they work.

    Exit status 1 when an active key was found and left active (for CI jobs and hooks)."""
    from apikm.cli import _settings

    settings = _settings()
    name = "stdin" if file == "-" else file
    try:
        found = _read(file, settings.key_prefix)
    except OSError as exc:
        typer.secho(f"cannot read {file}: {exc.strerror}", fg="red", err=True)
        raise typer.Exit(2) from None
    rows = asyncio.run(_check(settings, found, name, revoke))
    if as_json:
        typer.echo(json.dumps({"keys": rows, "summary": summary(rows, revoke)}, indent=2))
    else:
        _print_table(rows)
        typer.echo(summary(rows, revoke))
    if any(row["status"] == "active" and not row["revoked_now"] for row in rows):
        raise typer.Exit(1)


def _read(file: str, prefix: str) -> list[Found]:
    # Any bytes: keys are ASCII, so text that is not UTF-8 (a binary dump, a Latin-1 log)
    # is read with replacement characters rather than stopping the scan.
    if file == "-":
        stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        return _scan(stdin, prefix, None)
    path = Path(file)
    with path.open(encoding="utf-8", errors="replace") as handle:
        return _scan(handle, prefix, path.stat().st_size)


def _scan(handle: TextIO, prefix: str, size: int | None) -> list[Found]:
    if size is not None and size <= PROGRESS_BYTES:
        return find_keys_in(handle, prefix)
    columns = [TextColumn("scanning"), BarColumn(), DownloadColumn()] if size else [
        TextColumn("scanning"), DownloadColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("scan", total=size)
        read = 0

        def advance(count: int) -> None:
            nonlocal read
            read += count
            if read >= 256 * 1024:  # redrawing per line would cost more than the scan
                progress.advance(task, read)
                read = 0

        return find_keys_in(handle, prefix, advance)


async def _check(settings: Settings, found: list[Found], name: str,
                 revoke: bool) -> list[dict[str, Any]]:
    from apikm.cli import _key_service

    ctx = _key_service(settings)
    try:
        handler = LeakHandler(ctx.engine, ctx.verifier.peppers, settings.key_prefix, ctx.keys,
                              revoke_retired=settings.revoke_on_secret_reuse)
        checked = await handler.check(item.token for item in found)
        revoked: set[str] = set()
        if revoke:
            user = os.environ.get("USER", "cli")
            items = [Reported(item.token, "apikm", name, SOURCE) for item in found
                     if checked[item.token].key is not None]
            results = await handler.report(items, Actor("cli", user), f"cli {user}", checked)
            revoked = {item.token for item, result in zip(items, results, strict=True)
                       if result.outcome is Outcome.REVOKED}
    finally:
        await ctx.close()
    return [_row(item, checked[item.token], item.token in revoked) for item in found]


def _row(item: Found, checked: Checked, revoked_now: bool) -> dict[str, Any]:
    key = checked.key
    if key is None:
        status = "unknown" if checked.well_formed else "bad checksum"
    elif key.old_secret and key.status != "revoked":
        status = "rotated away"
    else:
        status = key.status
    return {"public_id": key.public_id if key else None,
            "key_id": key.id if key else None,
            "owner": (key.owner_username or key.owner_id) if key else None,
            "status": status, "lines": item.lines, "revoked_now": revoked_now}


def summary(rows: list[dict[str, Any]], revoke: bool) -> str:
    counts = {status: sum(row["status"] == status for row in rows) for status in STATUSES}
    parts = [f"{count} {status}" for status, count in counts.items() if count]
    text = f"found {len(rows)} key{'s' if len(rows) != 1 else ''}"
    text += ": " + ", ".join(parts) if parts else ""
    if revoke:
        text += f"; revoked {sum(row['revoked_now'] for row in rows)}"
    return text


def _print_table(rows: list[dict[str, Any]]) -> None:
    from apikm.cli import shown

    if not rows:
        return
    typer.echo(f"{'public id':<10} {'owner':<24} {'status':<13} lines")
    for row in rows:
        lines = ",".join(str(n) for n in row["lines"][:5])
        if len(row["lines"]) > 5:
            lines += f",… ({len(row['lines'])} in all)"
        status = row["status"] + (" (now revoked)" if row["revoked_now"] else "")
        typer.echo(f"{shown(row['public_id'] or '-'):<10} {shown(row['owner'] or '-'):<24} "
                   f"{status:<13} {lines}")
